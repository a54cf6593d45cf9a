"""Source-format readers. Each turns a path into a `Source`; validation and writing are shared (version.py).

FORMATS maps the names accepted by `atom data import --format` to readers; an unknown name is an error.
"""

from __future__ import annotations

import json
import xml.etree.ElementTree as ET
from pathlib import Path
from typing import Callable
from urllib.parse import parse_qs, unquote, urlparse

import yaml

from atom.data.report import ImportReport
from atom.data.source import Box, Sample, Source, normalize_split
from atom.data.version import DatasetError

IMAGE_SUFFIXES = {".jpg", ".jpeg", ".png", ".bmp", ".webp"}


# ---------------------------------------------------------------- YOLO: data.yaml + images/ + labels/*.txt
def read_yolo(path: Path, **_) -> Source:
    path = Path(path)
    data_yaml = path / "data.yaml" if path.is_dir() else path
    if not data_yaml.exists():
        raise DatasetError(f"{data_yaml}: YOLO dataset needs a data.yaml with 'names' and split folders")
    spec = yaml.safe_load(data_yaml.read_text()) or {}
    names = spec.get("names")
    if isinstance(names, dict):  # Ultralytics also allows {0: name, ...}
        names = [names[k] for k in sorted(names)]
    if not names:
        raise DatasetError(f"{data_yaml}: no 'names' list")
    root = data_yaml.parent / (spec.get("path") or ".")
    report = ImportReport()
    samples = []
    for split_key in ("train", "val", "test"):
        if not spec.get(split_key):
            continue
        image_dir = (root / spec[split_key]).resolve()
        if not image_dir.is_dir():
            # Roboflow exports say ../train/images while the folder sits beside data.yaml.
            image_dir = (root / Path(spec[split_key]).as_posix().lstrip("./")).resolve()
        if not image_dir.is_dir():
            raise DatasetError(f"{data_yaml}: split {split_key!r} folder {spec[split_key]!r} not found")
        label_dir = image_dir.parent / "labels" if image_dir.name == "images" else image_dir
        for image in sorted(p for p in image_dir.iterdir() if p.suffix.lower() in IMAGE_SUFFIXES):
            label_file = label_dir / f"{image.stem}.txt"
            samples.append(Sample(image, _read_yolo_labels(label_file, names, report), normalize_split(split_key),
                                  str(label_file)))
    return Source(samples, list(names), report, f"yolo:{data_yaml}")


def _read_yolo_labels(label_file: Path, names: list[str], report: ImportReport) -> list[Box]:
    if not label_file.exists():
        report.add("missing_annotation", label_file, "no label file for this image")
        return []
    boxes = []
    for n, line in enumerate(label_file.read_text().splitlines(), 1):
        parts = line.split()
        if not parts:
            continue
        where = f"{label_file}:{n}"
        if len(parts) > 5:
            report.add("polygon_row", where, f"{len(parts) - 1} coordinates (segmentation polygon), expected 4")
            continue
        try:
            cls, cx, cy, w, h = int(parts[0]), *map(float, parts[1:])
        except ValueError:
            report.add("invalid_row", where, f"cannot parse {line!r} as 'class cx cy w h'")
            continue
        if not 0 <= cls < len(names):
            report.add("unknown_label", where, f"class index {cls} outside 0..{len(names) - 1}")
            continue
        boxes.append(Box(names[cls], cx - w / 2, cy - h / 2, cx + w / 2, cy + h / 2, normalized=True))
    return boxes


# ---------------------------------------------------------------- Pascal VOC: Annotations/*.xml
def read_voc(path: Path, **_) -> Source:
    path = Path(path)
    # Accept the dataset root or a folder above it (BCCD ships as <repo>/BCCD/{Annotations,JPEGImages,...}).
    candidates = [path, *sorted(p.parent for p in path.glob("*/Annotations"))]
    root = next((p for p in candidates if (p / "Annotations").is_dir()), None)
    if root is None:
        raise DatasetError(f"{path}: Pascal VOC dataset needs an Annotations/ folder")
    splits = {}
    for split in ("train", "val", "test"):
        listing = root / "ImageSets" / "Main" / f"{split}.txt"
        if listing.exists():
            splits.update({line.strip(): split for line in listing.read_text().split() if line.strip()})
    report = ImportReport()
    samples = []
    for xml_file in sorted((root / "Annotations").glob("*.xml")):
        try:
            tree = ET.parse(xml_file).getroot()
            filename = tree.findtext("filename") or f"{xml_file.stem}.jpg"
        except ET.ParseError as e:
            report.add("invalid_row", xml_file, f"cannot parse XML: {e}")
            continue
        boxes = []
        for obj in tree.iter("object"):
            bb = obj.find("bndbox")
            try:
                coords = [float(bb.findtext(k)) for k in ("xmin", "ymin", "xmax", "ymax")]
            except (AttributeError, TypeError, ValueError):
                report.add("invalid_row", xml_file, f"object {obj.findtext('name')!r} has no valid bndbox")
                continue
            # VOC pixel indices are 1-based and inclusive; keep them as given (BCCD and most tools do).
            boxes.append(Box((obj.findtext("name") or "").strip(), *coords))
        samples.append(Sample(root / "JPEGImages" / filename, boxes, splits.get(xml_file.stem), str(xml_file)))
    if splits:  # images listed in a split file but without annotation are reported, not silently lost
        for stem in sorted(set(splits) - {Path(s.image).stem for s in samples}):
            report.add("missing_split_file", root / "Annotations" / f"{stem}.xml", "listed in ImageSets/Main")
    return Source(samples, None, report, f"voc:{root}")


# ---------------------------------------------------------------- COCO JSON
def read_coco(path: Path, **_) -> Source:
    """A COCO JSON file (split assigned later), or a folder of split files: {train,val,test}.json or
    <split>/_annotations.coco.json (Roboflow)."""
    path = Path(path)
    if path.is_file():
        files = {None: path}
    else:
        files = {}
        for split in ("train", "val", "valid", "test"):
            for candidate in (path / f"{split}.json", path / split / "_annotations.coco.json",
                              path / "annotations" / f"instances_{split}.json"):
                if candidate.exists():
                    files[normalize_split(split)] = candidate
        if not files:
            raise DatasetError(f"{path}: no COCO JSON found (a .json file, or train/val/test split files)")
    report = ImportReport()
    samples, classes = [], None
    for split, file in files.items():
        try:
            coco = json.loads(file.read_text())
            cats = {c["id"]: c["name"] for c in coco["categories"]}
            images = {im["id"]: im for im in coco["images"]}
        except (json.JSONDecodeError, KeyError, TypeError) as e:
            raise DatasetError(f"{file}: not a COCO detection file ({e})") from None
        names = [cats[k] for k in sorted(cats)]
        if classes is None:
            classes = names
        elif names != classes:
            raise DatasetError(f"{file}: categories {names} differ from the other split files' {classes}")
        boxes = {i: [] for i in images}
        for ann in coco.get("annotations", []):
            try:
                x, y, w, h = map(float, ann["bbox"])
                image_id, cat = ann["image_id"], ann["category_id"]
            except (KeyError, TypeError, ValueError):
                report.add("invalid_row", file, f"annotation {ann.get('id')!r} has no valid bbox")
                continue
            if image_id not in boxes:
                report.add("invalid_row", file, f"annotation {ann.get('id')!r} refers to unknown image {image_id!r}")
            elif cat not in cats:
                report.add("unknown_label", file, f"annotation {ann.get('id')!r}: category id {cat!r} not declared")
            else:
                boxes[image_id].append(Box(cats[cat], x, y, x + w, y + h))
        for image_id, im in images.items():
            samples.append(Sample(file.parent / im["file_name"], boxes[image_id], split, f"{file}#image={image_id}"))
    return Source(samples, classes, report, f"coco:{path}")


# ---------------------------------------------------------------- Label Studio JSON export
def read_labelstudio(path: Path, images_root: Path | None = None, origin: str | None = None, **_) -> Source:
    """A Label Studio JSON export (a list of tasks). Image URLs resolve against `images_root` (the local-files
    document root), by default the export's folder. Tasks of one image are one sample (a storage sync can make a
    second task for an image): among all their submitted, non-cancelled annotations the latest wins and the others
    are reported as conflicts. Problems name `origin` (e.g. the project) and the task, else the file and task."""
    path = Path(path)
    try:
        tasks = json.loads(path.read_text())
    except (OSError, json.JSONDecodeError) as e:
        raise DatasetError(f"{path}: cannot read Label Studio JSON export ({e})") from None
    if not isinstance(tasks, list):
        raise DatasetError(f"{path}: a Label Studio JSON export is a list of tasks")
    root = Path(images_root or path.parent).resolve()
    report = ImportReport()
    by_image: dict[Path, list[tuple[dict, str]]] = {}
    for task in tasks:
        where = f"{origin} task {task.get('id')}" if origin else f"{path}#task={task.get('id')}"
        image = resolve_task_image(task.get("data", {}), root, where, report)
        if image is not None:
            by_image.setdefault(image, []).append((task, where))
    samples, feedback = [], set()
    for image, entries in by_image.items():
        where = entries[0][1] if len(entries) == 1 else f"{entries[0][1]} (and tasks " \
            f"{', '.join(str(t.get('id')) for t, _ in entries[1:])} of the same image)"
        annotations = [(a, t.get("id")) for t, _ in entries for a in t.get("annotations", [])
                       if not a.get("was_cancelled")]
        if not annotations:
            report.add("unlabeled_task", where, "no submitted, non-cancelled annotation")
            continue
        chosen, task_id = max(annotations, key=lambda at: (at[0].get("updated_at") or at[0].get("created_at") or "",
                                                           at[0].get("id") or 0))
        if len(annotations) > 1:
            report.add("annotation_conflict", where, f"{len(annotations)} annotations; using the latest "
                       f"(annotation {chosen.get('id')} of task {task_id})")
        boxes = []
        for result in chosen.get("result", []):
            if result.get("type") != "rectanglelabels":
                continue
            v = result.get("value", {})
            try:
                label = v["rectanglelabels"][0]
                x, y, w, h = (float(v[k]) / 100 for k in ("x", "y", "width", "height"))
            except (KeyError, IndexError, TypeError, ValueError):
                report.add("invalid_row", where, f"result {result.get('id')!r} is not a valid rectangle")
                continue
            # Percent coordinates: to_pixels scales by the real image size, then rotates in pixel space.
            boxes.append(Box(label, x, y, x + w, y + h, normalized=True, rotation=float(v.get("rotation") or 0)))
        samples.append(Sample(image, boxes, None, where))
        feedback.update(t["data"]["feedback_batch"] for t, _ in entries if t.get("data", {}).get("feedback_batch"))
    provenance = {"feedback_batches": sorted(feedback)} if feedback else {}
    return Source(samples, None, report, f"labelstudio:{origin or path}", provenance)


def resolve_task_image(data: dict, root: Path, where: str, report: ImportReport) -> Path | None:
    url = data.get("image") or next((v for v in data.values() if isinstance(v, str)), None)
    if not url:
        report.add("missing_image", where, "task has no image URL in its data")
        return None
    parsed = urlparse(url)
    if parsed.scheme in ("http", "https", "s3", "gs"):
        report.add("remote_image", where, f"{url} is not a local file")
        return None
    if parsed.path.startswith("/data/local-files"):
        rel = unquote(parse_qs(parsed.query).get("d", [""])[0])
    elif parsed.path.startswith("/data/"):
        rel = unquote(parsed.path[len("/data/"):])  # uploads live under <root>/upload/...
    else:
        rel = unquote(url)
    image = (root / rel).resolve()
    if not image.is_relative_to(root):
        report.add("outside_root", where, f"{url} resolves outside the allowed root {root}")
        return None
    return image


FORMATS: dict[str, Callable[..., Source]] = {
    "yolo": read_yolo,
    "voc": read_voc,
    "coco": read_coco,
    "labelstudio": read_labelstudio,
}


def read_source(fmt: str, path: Path, **options) -> Source:
    if fmt not in FORMATS:
        raise DatasetError(f"unknown format {fmt!r}; choose one of {sorted(FORMATS)}")
    if not Path(path).exists():
        raise DatasetError(f"{path}: no such file or folder")
    return FORMATS[fmt](Path(path), **options)
