"""Registration and export against a real MLflow tracking server (started on 127.0.0.1 by the fixture)."""

from __future__ import annotations

import pytest
from mlflow import MlflowClient

from atom import tracking
from recipes import compose
from recipes.export import export
from recipes.train import train
from tests.conftest import tiny_overrides

pytestmark = [pytest.mark.server, pytest.mark.slow]


def test_train_and_export_against_a_tracking_server(mlflow_server, project, monkeypatch, tmp_path):
    monkeypatch.setenv("MLFLOW_TRACKING_URI", mlflow_server)
    overrides = [*tiny_overrides(project, "server"), f"paths.output_dir={tmp_path}", "tracking.alias=staging"]
    result = train(compose("train", ["experiment=sample", *overrides]))
    assert tracking.configure(tmp_path) == mlflow_server
    ref = tracking.resolve_model(f"{result['model_name']}@staging")
    assert ref.version == result["model_version"]
    assert not (tmp_path / "mlflow.db").exists()  # nothing went to the embedded store
    out = export(compose("export", [f"paths.datasets={project['datasets']}", f"paths.output_dir={tmp_path}",
                                    f"model={result['model_name']}@staging"]))
    assert out["verification"]["passed"]
    client = MlflowClient(mlflow_server)
    assert client.get_model_version(ref.name, ref.version).tags["bundle.onnx"].startswith("runs:/")
    names = {a.path for a in client.list_artifacts(ref.run_id, "bundles/onnx")}
    assert "bundles/onnx/model.onnx" in names
