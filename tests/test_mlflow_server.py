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
    assert client.get_model_version(ref.name, ref.version).tags["bundle.onnx"] == f"{ref.uri}/bundles/onnx"
    names = {a.path for a in client.list_logged_model_artifacts(ref.model_id, "bundles/onnx")}
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


def atom_cli(*args, env: dict) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "atom.cli", *args], capture_output=True, text=True,
                          env={**os.environ, **env}, cwd=Path(__file__).parent.parent)


def test_models_list_and_show_give_aliases_metrics_lineage_and_bundles(mlflow_server, on_server):
    ref = on_server["ref"]
    out = atom_cli("models", "list", ref.name, "--json", env={"MLFLOW_TRACKING_URI": mlflow_server})
    assert out.returncode == 0, out.stderr
    row = next(r for r in json.loads(out.stdout) if r["version"] == ref.version)
    assert row["aliases"] == ["staging"] and row["bundles"] == ["onnx"]
    assert row["metrics"]["test.mAP50"] == pytest.approx(on_server["result"]["mAP50"], abs=1e-4)
    assert row["dataset"]["fingerprint"] == ref.tags["dataset.fingerprint"] and row["run_id"] == ref.run_id
    shown = atom_cli("models", "show", f"{ref.name}@staging", env={"MLFLOW_TRACKING_URI": mlflow_server})
    assert json.loads(shown.stdout) == row
    missing = atom_cli("models", "show", f"{ref.name}@nope", env={"MLFLOW_TRACKING_URI": mlflow_server})
    assert missing.returncode == 1 and "not found in the registry" in missing.stderr


def test_promote_needs_a_verified_bundle_and_no_lower_held_out_map_unless_forced(mlflow_server, on_server,
                                                                                 project, monkeypatch):
    from atom import registry
    from atom.errors import RegistryError

    monkeypatch.setenv("MLFLOW_TRACKING_URI", mlflow_server)
    tracking.configure(on_server["out_dir"])
    ref = on_server["ref"]
    assert registry.promote(ref.name, ref.version, "production") == f"{ref.name}@production -> version {ref.version}"
    # the same detector registered again with a lower held-out mAP50 and no bundle yet
    worse = {**ref.tags, "test.mAP50": f"{float(ref.tags['test.mAP50']) - 0.1:.4f}"}
    other = tracking.register_detector(tracking.load_detector(ref), ref.run_id, ref.name, worse, None)
    with pytest.raises(RegistryError, match=f"{other.version} has no verified bundle.*below"):
        registry.promote(ref.name, other.version, "production")
    export(compose("export", [f"paths.datasets={project['datasets']}", f"paths.output_dir={on_server['out_dir']}",
                              f"model={ref.name}/{other.version}"]))
    with pytest.raises(RegistryError, match="below") as refused:
        registry.promote(ref.name, other.version, "production")
    assert "no verified bundle" not in str(refused.value)
    assert tracking.resolve_model(f"{ref.name}@production").version == ref.version
    done = registry.promote(ref.name, other.version, "production", force=True)
    assert "forced past" in done and tracking.resolve_model(f"{ref.name}@production").version == other.version


def test_pull_checks_every_file_and_refuses_an_altered_bundle(mlflow_server, on_server, tmp_path):
    """Last in this module: it alters the staging version's bundle on the server."""
    from atom.runtime import Bundle

    env = {"MLFLOW_TRACKING_URI": mlflow_server}
    ref, target = on_server["ref"], tmp_path / "pulled"
    out = atom_cli("models", "pull", f"{ref.name}@staging", "--format", "onnx", "--to", str(target), env=env)
    assert out.returncode == 0, out.stderr
    assert Bundle(target).manifest["source"]["version"] == ref.version
    before = {p.name: p.read_bytes() for p in target.iterdir()}
    for args, message in [(["--format", "tensorrt"], "has no 'tensorrt' bundle; it has ['onnx']"),
                          (["--format", "coreml"], "unknown export format 'coreml'; choose one of"),
                          (["--to", str(tmp_path)], "exists and is not a bundle")]:
        bad = atom_cli("models", "pull", f"{ref.name}@staging", "--to", str(target), *args, env=env)
        assert bad.returncode == 1 and message in bad.stderr
    # someone replaces the model file in the store
    altered = tmp_path / "model.onnx"
    altered.write_bytes(before["model.onnx"][:-100])
    MlflowClient(mlflow_server).log_model_artifact(ref.model_id, str(altered), "bundles/onnx")
    bad = atom_cli("models", "pull", f"{ref.name}@staging", "--to", str(target), env=env)
    assert bad.returncode == 1 and "refused" in bad.stderr and "model.onnx: sha256 differs" in bad.stderr
    assert {p.name: p.read_bytes() for p in target.iterdir()} == before  # the earlier pull is untouched
