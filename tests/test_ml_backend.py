"""`atom label serve`: the Label Studio ML backend, started as a real process on 127.0.0.1."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys

import httpx
import pytest

from atom import PROJECT_ROOT
from atom.labelstudio.server import free_port, wait_healthy

pytestmark = [pytest.mark.server, pytest.mark.slow]


@pytest.fixture(scope="module")
def backend(trained, project, sample_export, tmp_path_factory):
    root = tmp_path_factory.mktemp("docroot")
    for image in sorted((sample_export.parent / "images").glob("*.jpg"))[:2]:
        shutil.copy(image, root / image.name)
    token, port = os.urandom(16).hex(), free_port()
    env = {**os.environ, "ATOM_ML_BACKEND_TOKEN": token}
    env.pop("MLFLOW_TRACKING_URI", None)
    proc = subprocess.Popen(
        [sys.executable, "-m", "atom.cli", "label", "serve", f"model={trained['result']['model_name']}@candidate",
         f"paths.output_dir={project['outputs']}", f"document_root={root}", f"serve.port={port}"],
        cwd=PROJECT_ROOT, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.STDOUT)
    url = f"http://127.0.0.1:{port}"
    wait_healthy(f"{url}/health", proc, 120)
    yield {"url": url, "token": token, "images": sorted(p.name for p in root.iterdir())}
    proc.terminate()
    proc.wait(timeout=30)


def test_health_is_open_and_predict_needs_the_token(backend):
    health = httpx.get(f"{backend['url']}/health").json()
    assert health["status"] == "UP" and health["model_version"].startswith("atom-sample/")
    body = {"tasks": [{"id": 1, "data": {"image": f"/data/local-files/?d={backend['images'][0]}"}}]}
    assert httpx.post(f"{backend['url']}/predict", json=body).status_code == 401
    wrong = {"Authorization": "Bearer not-the-token"}
    assert httpx.post(f"{backend['url']}/predict", json=body, headers=wrong).status_code == 401


def test_predict_answers_one_result_per_task(backend):
    tasks = [{"id": 1, "data": {"image": f"/data/local-files/?d={backend['images'][0]}"}},
             {"id": 2, "data": {"image": "/data/local-files/?d=../../etc/passwd"}},
             {"id": 3, "data": {"image": f"/data/local-files/?d={backend['images'][1]}"}}]
    for auth in ({"Authorization": f"Token {backend['token']}"}, None):
        kwargs = {"headers": auth} if auth else {"auth": ("labelstudio", backend["token"])}  # basic auth as LS sends
        response = httpx.post(f"{backend['url']}/predict", json={"tasks": tasks}, timeout=60, **kwargs)
        assert response.status_code == 200
        results = response.json()["results"]
        assert len(results) == 3 and results[1]["result"] == []  # outside the document root: nothing predicted
        assert all(r["model_version"].startswith("atom-sample/") for r in results)
        for r in results[0]["result"]:
            assert r["type"] == "rectanglelabels" and 0 <= r["value"]["x"] <= 100
    setup = httpx.post(f"{backend['url']}/setup", json={"project": "1"},
                       headers={"Authorization": f"Bearer {backend['token']}"})
    assert setup.status_code == 200 and setup.json()["model_version"].startswith("atom-sample/")
