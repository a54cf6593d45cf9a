"""Registration, export and serving against a real MLflow tracking server (started on 127.0.0.1 by the fixture)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import urllib.request
from pathlib import Path

import pytest
from mlflow import MlflowClient

from atom import tracking
from recipes import compose
from recipes.export import export
from recipes.train import train
from tests.conftest import tiny_overrides
from tests.servers import free_port, wait_healthy
from tests.test_serving import encode, without_training_stack

pytestmark = [pytest.mark.server, pytest.mark.slow]


@pytest.fixture(scope="module")
def on_server(mlflow_server, project, tmp_path_factory):
    """A tiny model trained, registered (alias staging) and exported with the server as the tracking store."""
    out_dir = tmp_path_factory.mktemp("server-outputs")
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("MLFLOW_TRACKING_URI", mlflow_server)
        overrides = [*tiny_overrides(project, "server"), f"paths.output_dir={out_dir}", "tracking.alias=staging"]
        result = train(compose("train", ["experiment=sample", *overrides]))
        assert tracking.configure(out_dir) == mlflow_server
        ref = tracking.resolve_model(f"{result['model_name']}@staging")
        exported = export(compose("export", [f"paths.datasets={project['datasets']}", f"paths.output_dir={out_dir}",
                                             f"model={result['model_name']}@staging"]))
    return {"result": result, "ref": ref, "export": exported, "out_dir": out_dir}


def test_train_and_export_against_a_tracking_server(mlflow_server, on_server):
    ref, result = on_server["ref"], on_server["result"]
    assert ref.version == result["model_version"]
    assert not (on_server["out_dir"] / "mlflow.db").exists()  # nothing went to the embedded store
    assert on_server["export"]["verification"]["passed"]
    client = MlflowClient(mlflow_server)
    assert client.get_model_version(ref.name, ref.version).tags["bundle.onnx"].startswith("runs:/")
    names = {a.path for a in client.list_artifacts(ref.run_id, "bundles/onnx")}
    assert "bundles/onnx/model.onnx" in names


def test_mlflow_models_serve_answers_with_the_bundles_boxes_without_the_training_stack(mlflow_server, on_server,
                                                                                        project, tmp_path):
    """`mlflow models serve` of the registered version, in a process that cannot import torch (or timm, OpenCV,
    Lightning): the python_function flavour runs the verified bundle with atom.runtime."""
    from atom.runtime import Bundle

    ref = on_server["ref"]
    port = free_port()
    env = without_training_stack(tmp_path)
    # the scoring server is a uvicorn process started by name: this environment's bin first on PATH
    env.update(MLFLOW_TRACKING_URI=mlflow_server, PATH=os.pathsep.join([str(Path(sys.executable).parent), env["PATH"]]))
    log = open(tmp_path / "serve.log", "w")
    proc = subprocess.Popen([sys.executable, "-m", "mlflow", "models", "serve", "-m", f"models:/{ref.name}@staging",
                             "--env-manager", "local", "--host", "127.0.0.1", "--port", str(port), "--workers", "1"],
                            env=env, stdout=log, stderr=subprocess.STDOUT, cwd=tmp_path)
    try:
        wait_healthy(f"http://127.0.0.1:{port}/ping", proc, 120, tmp_path / "serve.log")
        version = project["version"]
        paths = [version.root / im["file_name"] for im in version.coco("val")["images"][:2]]
        body = json.dumps({"dataframe_split": {"columns": ["image"], "data": [[b] for b in encode(paths)]}})
        request = urllib.request.Request(f"http://127.0.0.1:{port}/invocations", body.encode(),
                                         {"Content-Type": "application/json"})
        rows = json.loads(urllib.request.urlopen(request, timeout=60).read())["predictions"]
    finally:
        proc.terminate()
        proc.wait(timeout=30)
        log.close()
    expected = Bundle(on_server["export"]["bundle"]).detect_files(paths)
    assert len(rows) == sum(len(d.scores) for d in expected) > 0
    for i, det in enumerate(expected):
        served = [r for r in rows if r["image"] == i]
        assert [r["class"] for r in served] == det.names()
        for r, box in zip(served, det.boxes.tolist()):
            assert [r["x0"], r["y0"], r["x1"], r["y1"]] == pytest.approx(box, abs=1e-3)
