"""`atom label serve`: the Label Studio ML backend, started as a real process on 127.0.0.1."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import time

import httpx
import pytest

from atom import PROJECT_ROOT
from tests.servers import free_port, wait_healthy

pytestmark = [pytest.mark.server, pytest.mark.slow]


@pytest.fixture(scope="module")
def backend(trained, project, sample_export, label_studio):
    """`atom label serve` over the Label Studio server's own document root, as a user would run both."""
    root = label_studio.document_root
    folder = root / "backend"
    folder.mkdir()
    for image in sorted((sample_export.parent / "images").glob("*.jpg"))[:2]:
        shutil.copy(image, folder / image.name)
    token, port = os.urandom(16).hex(), free_port()
    env = {**os.environ, "ATOM_ML_BACKEND_TOKEN": token}
    env.pop("MLFLOW_TRACKING_URI", None)
    proc = subprocess.Popen(
        [sys.executable, "-m", "atom.cli", "label", "serve", f"model={trained['result']['model_name']}@candidate",
         f"paths.output_dir={project['outputs']}", f"document_root={root}", f"serve.port={port}",
         "preannotation.min_score=0"],  # the tiny model's boxes score low: show them all here
        cwd=PROJECT_ROOT, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.STDOUT)
    url = f"http://127.0.0.1:{port}"
    wait_healthy(f"{url}/health", proc, 120)
    yield {"url": url, "token": token, "images": sorted(f"backend/{p.name}" for p in folder.iterdir())}
    proc.terminate()
    proc.wait(timeout=30)


def test_health_is_open_and_predict_needs_the_token(backend):
    health = httpx.get(f"{backend['url']}/health").json()
    assert health["status"] == "UP" and health["model_version"].startswith("atom-sample/")
    body = {"tasks": [{"id": 1, "data": {"image": f"/data/local-files/?d={backend['images'][0]}"}}]}
    assert httpx.post(f"{backend['url']}/predict", json=body).status_code == 401
    wrong = {"Authorization": "Bearer not-the-token"}
    assert httpx.post(f"{backend['url']}/predict", json=body, headers=wrong).status_code == 401


CONFIG = ('<View><Image name="photo" value="$image"/><RectangleLabels name="objects" toName="photo">'
          '<Label value="bus"/><Label value="car"/><Label value="pedestrian"/></RectangleLabels></View>')


def test_predict_answers_one_result_per_task(backend):
    tasks = [{"id": 1, "data": {"image": f"/data/local-files/?d={backend['images'][0]}"}},
             {"id": 2, "data": {"image": "/data/local-files/?d=../../etc/passwd"}},
             {"id": 3, "data": {"image": f"/data/local-files/?d={backend['images'][1]}"}},
             {"id": 4, "data": {"image": "/data/local-files/?d=gone.jpg"}},
             {"id": 5, "data": {"image": "https://example.com/x.jpg"}}]
    for auth in ({"Authorization": f"Token {backend['token']}"}, None):
        kwargs = {"headers": auth} if auth else {"auth": ("labelstudio", backend["token"])}  # basic auth as LS sends
        response = httpx.post(f"{backend['url']}/predict", json={"tasks": tasks, "label_config": CONFIG},
                              timeout=60, **kwargs)
        assert response.status_code == 200
        results = response.json()["results"]
        assert len(results) == 5 and all(results[i]["result"] == [] for i in (1, 3, 4))
        assert "task 2" in results[1]["error"] and "outside" in results[1]["error"]
        assert "task 4" in results[3]["error"] and "gone.jpg" in results[3]["error"]
        assert "task 5" in results[4]["error"] and "not a local file" in results[4]["error"]
        assert "error" not in results[0] and "error" not in results[2]
        assert all(r["model_version"].startswith("atom-sample/") for r in results)
        assert results[0]["result"], "the tiny model shows boxes at preannotation.min_score=0"
        for r in results[0]["result"]:
            assert r["type"] == "rectanglelabels" and 0 <= r["value"]["x"] <= 100
            assert (r["from_name"], r["to_name"]) == ("objects", "photo")  # the names of the request's config
    only_bad = httpx.post(f"{backend['url']}/predict", json={"tasks": tasks[3:4]}, timeout=60,
                          headers={"Authorization": f"Token {backend['token']}"})
    assert only_bad.status_code == 422 and "gone.jpg" in only_bad.json()["detail"]
    setup = httpx.post(f"{backend['url']}/setup", json={"project": "1"},
                       headers={"Authorization": f"Bearer {backend['token']}"})
    assert setup.status_code == 200 and setup.json()["model_version"].startswith("atom-sample/")


def test_label_studio_gets_predictions_from_the_backend(backend, label_studio):
    """The README's set-up end to end: a project with its own control names connects the backend (basic auth,
    the token as password; the server started with USE_DEFAULT_BANNED_SUBNETS=false), and Label Studio itself
    asks it for every task's predictions."""
    from label_studio_sdk import LabelStudio

    client = LabelStudio(base_url=label_studio.url, api_key=label_studio.token)
    project = client.projects.create(title="backend", label_config=CONFIG)
    client.projects.import_tasks(id=project.id, request=[
        {"data": {"image": f"/data/local-files/?d={image}"}} for image in backend["images"]])
    ml = client.ml.create(project=project.id, url=backend["url"], auth_method="BASIC_AUTH",
                          basic_auth_user="labelstudio", basic_auth_pass=backend["token"], title="atom")
    assert ml.id  # Label Studio called /health and /setup to accept the connection
    # The Data Manager's "Retrieve predictions" action: Label Studio calls /predict for the selected tasks.
    client.actions.create(id="retrieve_tasks_predictions", project=project.id,
                          selected_items={"all": True, "excluded": []})
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:
        predictions = list(client.predictions.list(project=project.id))
        if len(predictions) == len(backend["images"]):
            break
        time.sleep(1)
    assert len(predictions) == 2 and all(p.model_version.startswith("atom-sample/") for p in predictions)
    boxes = [r for p in predictions for r in p.result]
    assert boxes and all((r["from_name"], r["to_name"]) == ("objects", "photo") for r in boxes)
