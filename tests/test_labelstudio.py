"""The annotators' loop against a real Label Studio server (started on 127.0.0.1 by the `label_studio` fixture)."""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import pytest

from atom.data.formats import read_source
from atom.data.version import open_version, write_version
from atom.labelstudio.connection import Connection, LabelStudioError, connect
from atom.labelstudio.project import FROM_NAME, TO_NAME, Scene, SceneProject, task_url

pytestmark = pytest.mark.server

CLASSES = ["bus", "car", "pedestrian"]


def _scene(label_studio, sample_export, name: str, n: int) -> Scene:
    folder = label_studio.document_root / name
    folder.mkdir(parents=True, exist_ok=True)
    for image in sorted((sample_export.parent / "images").glob("*.jpg"))[:n]:
        shutil.copy(image, folder / image.name)
    return Scene(name, CLASSES, folder)


def _project(label_studio, scene) -> SceneProject:
    return SceneProject(connect(), scene, label_studio.document_root)


def test_init_is_idempotent(label_studio, sample_export):
    project = _project(label_studio, _scene(label_studio, sample_export, "init", 12))
    first, second = project.ensure(), project.ensure()
    assert first["tasks_created"] == 12 and second["tasks_created"] == 0
    assert second["project_id"] == first["project_id"]
    titles = [p.title for p in project.client.projects.list()]
    assert titles.count("atom:init") == 1
    config = project.client.projects.get(id=first["project_id"]).label_config
    assert all(f'value="{c}"' in config for c in CLASSES)
    assert len(project.tasks()) == 12


def test_camera_frames_become_tasks_that_show_camera_source_and_time(label_studio, tmp_path):
    """`atom data frames` output as a scene's folder: each task carries its frame's camera, video and time, and
    the label config shows them above the image; a rerun changes nothing."""
    from atom.cli import main as atom
    from tests.test_frames import write_video

    folder = label_studio.document_root / "frames"
    video = write_video(tmp_path / "north" / "hour1.mkv")
    assert atom(["data", "frames", str(tmp_path), "--out", str(folder), "--every", "1s", "--no-progress"]) == 0
    project = _project(label_studio, Scene("frames", CLASSES, folder))
    first = project.ensure()
    assert first["tasks_created"] == 4 and first["frame_tasks_described"] == 4
    assert '<Header value="$frame"/>' in project.client.projects.get(id=first["project_id"]).label_config
    by_time = {t.data["time_s"]: t.data for t in project.tasks()}
    assert sorted(by_time) == [0.0, 3.0, 4.0, 5.0]
    assert by_time[3.0]["camera"] == "north" and by_time[3.0]["source"] == str(video.resolve())
    assert by_time[3.0]["frame"] == "camera north · hour1.mkv · 3.0 s"
    assert by_time[3.0]["image"].endswith("frames/north/hour1-00003000.jpg")
    assert project.ensure()["frame_tasks_described"] == 0


def test_round_trip_through_label_studio_is_identical(label_studio, sample_export, tmp_path):
    scene = _scene(label_studio, sample_export, "roundtrip", 20)
    source = read_source("labelstudio", sample_export)
    source.samples = [s for s in source.samples if (scene.images / s.image.name).exists()]
    for s in source.samples:  # the same images, as the server sees them
        s.image = scene.images / s.image.name
    original, _ = write_version(source, tmp_path / "a", "original", classes=CLASSES)
    project = _project(label_studio, scene)
    project.ensure()  # tasks exist first: the labels must be attached to them, not duplicated
    pushed = project.import_labeled(source, as_annotations=True)
    assert pushed == {"tasks_created": 0, "labeled": 20, "problems": {}}
    pulled, new, report = project.pull(tmp_path / "b", "pulled")

    def boxes(version):
        out = {}
        for split in ("train", "val", "test"):
            coco = version.coco(split)
            for im in coco["images"]:
                out[im["sha256"]] = (im["width"], im["height"], sorted(
                    (a["category_id"], *a["bbox"]) for a in coco["annotations"] if a["image_id"] == im["id"]))
        return out

    a, b = boxes(original), boxes(pulled)
    assert set(a) == set(b) and len(a) == 20
    for sha, (w, h, ours) in a.items():
        theirs = b[sha][2]
        assert [r[0] for r in ours] == [r[0] for r in theirs]
        for r, s in zip(ours, theirs):
            assert max(abs(x - y) for x, y in zip(r[1:], s[1:])) <= 1e-6 * max(w, h) + 1e-3  # bbox stored at 1e-3 px
    again, new_again, _ = project.pull(tmp_path / "b", "pulled")
    assert new and not new_again and again.fingerprint == pulled.fingerprint


def _rect(label, x, y, w, h, rotation=0.0, sized=True):
    r = {"from_name": FROM_NAME, "to_name": TO_NAME, "type": "rectanglelabels",
         "value": {"x": x, "y": y, "width": w, "height": h, "rotation": rotation, "rectanglelabels": [label]}}
    return {**r, "original_width": 320, "original_height": 240} if sized else r


def test_pull_reports_bad_annotations(label_studio, sample_export, tmp_path):
    scene = _scene(label_studio, sample_export, "messy", 6)
    project = _project(label_studio, scene)
    project.ensure()
    client = project.client
    tasks = sorted(project.tasks(), key=lambda t: t.id)
    client.annotations.create(id=tasks[0].id, result=[_rect("car", 10, 10, 20, 20, rotation=30)])
    client.annotations.create(id=tasks[1].id, result=[_rect("car", 10, 10, 20, 20, sized=False)])
    client.annotations.create(id=tasks[2].id, result=[_rect("tram", 10, 10, 20, 20), _rect("bus", 50, 50, 10, 10)])
    client.annotations.create(id=tasks[3].id, result=[])
    client.annotations.create(id=tasks[4].id, result=[_rect("car", 1, 1, 5, 5)], was_cancelled=True)
    client.annotations.create(id=tasks[5].id, result=[_rect("car", 1, 1, 5, 5)])
    client.annotations.create(id=tasks[5].id, result=[_rect("bus", 60, 60, 10, 10)])
    (scene.images / Path(tasks[5].data["image"].split("d=")[1]).name).unlink()  # its image disappears
    version, _, report = project.pull(tmp_path, "messy")
    counts = report.counts()
    assert counts["rotated_box"] == 1 and counts["unknown_label"] == 1 and counts["missing_image"] == 1
    assert counts["annotation_conflict"] == 1
    card = version.card
    assert sum(s["images"] for s in card["splits"].values()) == 4  # tasks 0-3; the cancelled one is not labeled
    assert sum(s["boxes"] for s in card["splits"].values()) == 3


def test_tasks_of_one_image_are_one_sample_and_sync_makes_no_twins(label_studio, sample_export, tmp_path):
    """The storage's Sync button after `atom label init` creates no second task; where an image has two tasks
    anyway (an older project, an import by hand), the later annotation wins across them and the conflict is
    reported naming the project and the tasks; tasks nobody annotated are counted."""
    scene = _scene(label_studio, sample_export, "twins", 4)
    project = _project(label_studio, scene)
    assert project.ensure()["tasks_created"] == 4
    storage = project.client.import_storage.local.list(project=project.id)[0]
    project.client.import_storage.local.sync(id=storage.id)  # what the UI's Sync button does
    project._wait_for_sync(storage.id)
    tasks = sorted(project.tasks(), key=lambda t: t.id)
    assert len(tasks) == 4
    client = project.client
    client.projects.import_tasks(id=project.id, request=[{"data": dict(tasks[0].data)}])  # a twin, made by hand
    twin = max(project.tasks(), key=lambda t: t.id)
    assert twin.data["image"] == tasks[0].data["image"] and twin.id != tasks[0].id
    client.annotations.create(id=tasks[0].id, result=[_rect("car", 10, 10, 20, 20)])
    client.annotations.create(id=twin.id, result=[_rect("bus", 40, 40, 20, 20)])  # later: it wins
    client.annotations.create(id=tasks[1].id, result=[_rect("car", 5, 5, 10, 10)])
    version, _, report = project.pull(tmp_path, "twins")
    assert sum(s["images"] for s in version.card["splits"].values()) == 2
    boxes = [a for split in ("train", "val", "test") for a in version.coco(split)["annotations"]]
    assert sorted(version.classes[a["category_id"] - 1] for a in boxes) == ["bus", "car"]
    conflict = next(p for p in report.problems if p.kind == "annotation_conflict")
    assert f"project {project.id}" in str(conflict.file) and str(twin.id) in str(conflict.file)
    assert "tmp" not in str(conflict.file)
    assert report.counts()["unlabeled_task"] == 2  # tasks 2 and 3


def test_predictions_are_pushed_once_per_model_version(label_studio, sample_export, trained):
    from atom import tracking

    project = _project(label_studio, _scene(label_studio, sample_export, "predict", 10))
    project.ensure()
    ref = tracking.resolve_model(f"{trained['result']['model_name']}@candidate")
    detector = tracking.load_detector(ref)
    version = f"{ref.name}/{ref.version}"
    first = project.push_predictions(detector, version)
    second = project.push_predictions(detector, version)
    assert first["pushed"] == 10 and second == {"pushed": 0, "skipped_existing": 10, "problems": {}}
    predictions = list(project.client.predictions.list(project=project.id))
    assert len(predictions) == 10 and {p.model_version for p in predictions} == {version}
    assert all(r["type"] == "rectanglelabels" for p in predictions for r in p.result)


def test_preannotations_have_their_own_threshold_cap_and_class_map(label_studio, sample_export, trained):
    from atom import tracking
    from atom.labelstudio.project import Preannotation

    ref = tracking.resolve_model(f"{trained['result']['model_name']}@candidate")
    detector = tracking.load_detector(ref)  # tiny: many low-scoring boxes (detector.score_thresh=0.01)
    scene = _scene(label_studio, sample_export, "shown", 4)
    capital = Scene(scene.name, [c.capitalize() for c in CLASSES], scene.images)
    with pytest.raises(LabelStudioError, match="'bus' -> 'Bus'"):
        Preannotation().check(detector.spec.classes, capital, ref.uri)
    shown = Preannotation(min_score=0.0, max_boxes=3, class_map={c: c.capitalize() for c in CLASSES})
    shown.check(detector.spec.classes, capital, ref.uri)
    project = _project(label_studio, capital)
    project.ensure()
    assert project.push_predictions(detector, "capped", shown)["pushed"] == 4
    assert project.push_predictions(detector, "default", Preannotation(
        class_map=shown.class_map))["pushed"] == 4
    predictions = list(project.client.predictions.list(project=project.id))
    capped = [p.result for p in predictions if p.model_version == "capped"]
    assert max(len(r) for r in capped) == 3  # the tiny model has more than 3 boxes per image
    assert {b["value"]["rectanglelabels"][0] for r in capped for b in r} <= set(capital.classes)
    default = [b for p in predictions if p.model_version == "default" for b in p.result]
    assert all(b["score"] >= 0.3 for b in default)


def test_the_key_never_appears_in_errors(label_studio):
    conn = Connection(label_studio.url, label_studio.token + "-wrong", retries=1)
    assert label_studio.token not in repr(conn)
    with pytest.raises(LabelStudioError) as e:
        conn.call("list projects", lambda: list(conn.client().projects.list()))
    assert "HTTP 401" in str(e.value) and label_studio.token not in str(e.value)


def test_server_stopping_fails_the_pull_cleanly(label_studio, sample_export, tmp_path):
    scene = _scene(label_studio, sample_export, "outage", 4)
    project = _project(label_studio, scene)
    project.ensure()
    project.client.annotations.create(id=project.tasks()[0].id, result=[_rect("car", 10, 10, 20, 20)])
    before, _, _ = project.pull(tmp_path, "outage")
    project.client.annotations.create(id=project.tasks()[1].id, result=[_rect("bus", 10, 10, 20, 20)])
    label_studio.stop()
    try:
        project.conn = Connection(project.conn.url, project.conn.api_key, retries=3)
        project.client = project.conn.client()
        with pytest.raises(LabelStudioError, match="export annotations failed .* after 3 attempts"):
            project.pull(tmp_path, "outage")
    finally:
        label_studio.start()
    assert open_version(tmp_path, "outage").root == before.root
    assert sorted(p.name for p in (tmp_path / "outage").iterdir()) == sorted([before.root.name, "latest"])


def test_one_retry_loop_bounds_the_attempts():
    """label-studio-sdk retries by itself; ATOM configures it instead of wrapping it in a second loop (which made
    3 x 3 attempts)."""
    import threading
    from http.server import BaseHTTPRequestHandler, HTTPServer

    hits = []

    class Unavailable(BaseHTTPRequestHandler):
        def do_GET(self):  # noqa: N802
            hits.append(self.path)
            self.send_response(503)
            self.send_header("Content-Length", "0")
            self.end_headers()

        def log_message(self, *args):
            pass

    server = HTTPServer(("127.0.0.1", 0), Unavailable)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        conn = Connection(f"http://127.0.0.1:{server.server_port}", "key", retries=3)
        with pytest.raises(LabelStudioError, match="after 3 attempts .*HTTP 503"):
            conn.call("list projects", lambda: list(conn.client().projects.list()))
    finally:
        server.shutdown()
    assert len(hits) == 3


def test_task_urls_outside_the_document_root_are_refused(label_studio, tmp_path):
    with pytest.raises(ValueError):
        task_url(tmp_path / "x.jpg", label_studio.document_root)


def test_cli_init_and_pull(label_studio, sample_export, tmp_path):
    import json
    import subprocess
    import sys

    from atom import PROJECT_ROOT

    scene = _scene(label_studio, sample_export, "cli", 5)
    args = [f"scene.name={scene.name}", f"scene.images={scene.images}", f"document_root={label_studio.document_root}",
            f"paths.datasets={tmp_path}"]

    def atom(*words):
        out = subprocess.run([sys.executable, "-m", "atom.cli", "label", *words, *args], capture_output=True,
                             text=True, cwd=PROJECT_ROOT)
        assert label_studio.token not in out.stdout + out.stderr
        return out

    init = atom("init")
    assert init.returncode == 0, init.stderr
    assert json.loads(init.stdout)["tasks_created"] == 5
    project = _project(label_studio, scene)
    for task in project.tasks()[:2]:
        project.client.annotations.create(id=task.id, result=[_rect("car", 10, 10, 20, 20)])
    pulled = atom("pull")
    assert pulled.returncode == 0, pulled.stderr
    result = json.loads(pulled.stdout)
    assert result["new"] and sum(s["images"] for s in result["splits"].values()) == 2
    predict = atom("predict", "model=no-such-model@candidate", f"paths.output_dir={tmp_path}")
    assert predict.returncode == 1 and "not found in the registry" in predict.stderr


def test_queue_puts_the_most_useful_task_first_in_label_studio(label_studio, sample_export, trained):
    import httpx

    from atom import tracking

    project = _project(label_studio, _scene(label_studio, sample_export, "queue", 8))
    project.ensure()
    tasks = sorted(project.tasks(), key=lambda t: t.id)
    project.client.annotations.create(id=tasks[0].id, result=[_rect("car", 10, 10, 20, 20)])  # labeled: not queued
    ref = tracking.resolve_model(f"{trained['result']['model_name']}@candidate")
    result = project.queue(tracking.load_detector(ref), f"{ref.name}/{ref.version}")
    assert result["queued"] == 7 and tasks[0].id not in result["first_tasks"]
    again = project.queue(tracking.load_detector(ref), f"{ref.name}/{ref.version}")  # replaces, never duplicates
    assert again["first_tasks"] == result["first_tasks"]
    queued = [p for p in project.client.predictions.list(project=project.id) if p.model_version.endswith(":queue")]
    assert len(queued) == 7
    # What an annotator gets when pressing "Label all tasks": Label Studio's own next-task choice.
    nxt = httpx.get(f"{label_studio.url}/api/projects/{project.id}/next",
                    headers={"Authorization": f"Token {label_studio.token}"}).json()
    assert nxt["id"] == result["first_tasks"][0]


def test_cold_start_queue_needs_no_trained_model(label_studio, sample_export):
    """Before any model exists: ImageNet features order the tasks, the first batch goes first in Label Studio,
    and annotators are shown no boxes (an untrained head's would be noise)."""
    import httpx

    from atom.models.detector import Detector, DetectorSpec

    project = _project(label_studio, _scene(label_studio, sample_export, "coldstart", 8))
    project.ensure()
    embedder = Detector(DetectorSpec(classes=CLASSES, input_size=128)).eval()
    result = project.queue(embedder, "cold-start:tf_efficientnet_lite0", cold_start=3)
    assert result["queued"] == 8 and len(set(result["first_tasks"])) == 8
    queued = [p for p in project.client.predictions.list(project=project.id) if p.model_version.endswith(":queue")]
    assert len(queued) == 8 and all(p.result == [] for p in queued)
    nxt = httpx.get(f"{label_studio.url}/api/projects/{project.id}/next",
                    headers={"Authorization": f"Token {label_studio.token}"}).json()
    assert nxt["id"] == result["first_tasks"][0]


def test_serving_feedback_becomes_corrected_tasks_a_dataset_version_and_lineage(label_studio, sample_export, trained,
                                                                                 tmp_path):
    """Operators' verdicts on a served model's detections -> tasks carrying the model's boxes with the verdicts
    applied, tagged with model and batch -> a pulled version that names the batch -> a model trained from the served
    one (init=) whose lineage names both."""
    import json
    import subprocess
    import sys

    from atom import PROJECT_ROOT, tracking
    from atom.data.version import open_version
    from atom.errors import ConfigError
    from atom.inference import predict_images
    from atom.labelstudio.feedback import _iou
    from recipes import compose
    from recipes.train import train

    outputs = trained["cfg"].paths.output_dir
    tracking.configure(outputs)
    ref = tracking.resolve_model(f"{trained['result']['model_name']}@candidate")
    model = f"{ref.name}/{ref.version}"
    images = sorted((sample_export.parent / "images").glob("*.jpg"))[:2]
    d1, d2 = predict_images(tracking.load_detector(ref), images)
    alarm = {"box": d1.boxes[0], "label": d1.labels[0], "score": d1.scores[0]}
    other = next(c for c in CLASSES if c != d2.labels[0])
    lines = [{"model": model, "image": str(images[0]), "verdict": "false_alarm", "detection": alarm, "camera": "n1"},
             {"model": model, "image": str(images[0]), "verdict": "missed",
              "correct": {"box": [10, 10, 60, 50], "label": "car"}},
             {"model": model, "image": str(images[1]), "verdict": "maybe"},
             {"model": model, "image": str(images[1]), "verdict": "wrong_class",
              "detection": {"box": d2.boxes[0], "label": d2.labels[0]}, "correct": {"label": other}}]
    feedback = tmp_path / "night-shift.jsonl"
    feedback.write_text("".join(json.dumps(line) + "\n" for line in lines))
    folder = label_studio.document_root / "fb"
    folder.mkdir()
    args = ["scene.name=fb", f"scene.images={folder}", f"document_root={label_studio.document_root}",
            f"paths.output_dir={outputs}", f"paths.datasets={tmp_path / 'datasets'}",
            "preannotation.min_score=0", "preannotation.max_boxes=5"]

    def atom(*words):
        return subprocess.run([sys.executable, "-m", "atom.cli", "label", *words, *args], capture_output=True,
                              text=True, cwd=PROJECT_ROOT, env={**os.environ, "MLFLOW_TRACKING_URI": ""})

    done = atom("feedback", str(feedback))
    assert done.returncode == 0, done.stderr
    result = json.loads(done.stdout)
    assert result["images"] == 2 and result["verdicts"] == 3 and result["preannotations_pushed"] == 2
    assert f"{feedback}:3" in done.stderr and "verdict 'maybe'" in done.stderr  # the bad line, by file and line
    project = _project(label_studio, Scene("fb", CLASSES, folder))
    tasks = {t.id: t for t in project.tasks()}
    assert {t.data["feedback_batch"] for t in tasks.values()} == {"night-shift"}
    assert {t.data["model_version"] for t in tasks.values()} == {model}
    preds = [p for p in project.client.predictions.list(project=project.id) if p.model_version == f"{model}:feedback"]
    assert len(preds) == 2
    for p in preds:
        boxes = [(r["value"]["rectanglelabels"][0], [r["value"][k] for k in ("x", "y", "width", "height")],
                  r.get("score")) for r in p.result]
        px = [(label, [x * d1.width / 100, y * d1.height / 100, (x + w) * d1.width / 100, (y + h) * d1.height / 100],
               score) for label, (x, y, w, h), score in boxes]
        if tasks[p.task].data.get("camera") == "n1":  # the first image: the false alarm gone, the missed car added
            assert not any(label == alarm["label"] and _iou(b, alarm["box"]) >= 0.5 for label, b, _ in px)
            assert any(label == "car" and score is None and _iou(b, [10, 10, 60, 50]) > 0.95 for label, b, score in px)
        else:  # the second: the detection relabeled, as the operator's (no model score)
            assert any(label == other and score is None and _iou(b, d2.boxes[0]) > 0.95 for label, b, score in px)
    from recipes import label as recipes_label  # in-process from here on: the CLI path is shown above

    again = compose("label", [*args, f"feedback.file={feedback}"])
    assert recipes_label.feedback(again)["preannotations_pushed"] == 0  # once per batch

    for task in tasks.values():  # annotators accept the corrected boxes
        pred = next(p for p in preds if p.task == task.id)
        project.client.annotations.create(id=task.id, result=pred.result)
    recipes_label.pull(compose("label", [*args, "dataset_name=fb"]))
    version = open_version(tmp_path / "datasets", "fb")
    assert version.card["provenance"] == {"feedback_batches": ["night-shift"]}
    assert tracking.lineage_tags(version)["dataset.feedback_batches"] == "night-shift"

    cfg = trained["cfg"]  # continue from the served model on its own data; lineage names the parent
    os.environ.pop("MLFLOW_TRACKING_URI", None)
    child = train(compose("train", ["experiment=sample", f"paths.datasets={cfg.paths.datasets}",
                                    f"paths.output_dir={outputs}", "run_name=child", f"init={model}",
                                    "tracking.model_name=atom-sample-child",  # the shared store's atom-sample stays v1
                                    "detector.input_size=128", "trainer.max_epochs=1", "trainer.limit_train_batches=1",
                                    "trainer.limit_val_batches=1", "data.batch_size=4", "callbacks.rich_progress=false"]))
    tracking.configure(outputs)
    assert tracking.resolve_model(f"{child['model_name']}/{child['model_version']}").tags["init.model"] == ref.uri
    with pytest.raises(ConfigError, match="detects .* this run trains"):  # other classes: the weights would lie
        train(compose("train", ["experiment=sample", f"paths.datasets={cfg.paths.datasets}",
                                f"paths.output_dir={outputs}", f"init={model}", "data.classes=[car,bus]"]))


CHROMIUM, CHROMEDRIVER = Path("/usr/bin/chromium"), Path("/usr/bin/chromedriver")
ARTIFACTS = Path(__file__).resolve().parents[1] / "outputs" / "test-artifacts"


@pytest.fixture
def browser(tmp_path):
    """Debian's headless Chromium driven by Selenium through Debian's chromedriver (nothing is downloaded)."""
    if not (CHROMIUM.exists() and CHROMEDRIVER.exists()):
        pytest.skip("needs Debian's chromium and chromium-driver (.ci/run installs them)")
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    options = webdriver.ChromeOptions()
    options.binary_location = str(CHROMIUM)
    for arg in ("--headless=new", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                "--disable-background-networking", "--disable-component-update", "--disable-sync",
                "--window-size=1400,900", f"--user-data-dir={tmp_path / 'chromium'}"):
        options.add_argument(arg)
    driver = webdriver.Chrome(service=Service(str(CHROMEDRIVER)), options=options)
    yield driver
    driver.quit()


def test_pushed_predictions_render_in_the_labeling_ui(label_studio, sample_export, browser):
    """An annotator opening a task sees the pushed prediction's regions, pre-filled and labeled."""
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support import expected_conditions as seen
    from selenium.webdriver.support.ui import WebDriverWait

    scene = _scene(label_studio, sample_export, "browser", 6)
    source = read_source("labelstudio", sample_export)
    source.samples = [s for s in source.samples if (scene.images / s.image.name).exists()]
    for s in source.samples:
        s.image = scene.images / s.image.name
    project = _project(label_studio, scene)
    project.ensure()
    project.import_labeled(source, as_annotations=False, model_version="atom-browser/1")
    sample = max(source.samples, key=lambda s: len(s.boxes))  # the busiest image: every region must show
    task = next(t for t in project.tasks() if t.data["image"].endswith(sample.image.name))

    browser.get(f"{label_studio.url}/user/login/")
    browser.find_element(By.NAME, "email").send_keys(label_studio.username)
    browser.find_element(By.NAME, "password").send_keys(label_studio.password)
    browser.find_element(By.CSS_SELECTOR, "button[type=submit], input[type=submit]").click()
    WebDriverWait(browser, 30).until(lambda d: "/user/login" not in d.current_url)
    browser.get(f"{label_studio.url}/projects/{project.id}/data?task={task.id}")
    titles = ".lsf-outliner-item__title"
    try:
        WebDriverWait(browser, 90).until(
            lambda d: len(d.find_elements(By.CSS_SELECTOR, titles)) >= len(sample.boxes))
        WebDriverWait(browser, 30).until(seen.text_to_be_present_in_element((By.TAG_NAME, "body"), "atom-browser/1"))
    finally:
        ARTIFACTS.mkdir(parents=True, exist_ok=True)
        browser.save_screenshot(str(ARTIFACTS / "labelstudio-prediction.png"))
    shown = sorted(e.text.strip() for e in browser.find_elements(By.CSS_SELECTOR, titles))
    assert shown == sorted(b.label for b in sample.boxes)
