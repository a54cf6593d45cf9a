"""A scene's Label Studio project: create it (idempotently), pull its annotations into a dataset version, push
model predictions or existing labels as pre-annotations.

Images are served by Label Studio's local-files storage: every image lies under the server's document root
(LABEL_STUDIO_LOCAL_FILES_DOCUMENT_ROOT) and tasks point at it as /data/local-files/?d=<path under the root>.
"""

from __future__ import annotations

import json
import re
import tempfile
import time
from dataclasses import dataclass, field, replace
from pathlib import Path
from xml.sax.saxutils import quoteattr

import numpy as np

from atom.data.formats import IMAGE_SUFFIXES, read_labelstudio, resolve_task_image
from atom.data.frames import read_manifest
from atom.data.report import ImportReport
from atom.data.source import Box
from atom.data.version import DatasetVersion, read_image_size, write_version
from atom.inference import Detections, predict_images
from atom.labelstudio.connection import Connection, LabelStudioError

FROM_NAME, TO_NAME = "label", "image"
# Matched against file names: hidden ones (a frames folder's .contact_sheet.jpg, half-written .tmp images) are no task
IMAGE_PATTERN = r"(?i)(?!\.).*\.(" + "|".join(sorted(s.lstrip(".") for s in IMAGE_SUFFIXES)) + ")$"


@dataclass(frozen=True)
class Scene:
    name: str
    classes: list[str]
    images: Path  # the folder of the scene's images, under the document root

    @property
    def title(self) -> str:
        return f"atom:{self.name}"


def label_config(classes: list[str], frames: bool = False) -> str:
    """The RectangleLabels config of a scene; `frames`: the images are camera frames (`atom data frames`), and a
    header above each shows the annotator its camera, video and time (the task's `frame` field)."""
    labels = "\n".join(f"    <Label value={quoteattr(c)}/>" for c in classes)
    header = '  <Header value="$frame"/>\n' if frames else ""
    return (f'<View>\n{header}  <Image name="{TO_NAME}" value="$image"/>\n'
            f'  <RectangleLabels name="{FROM_NAME}" toName="{TO_NAME}">\n{labels}\n  </RectangleLabels>\n</View>')


def frame_fields(entry: dict) -> dict:
    """What a task of a camera frame carries besides its image: the manifest's metadata, and one line for people."""
    when = f" · {entry['recorded_at']}" if entry.get("recorded_at") else ""
    return {"frame": f"camera {entry['camera']} · {Path(entry['source']).name} · {entry['time_s']:.1f} s{when}",
            "camera": entry["camera"], "source": entry["source"], "time_s": entry["time_s"],
            **({"recorded_at": entry["recorded_at"]} if entry.get("recorded_at") else {})}


def task_url(image: Path, document_root: Path) -> str:
    rel = Path(image).resolve().relative_to(Path(document_root).resolve())
    return f"/data/local-files/?d={rel.as_posix()}"


def box_result(box: Box, width: int, height: int, score: float | None = None,
               names: tuple[str, str] = (FROM_NAME, TO_NAME)) -> dict:
    """One RectangleLabels result in Label Studio's percent coordinates, clipped to the image. names: the
    project's (RectangleLabels name, Image name); ATOM's own projects use ("label", "image")."""
    x0, y0, x1, y1 = box.to_pixels(width, height)
    x0, x1 = min(max(x0, 0.0), width), min(max(x1, 0.0), width)
    y0, y1 = min(max(y0, 0.0), height), min(max(y1, 0.0), height)
    result = {"from_name": names[0], "to_name": names[1], "type": "rectanglelabels",
              "original_width": width, "original_height": height, "image_rotation": 0,
              "value": {"x": 100 * x0 / width, "y": 100 * y0 / height, "width": 100 * (x1 - x0) / width,
                        "height": 100 * (y1 - y0) / height, "rotation": 0, "rectanglelabels": [box.label]}}
    if score is not None:
        result["score"] = score
    return result


@dataclass(frozen=True)
class Preannotation:
    """Which of a model's boxes annotators are shown (conf/label.yaml `preannotation`), and how the model's class
    names map to the project's labels where they differ."""

    min_score: float = 0.3
    max_boxes: int = 50
    class_map: dict[str, str] = field(default_factory=dict)

    def select(self, d: Detections) -> Detections:
        return d.top(self.min_score, self.max_boxes)

    def check(self, model_classes: list[str], scene: Scene, model: str) -> None:
        """Every model class, after the map, must be one of the scene's labels; say which differ and how."""
        unknown = [c for c in model_classes if self.class_map.get(c, c) not in scene.classes]
        if unknown:
            hints = [f"{c!r} -> {s!r}" for c in unknown for s in scene.classes if c.lower() == s.lower()]
            raise LabelStudioError(
                f"model {model} predicts classes {unknown} that scene {scene.name!r} lacks (its labels: "
                f"{scene.classes}); map them with preannotation.class_map" +
                (f", e.g. {', '.join(hints)}" if hints else ""))


class SceneProject:
    def __init__(self, conn: Connection, scene: Scene, document_root: Path):
        self.conn, self.scene, self.document_root = conn, scene, Path(document_root).resolve()
        self.client = conn.client()
        self._id: int | None = None

    # -- project and storage
    @property
    def id(self) -> int:
        if self._id is None:
            project = self._find()
            if project is None:
                raise LabelStudioError(f"no Label Studio project {self.scene.title!r}: run `atom label init` first")
            self._id = project.id
        return self._id

    def _find(self):
        projects = self.conn.call("list projects", lambda: list(self.client.projects.list(title=self.scene.title)))
        return next((p for p in projects if p.title == self.scene.title), None)

    def ensure(self) -> dict:
        """Project (created or label config updated), local-files storage, one task per image. Idempotent."""
        images_dir = Path(self.scene.images).resolve()
        if not images_dir.is_relative_to(self.document_root):
            raise LabelStudioError(f"{images_dir}: scene images must lie under the local-files document root "
                                   f"{self.document_root}")
        frames = read_manifest(images_dir)  # written by `atom data frames`; {} for other folders
        config = label_config(self.scene.classes, frames=bool(frames))
        project = self._find()
        if project is None:
            project = self.conn.call("create project", self.client.projects.create,
                                     title=self.scene.title, label_config=config)
        elif project.label_config != config:
            self.conn.call("update label config", self.client.projects.update, id=project.id, label_config=config)
        self._id = project.id
        storages = self.conn.call("list storages", self.client.import_storage.local.list, project=self.id)
        storage = next((s for s in storages if Path(s.path).resolve() == images_dir), None)
        if storage is None:
            storage = self.conn.call("connect local-files storage", self.client.import_storage.local.create,
                                     project=self.id, path=str(images_dir), use_blob_urls=True, recursive_scan=True,
                                     regex_filter=IMAGE_PATTERN, title=f"{self.scene.name} images")
        # The tasks come from syncing the storage, which links each task to its file: the Sync button in the UI
        # then finds every file linked and creates no second task for it (a task imported apart from the storage
        # would get a twin). Images the sync did not cover (an older project's) are imported as before.
        before = len(self.tasks())
        self.conn.call("sync local-files storage", self.client.import_storage.local.sync, id=storage.id)
        self._wait_for_sync(storage.id)
        images = sorted(p for p in images_dir.rglob("*") if re.match(IMAGE_PATTERN, p.name))
        imported = self.import_tasks([{"data": {"image": task_url(p, self.document_root)}} for p in images])
        described = self._describe_frames(images_dir, frames) if frames else 0
        return {"project_id": self.id, "images": len(images), "tasks_created": len(self.tasks()) - before,
                "tasks_imported_apart_from_storage": imported, "frame_tasks_described": described}

    def _describe_frames(self, images_dir: Path, frames: dict[str, dict]) -> int:
        """Put each camera frame's metadata (camera, source video, time) into its task's data, where the label
        config shows it; a task whose image the manifest does not list gets an empty header. Returns how many
        tasks changed (none on a rerun)."""
        by_url = {task_url(images_dir / name, self.document_root): entry for name, entry in frames.items()}
        changed = 0
        for task in self.tasks():
            entry = by_url.get(task.data.get("image"))
            fields = frame_fields(entry) if entry else {"frame": ""}
            if any(task.data.get(k) != v for k, v in fields.items()):
                self.conn.call("describe a frame's task", self.client.tasks.update, id=task.id,
                               data={**task.data, **fields})
                changed += 1
        return changed

    def _wait_for_sync(self, storage_id: int, wait_s: float = 300) -> None:
        deadline = time.monotonic() + wait_s
        while True:
            status = self.conn.call("storage status", self.client.import_storage.local.get, id=storage_id).status
            if status in (None, "completed"):
                return
            if status == "failed" or time.monotonic() > deadline:
                raise LabelStudioError(f"syncing the local-files storage {storage_id} of project {self.id}: "
                                       f"status {status!r}")
            time.sleep(0.5)

    def tasks(self) -> list:
        return self.conn.call("list tasks", lambda: list(self.client.tasks.list(project=self.id, fields="all")))

    def import_tasks(self, tasks: list[dict], batch: int = 500) -> int:
        """Import tasks whose image has no task yet (so re-running never duplicates). Returns how many."""
        existing = {t.data.get("image") for t in self.tasks()}
        new = [t for t in tasks if t["data"]["image"] not in existing]
        for i in range(0, len(new), batch):
            self.conn.call("import tasks", self.client.projects.import_tasks, id=self.id, request=new[i:i + batch])
        return len(new)

    # -- existing labels as pre-annotations
    def import_labeled(self, source, as_annotations: bool = False, model_version: str = "imported",
                       class_map: dict[str, str] | None = None) -> dict:
        """A labeled source (any importer's Source) as pre-annotations for review (predictions), or as
        annotations. Images without a task get one; existing tasks get the labels unless they already have
        annotations (or a prediction of that model_version). class_map renames the source's labels to the
        scene's. Samples outside the document root, unreadable images and unknown labels are reported (with the
        scene label that differs only in case, if any), not imported."""
        report, class_map = source.report, class_map or {}
        labeled = {}  # task URL -> results
        for sample in source.samples:
            if not Path(sample.image).resolve().is_relative_to(self.document_root):
                report.add("outside_root", sample.image, f"not under the document root {self.document_root}")
                continue
            try:
                width, height = read_image_size(sample.image)
            except Exception as e:  # noqa: BLE001  (PIL raises several types for bad files)
                report.add("corrupt_image" if Path(sample.image).exists() else "missing_image", sample.image, str(e))
                continue
            results = []
            for box in sample.boxes:
                label = class_map.get(box.label, box.label)
                if label not in self.scene.classes:
                    near = [c for c in self.scene.classes if c.lower() == label.lower()]
                    report.add("unknown_label", sample.origin or sample.image, f"label {label!r} not in scene "
                               f"{self.scene.name!r}" + (f" (did you mean {near[0]!r}? class_map)" if near else ""))
                    continue
                results.append(box_result(replace(box, label=label), width, height))
            labeled[task_url(sample.image, self.document_root)] = results
        existing = {t.data.get("image"): t for t in self.tasks()}
        if as_annotations:
            new = [{"data": {"image": url}, "annotations": [{"result": r}]} for url, r in labeled.items()
                   if url not in existing]
            for url, results in labeled.items():
                task = existing.get(url)
                if task is not None and not task.total_annotations:
                    self.conn.call("create annotation", self.client.annotations.create, id=task.id, result=results)
        else:
            new = [{"data": {"image": url}, "predictions": [{"result": r, "model_version": model_version}]}
                   for url, r in labeled.items() if url not in existing]
            predicted = self._tasks_predicted_by(model_version)
            request = [{"task": existing[url].id, "result": r, "model_version": model_version}
                       for url, r in labeled.items() if url in existing and existing[url].id not in predicted]
            self._import_predictions(request)
            self._wait_for_predictions(request)
        return {"tasks_created": self.import_tasks(new), "labeled": len(labeled), "problems": report.counts()}

    def _tasks_predicted_by(self, model_version: str) -> set[int]:
        predictions = self.conn.call("list predictions", lambda: list(self.client.predictions.list(project=self.id)))
        return {p.task for p in predictions if p.model_version == model_version}

    def _import_predictions(self, request: list[dict], batch: int = 500) -> None:
        for i in range(0, len(request), batch):
            self.conn.call("import predictions", self.client.projects.import_predictions, id=self.id,
                           request=request[i:i + batch])

    def _wait_for_predictions(self, request: list[dict], wait_s: float = 300) -> None:
        """Label Studio commits bulk imports in the background: wait until every prediction is listed, so that
        a re-run sees them and stays idempotent."""
        expected = {(r["task"], r["model_version"]) for r in request}
        deadline = time.monotonic() + wait_s
        while True:
            expected -= {(p.task, p.model_version) for p in self.conn.call(
                "list predictions", lambda: list(self.client.predictions.list(project=self.id)))}
            if not expected:
                return
            if time.monotonic() > deadline:
                raise LabelStudioError(f"{len(expected)} predictions were not stored by the server "
                                       f"(e.g. task {next(iter(expected))[0]}) within {wait_s:.0f} s")
            time.sleep(0.5)

    # -- pull
    def export_json(self) -> list[dict]:
        def download():
            # every task, so that tasks nobody annotated are counted in the report
            chunks = self.client.projects.exports.download_sync(id=self.id, export_type="JSON",
                                                                download_all_tasks=True)
            return json.loads(b"".join(chunks))

        return self.conn.call("export annotations", download)

    def pull(self, datasets_dir: Path, name: str | None = None) -> tuple[DatasetVersion, bool, ImportReport]:
        """Write the submitted annotations as a dataset version (the latest non-cancelled annotation per task).
        The export is fully downloaded before anything is written, and the version is written atomically."""
        tasks = self.export_json()
        with tempfile.TemporaryDirectory() as tmp:
            export = Path(tmp) / f"{self.scene.name}-export.json"
            export.write_text(json.dumps(tasks))
            source = read_labelstudio(export, images_root=self.document_root,
                                      origin=f"{self.conn.url} project {self.id} ({self.scene.title})")
        version, new = write_version(source, datasets_dir, name or self.scene.name, classes=self.scene.classes)
        return version, new, source.report

    # -- predictions
    def push_predictions(self, detector, model_version: str, shown: "Preannotation | None" = None,
                         batch_size: int = 8) -> dict:
        """Run the detector on every task that has no prediction from `model_version` yet and push its boxes:
        those `shown` lets through (annotators delete what they are given, so not every box down to 0.05)."""
        shown = shown or Preannotation()
        done = self._tasks_predicted_by(model_version)
        report = ImportReport()
        todo = []
        for task in self.tasks():
            if task.id in done:
                continue
            image = resolve_task_image(task.data, self.document_root, f"task {task.id}", report)
            if image is not None:
                todo.append((task.id, image))
        predictions = predict_images(detector, [image for _, image in todo], report, batch_size)
        pushed = [{"task": task_id, **to_prediction(shown.select(d), shown.class_map),
                   "model_version": model_version}
                  for (task_id, _), d in zip(todo, predictions) if d is not None]
        self._import_predictions(pushed)
        self._wait_for_predictions(pushed)
        return {"pushed": len(pushed), "skipped_existing": len(done), "problems": report.counts()}

    # -- serving feedback
    def add_feedback(self, verdicts: list, batch: str, load_model, shown: "Preannotation | None" = None) -> dict:
        """Tasks for the images operators flagged (atom/labelstudio/feedback.py): each image copied into the
        scene's folder under feedback/<batch>/ (named by its content: the same image twice is one task), the
        storage synced, and each task given the feedback's fields and a pre-annotation `<model>:feedback`: the
        serving model's boxes with the verdicts applied. `load_model(verdict)` -> (detector, "NAME/VERSION").
        Idempotent: a task that has its feedback pre-annotation is left as it is."""
        import shutil

        from atom.checksums import sha256_file
        from atom.labelstudio.feedback import apply_verdicts, summary

        shown = shown or Preannotation()
        folder = Path(self.scene.images).resolve() / "feedback" / batch
        by_image: dict[Path, list] = {}
        for v in verdicts:
            by_image.setdefault(v.image, []).append(v)
        placed = {}
        for image in by_image:
            digest = sha256_file(image)[:12]
            target = folder / f"{digest}-{image.name}"
            if not target.exists():
                folder.mkdir(parents=True, exist_ok=True)
                tmp = folder / f".{target.name}.tmp"
                shutil.copyfile(image, tmp)
                tmp.rename(target)
            placed[image] = target
        self.ensure()  # the sync makes the new images' tasks (linked to their files: no twins later)
        tasks = {t.data.get("image"): t for t in self.tasks()}
        models: dict[str, tuple] = {}
        done: dict[str, set[int]] = {}  # model version -> tasks that have its feedback pre-annotation
        request, described = [], 0
        for image, group in by_image.items():
            task = tasks[task_url(placed[image], self.document_root)]
            key = group[0].model or group[0].bundle_sha256
            if key not in models:
                models[key] = load_model(group[0])
            detector, model_version = models[key]
            version = f"{model_version}:feedback"
            fields = {"feedback_batch": batch, "model_version": model_version, "feedback": summary(group),
                      **group[0].extra}
            if any(task.data.get(k) != v for k, v in fields.items()):
                self.conn.call("describe a feedback task", self.client.tasks.update, id=task.id,
                               data={**task.data, **fields})
                described += 1
            if version not in done:
                done[version] = self._tasks_predicted_by(version)
            if task.id in done[version]:
                continue
            (d,) = predict_images(detector, [placed[image]])
            d = shown.select(d)
            boxes, labels, scores = apply_verdicts(d.boxes, d.labels, d.scores, group)
            result = [box_result(Box(shown.class_map.get(label, label), *box), d.width, d.height, score)
                      for box, label, score in zip(boxes, labels, scores)]
            request.append({"task": task.id, "result": result, "model_version": version,
                            "score": float(np.mean([s for s in scores if s is not None] or [0.0]))})
        self._import_predictions(request)
        self._wait_for_predictions(request)
        return {"batch": batch, "images": len(by_image), "verdicts": len(verdicts), "tasks_described": described,
                "preannotations_pushed": len(request), "folder": str(folder)}

    # -- labeling queue
    def queue(self, detector, model_version: str, diversity_weight: float = 1.0,
              shown: "Preannotation | None" = None, batch_size: int = 8, cold_start: int | None = None) -> dict:
        """Order the unlabeled tasks by usefulness (atom.labelstudio.queue) and hand the order to Label Studio's
        own active-learning mode: each task gets a prediction (the model's boxes) of version
        `<model_version>:queue` whose score is its rank / n, and the project switches to uncertainty sampling on
        that version, which serves the lowest score first. Re-running replaces the previous queue.
        `cold_start=B`: no trained model yet; `detector` only embeds (its ImageNet backbone), the first B tasks
        are a diverse batch (cold_start_order) and the predictions carry no boxes."""
        import torch

        from atom.labelstudio.queue import cold_start_order, image_uncertainty, rank_for_labeling

        shown = shown or Preannotation()
        version = f"{model_version}:queue"
        report = ImportReport()
        todo = []
        for task in self.tasks():
            if task.total_annotations:
                continue
            image = resolve_task_image(task.data, self.document_root, f"task {task.id}", report)
            if image is not None:
                todo.append((task.id, image))
        predictions = predict_images(detector, [image for _, image in todo], report, batch_size,
                                     with_embeddings=True)
        readable = [i for i, p in enumerate(predictions) if p is not None]
        todo, predictions = [todo[i] for i in readable], [predictions[i] for i in readable]
        embeddings = np.stack([p.embedding for p in predictions]) if predictions else np.zeros((0, 1))
        if cold_start:
            order = cold_start_order(embeddings, cold_start)
            predictions = [replace(p, boxes=[], scores=[], labels=[]) for p in predictions]  # an untrained head's
        else:
            uncertainty = np.array([image_uncertainty(torch.tensor(p.scores)) for p in predictions])
            order = rank_for_labeling(uncertainty, embeddings, diversity_weight)
        for old in self.conn.call("list predictions", lambda: list(self.client.predictions.list(project=self.id))):
            if old.model_version == version:
                self.conn.call("delete old queue prediction", self.client.predictions.delete, id=old.id)
        request = [{"task": todo[i][0], "result": to_prediction(shown.select(predictions[i]), shown.class_map)["result"],
                    "score": rank / max(len(order), 1), "model_version": version} for rank, i in enumerate(order)]
        self._import_predictions(request)
        self._wait_for_predictions(request)
        self.conn.call("switch to uncertainty sampling", self.client.projects.update, id=self.id,
                       sampling="Uncertainty sampling", model_version=version)
        return {"queued": len(order), "model_version": version, "first_tasks": [todo[i][0] for i in order[:20]],
                "problems": report.counts()}


def control_names(config: str | None) -> tuple[str, str]:
    """(name, toName) of the first RectangleLabels control of a Label Studio label config."""
    import xml.etree.ElementTree as ET

    if config:
        try:
            control = next(ET.fromstring(config).iter("RectangleLabels"), None)
        except ET.ParseError:
            control = None
        if control is not None and control.get("name") and control.get("toName"):
            return control.get("name"), control.get("toName")
    return FROM_NAME, TO_NAME


def to_prediction(d: Detections, class_map: dict[str, str] | None = None,
                  names: tuple[str, str] = (FROM_NAME, TO_NAME)) -> dict:
    """Label Studio prediction content for one image's detections: {"result": [...], "score": mean box score}.
    class_map renames the model's classes to the project's labels (e.g. {"Bus": "bus"})."""
    class_map = class_map or {}
    results = [box_result(Box(class_map.get(label, label), *xyxy), d.width, d.height, score, names)
               for xyxy, score, label in zip(d.boxes, d.scores, d.labels)]
    return {"result": results, "score": float(np.mean(d.scores)) if d.scores else 0.0}
