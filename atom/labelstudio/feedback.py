"""Serving feedback: what operators flag in production, turned into Label Studio tasks to correct.

The feedback format (JSON Lines, one verdict per line; the serving layer writes it):

    {"model": "atom-vehicles/3",          the registered version that served the detection (or "bundle_sha256":
                                          the served bundle's model.onnx sha256, as in its manifest)
     "image": "/srv/frames/n1.jpg",       the image it ran on (absolute, or relative to the feedback file)
     "verdict": "false_alarm",            false_alarm | missed | wrong_class
     "detection": {"box": [x0, y0, x1, y1], "label": "Car", "score": 0.81},   false_alarm, wrong_class: what the
                                          model said (pixels of the image)
     "correct": {"box": [x0, y0, x1, y1], "label": "Truck"},                  missed: the object the model missed;
                                          wrong_class: the right label (box optional: the detection's)
     "camera": "north", "time": "2026-12-08T10:00:00Z", "operator": "op17"}   optional, kept with the task

`atom label feedback FILE scene=NAME` copies the flagged images into the scene's folder (feedback/<batch>/), lets
the storage sync make their tasks, and gives each task the model's own predictions with the operators' verdicts
applied (false alarms removed, wrong classes relabeled, missed objects added) as a pre-annotation of version
`<model>:feedback`, so annotators confirm and correct instead of drawing from scratch. Each task carries the model
version and the feedback batch; `atom label pull` records the batches in the new dataset version's card, and a model
trained on it (`atom train ... init=NAME@ALIAS`) has them in its lineage.

A malformed line is reported with the file, the line and the reason, and the other lines go on.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path

from atom.data.report import ImportReport
from atom.errors import AtomError

VERDICTS = ("false_alarm", "missed", "wrong_class")
MATCH_IOU = 0.5  # a prediction is the flagged detection when they overlap this much with the same label


class FeedbackError(AtomError):
    """A feedback file cannot be used; the message names the file and the reason."""


@dataclass
class Verdict:
    where: str                 # file:line
    model: str | None
    bundle_sha256: str | None
    image: Path
    verdict: str
    detection: dict | None
    correct: dict | None
    extra: dict = field(default_factory=dict)


def _box(value, where: str, what: str) -> list[float]:
    try:
        x0, y0, x1, y1 = (float(v) for v in value)
    except (TypeError, ValueError):
        raise FeedbackError(f"{where}: {what}.box must be [x0, y0, x1, y1] in pixels, got {value!r}") from None
    if not (x1 > x0 and y1 > y0):
        raise FeedbackError(f"{where}: {what}.box {value!r} has no area (x1 > x0 and y1 > y0 are needed)")
    return [x0, y0, x1, y1]


def parse_line(record, where: str, base: Path) -> Verdict:
    if not isinstance(record, dict):
        raise FeedbackError(f"{where}: a feedback line is a JSON object")
    verdict = record.get("verdict")
    if verdict not in VERDICTS:
        raise FeedbackError(f"{where}: verdict {verdict!r} is not one of {', '.join(VERDICTS)}")
    if not record.get("model") and not record.get("bundle_sha256"):
        raise FeedbackError(f"{where}: name the model that served it: \"model\": NAME/VERSION or \"bundle_sha256\"")
    if not record.get("image"):
        raise FeedbackError(f"{where}: no \"image\"")
    image = Path(record["image"])
    image = (image if image.is_absolute() else base / image).resolve()
    if not image.is_file():
        raise FeedbackError(f"{where}: image {image} not found")
    detection, correct = record.get("detection"), record.get("correct")
    if verdict in ("false_alarm", "wrong_class"):
        if not isinstance(detection, dict) or not detection.get("label"):
            raise FeedbackError(f"{where}: a {verdict} names the model's detection: \"detection\": {{box, label}}")
        detection = {**detection, "box": _box(detection.get("box"), where, "detection")}
    if verdict in ("missed", "wrong_class"):
        if not isinstance(correct, dict) or not correct.get("label"):
            raise FeedbackError(f"{where}: a {verdict} gives the right answer: \"correct\": {{box, label}}")
        if verdict == "missed" or correct.get("box") is not None:
            correct = {**correct, "box": _box(correct.get("box"), where, "correct")}
    extra = {k: record[k] for k in ("camera", "time", "operator") if k in record}
    return Verdict(where, record.get("model"), record.get("bundle_sha256"), image, verdict, detection, correct, extra)


def read_feedback(path: Path, report: ImportReport) -> list[Verdict]:
    """The usable verdicts of a feedback file; each bad line is added to `report` (file:line and why)."""
    path = Path(path)
    try:
        lines = path.read_text().splitlines()
    except OSError as e:
        raise FeedbackError(f"{path}: cannot read the feedback file ({e})") from None
    verdicts = []
    for n, line in enumerate(lines, 1):
        if not line.strip():
            continue
        where = f"{path}:{n}"
        try:
            verdicts.append(parse_line(json.loads(line), where, path.parent))
        except json.JSONDecodeError as e:
            report.add("invalid_row", where, f"not JSON ({e.msg})")
        except FeedbackError as e:
            report.add("invalid_row", where, str(e).removeprefix(f"{where}: "))
    return verdicts


def _iou(a, b) -> float:
    ix = max(0.0, min(a[2], b[2]) - max(a[0], b[0]))
    iy = max(0.0, min(a[3], b[3]) - max(a[1], b[1]))
    inter = ix * iy
    union = (a[2] - a[0]) * (a[3] - a[1]) + (b[2] - b[0]) * (b[3] - b[1]) - inter
    return inter / union if union > 0 else 0.0


def apply_verdicts(boxes: list[list[float]], labels: list[str], scores: list[float | None],
                   verdicts: list[Verdict]) -> tuple[list[list[float]], list[str], list[float | None]]:
    """The model's boxes on one image with the operators' verdicts applied: a false alarm's matching prediction
    removed, a wrong class's relabeled, a missed object added (score None: the operator's, not the model's). A
    flagged detection that the model no longer predicts (e.g. below the pre-annotation threshold) is handled as
    far as it can be: a wrong class adds the corrected box, a false alarm has nothing to remove."""
    boxes, labels, scores = [list(b) for b in boxes], list(labels), list(scores)

    def matching(det: dict) -> int | None:
        best = max(((i, _iou(b, det["box"])) for i, b in enumerate(boxes) if labels[i] == det["label"]),
                   key=lambda t: t[1], default=(None, 0.0))
        return best[0] if best[1] >= MATCH_IOU else None

    for v in verdicts:
        if v.verdict == "false_alarm":
            i = matching(v.detection)
            if i is not None:
                del boxes[i], labels[i], scores[i]
        elif v.verdict == "wrong_class":
            i = matching(v.detection)
            box = v.correct.get("box") or v.detection["box"]
            if i is not None:
                boxes[i], labels[i], scores[i] = box, v.correct["label"], None
            else:
                boxes.append(box), labels.append(v.correct["label"]), scores.append(None)
        else:  # missed
            boxes.append(v.correct["box"]), labels.append(v.correct["label"]), scores.append(None)
    return boxes, labels, scores


def summary(verdicts: list[Verdict]) -> str:
    counts = {k: sum(v.verdict == k for v in verdicts) for k in VERDICTS}
    return ", ".join(f"{n} {k.replace('_', ' ')}" for k, n in counts.items() if n)
