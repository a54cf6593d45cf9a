"""Shared fixtures. Real parts only: real images, real MLflow stores and servers, the real CLI."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

os.environ.setdefault("NO_ALBUMENTATIONS_UPDATE", "1")
os.environ.setdefault("MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR", "false")

from atom import PROJECT_ROOT  # noqa: E402
from tests.servers import free_port, wait_healthy  # noqa: E402

SHARED = PROJECT_ROOT.parent / "shared" / "datasets"


@pytest.fixture(scope="session")
def shared_datasets() -> Path:
    if not SHARED.exists():
        pytest.skip(f"needs ../shared/datasets ({SHARED} not found; CI always has it)")
    return SHARED


@pytest.fixture(scope="session")
def sample_export(tmp_path_factory) -> Path:
    """A small synthetic Label Studio export (60 images)."""
    from atom.data.synthetic import make_sample

    return make_sample(tmp_path_factory.mktemp("sample-src"), n_images=60, seed=1)


@pytest.fixture(scope="session")
def project(tmp_path_factory, sample_export):
    """A throw-away project: datasets/ holding the sample version, outputs/ for runs and the embedded MLflow store."""
    from atom.data.formats import read_source
    from atom.data.version import write_version

    root = tmp_path_factory.mktemp("project")
    version, _ = write_version(read_source("labelstudio", sample_export), root / "datasets", "sample",
                               split_ratios=(0.6, 0.2, 0.2))
    return {"root": root, "datasets": root / "datasets", "outputs": root / "outputs", "version": version}


def tiny_overrides(project, run_name: str = "tiny") -> list[str]:
    """Shrink a training run to seconds through config only."""
    return [f"paths.datasets={project['datasets']}", f"paths.output_dir={project['outputs']}",
            f"run_name={run_name}", "detector.input_size=128", "trainer.max_epochs=1",
            "trainer.limit_train_batches=2", "trainer.limit_val_batches=2", "data.batch_size=4",
            "callbacks.rich_progress=false", "detector.score_thresh=0.01"]


@pytest.fixture(scope="session")
def trained(project):
    """A tiny detector trained through the Hydra recipe and registered in the embedded MLflow store."""
    os.environ.pop("MLFLOW_TRACKING_URI", None)
    from recipes import compose
    from recipes.train import train

    cfg = compose("train", ["experiment=sample", *tiny_overrides(project)])
    return {"cfg": cfg, "result": train(cfg)}


@pytest.fixture(scope="session")
def mlflow_server(tmp_path_factory):
    """A real MLflow tracking server on 127.0.0.1 (sqlite backend, served artifacts), shared by the session."""
    root = tmp_path_factory.mktemp("mlflow-server")
    port = free_port()
    env = {**os.environ, "MLFLOW_SERVER_ENABLE_JOB_EXECUTION": "false"}
    env.pop("MLFLOW_TRACKING_URI", None)
    log = open(root / "server.log", "w")
    proc = subprocess.Popen(
        [sys.executable, "-m", "mlflow", "server", "--backend-store-uri", f"sqlite:///{root}/mlflow.db",
         "--artifacts-destination", str(root / "artifacts"), "--serve-artifacts",
         "--host", "127.0.0.1", "--port", str(port), "--workers", "1"],
        env=env, stdout=log, stderr=subprocess.STDOUT)
    url = f"http://127.0.0.1:{port}"
    wait_healthy(f"{url}/health", proc, 120, root / "server.log")
    yield url
    proc.terminate()
    proc.wait(timeout=30)
    log.close()


@pytest.fixture(scope="session")
def s3_server(tmp_path_factory):
    """An S3-compatible server on 127.0.0.1 (moto) with the bucket `atom-data`; yields its endpoint URL."""
    from tests.servers import start_s3

    saved = {k: os.environ.get(k) for k in ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "AWS_DEFAULT_REGION")}
    proc, url = start_s3(tmp_path_factory.mktemp("s3"), "atom-data")
    yield url
    proc.terminate()
    proc.wait(timeout=30)
    for k, v in saved.items():
        os.environ.pop(k) if v is None else os.environ.__setitem__(k, v)


@pytest.fixture(scope="session")
def label_studio(tmp_path_factory):
    """One Label Studio server for the session; LABEL_STUDIO_URL / LABEL_STUDIO_API_KEY point at it."""
    from tests.servers import LABEL_STUDIO_BIN, LocalServer

    if not LABEL_STUDIO_BIN.exists():
        pytest.skip(f"{LABEL_STUDIO_BIN} not found: `make test` installs Label Studio into .venv-labelstudio")
    server = LocalServer(tmp_path_factory.mktemp("label-studio"))
    server.start()
    saved = {k: os.environ.get(k) for k in ("LABEL_STUDIO_URL", "LABEL_STUDIO_API_KEY")}
    os.environ.update(LABEL_STUDIO_URL=server.url, LABEL_STUDIO_API_KEY=server.token)
    yield server
    server.stop()
    for k, v in saved.items():
        os.environ.pop(k, None) if v is None else os.environ.__setitem__(k, v)
