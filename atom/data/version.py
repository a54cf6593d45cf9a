"""The dataset-version contract: an immutable folder that every importer writes and every recipe reads.

    datasets/<name>/<version>/            version = first 12 hex digits of the content fingerprint
        card.json                         classes, split sizes, boxes per class, source, fingerprint
        report.json                       the validation report of the import that made it
        annotations/{train,val,test}.json COCO detection JSON; file_name is relative to the version folder
        images/<split>/<file>
    datasets/<name>/latest                the newest version's id

A version is written to a temporary folder and renamed into place, so it is either whole or absent; writing the
same content again changes nothing. The fingerprint covers classes, splits, image bytes and boxes. Images are
copies (reflinks where the filesystem has them), read-only and checked against the hash recorded at import: a later
change to a source file cannot change a version.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import tempfile
import uuid
from collections import Counter
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path

from atom.checksums import sha256_file
from atom.data.report import ImportReport
from atom.errors import AtomError
from atom.data.source import SPLITS, Source

DEFAULT_SPLIT_RATIOS = (0.8, 0.1, 0.1)


class DatasetError(AtomError):
    """A dataset cannot be imported or read; the message names the file and the reason."""


@dataclass(frozen=True)
class DatasetVersion:
    root: Path

    @property
    def card(self) -> dict:
        return json.loads((self.root / "card.json").read_text())

    @property
    def classes(self) -> list[str]:
        return self.card["classes"]

    @property
    def fingerprint(self) -> str:
        return self.card["fingerprint"]

    @property
    def name(self) -> str:
        return self.card["name"]

    def annotations_file(self, split: str) -> Path:
        return self.root / "annotations" / f"{split}.json"

    def coco(self, split: str, classes: list[str] | None = None) -> dict:
        """A split as a COCO dict. `val+test` joins splits (image and box ids renumbered). `classes` restricts
        and orders the categories (category_id = position + 1): boxes of other classes are dropped, every image
        stays, so a detector of those classes sees the others as background."""
        parts = []
        for name in split.split("+"):
            path = self.annotations_file(name)
            if not path.exists():
                raise DatasetError(f"{path}: dataset version has no {name!r} split")
            parts.append(json.loads(path.read_text()))
        coco = parts[0] if len(parts) == 1 else _join(parts)
        return coco if classes is None else _restrict(coco, classes)

    def has_split(self, split: str) -> bool:
        return any(self.card["splits"].get(s, {}).get("images", 0) > 0 for s in split.split("+"))


def _join(parts: list[dict]) -> dict:
    out = {"images": [], "annotations": [], "categories": parts[0]["categories"]}
    for coco in parts:
        new_ids = {}
        for im in coco["images"]:
            new_ids[im["id"]] = len(out["images"]) + 1
            out["images"].append({**im, "id": new_ids[im["id"]]})
        for a in coco["annotations"]:
            out["annotations"].append({**a, "id": len(out["annotations"]) + 1, "image_id": new_ids[a["image_id"]]})
    return out


def _restrict(coco: dict, classes: list[str]) -> dict:
    by_name = {c["name"]: c["id"] for c in coco["categories"]}
    new_id = {by_name[c]: i + 1 for i, c in enumerate(classes) if c in by_name}
    return {"images": coco["images"],
            "categories": [{"id": i + 1, "name": c} for i, c in enumerate(classes)],
            "annotations": [{**a, "category_id": new_id[a["category_id"]]}
                            for a in coco["annotations"] if a["category_id"] in new_id]}


def open_version(datasets_dir: Path, name: str, version: str = "latest") -> DatasetVersion:
    """Find a dataset version by name and version id (or 'latest', or a fingerprint prefix)."""
    base = Path(datasets_dir) / name
    if version == "latest":
        pointer = base / "latest"
        if not pointer.exists():
            raise DatasetError(f"{pointer}: no dataset named {name!r} has been imported (try `atom data import`)")
        version = pointer.read_text().strip()
    matches = [p for p in base.glob(f"{version}*") if (p / "card.json").exists()] if base.exists() else []
    if len(matches) != 1:
        raise DatasetError(f"{base}: {'no' if not matches else 'ambiguous'} dataset version {version!r}")
    return DatasetVersion(matches[0])


def assign_split(key: str, ratios: tuple[float, float, float]) -> str:
    """Deterministic split from a stable key (the source file name): adding images never moves old ones."""
    u = int(hashlib.sha1(key.encode()).hexdigest()[:8], 16) / 2**32
    return "train" if u < ratios[0] else "val" if u < ratios[0] + ratios[1] else "test"


def read_image_size(path: Path) -> tuple[int, int]:
    from PIL import Image, ImageOps

    with Image.open(path) as im:
        im.load()  # decode fully: truncated files fail here, not during training
        # EXIF-rotated photos are used upright everywhere (training reads them through the same transpose).
        return ImageOps.exif_transpose(im).size


def _place(src: Path, dst: Path, sha: str) -> None:
    """Copy src to dst, read-only, and check it is still the image that was validated and hashed."""
    dst.parent.mkdir(parents=True, exist_ok=True)
    copy_file(src, dst)
    os.chmod(dst, 0o444)
    if sha256_file(dst) != sha:
        raise DatasetError(f"{src}: the file changed while it was being imported; import again")


def copy_file(src: Path, dst: Path) -> None:
    """A copy that shares no storage with src once either changes: a reflink (copy-on-write) where the filesystem
    supports it, else a plain copy. Never a hard link, which would let an edit of src change dst."""
    try:
        import fcntl

        with open(src, "rb") as fin, open(dst, "wb") as fout:
            fcntl.ioctl(fout.fileno(), 0x40049409, fin.fileno())  # FICLONE
        return
    except (OSError, ImportError):
        pass
    shutil.copyfile(src, dst)


def make_readable(path: Path) -> None:
    """A folder made by mkdtemp is 0700 and keeps that mode through the rename into place: give it the mode
    any other new folder would get (0777 less the process's umask)."""
    umask = os.umask(0)
    os.umask(umask)
    os.chmod(path, 0o777 & ~umask)


def _validated_boxes(sample, width, height, class_ids, report: ImportReport) -> list[tuple[int, list[float]]]:
    boxes = []
    where = sample.origin or sample.image
    for box in sample.boxes:
        if box.label not in class_ids:
            report.add("unknown_label", where, f"label {box.label!r} is not in the class list")
            continue
        if box.rotation:
            report.add("rotated_box", where, f"rotation {box.rotation:g} deg -> enclosing axis-aligned box")
        x0, y0, x1, y1 = box.to_pixels(width, height)
        cx0, cy0 = min(max(x0, 0.0), width), min(max(y0, 0.0), height)
        cx1, cy1 = min(max(x1, 0.0), width), min(max(y1, 0.0), height)
        if cx1 - cx0 < 1 or cy1 - cy0 < 1:
            report.add("degenerate_box", where, f"box {[round(v, 1) for v in (x0, y0, x1, y1)]} has zero size "
                       f"or lies outside the {width}x{height} image {sample.image.name}")
            continue
        if (cx0, cy0, cx1, cy1) != (x0, y0, x1, y1):
            report.add("clipped_box", where, f"box {[round(v, 1) for v in (x0, y0, x1, y1)]} "
                       f"clipped to the {width}x{height} image {sample.image.name}")
        boxes.append((class_ids[box.label], [round(v, 3) for v in (cx0, cy0, cx1, cy1)]))
    return boxes


def write_version(
    source: Source,
    datasets_dir: Path,
    name: str,
    classes: list[str] | None = None,
    split_ratios: tuple[float, float, float] = DEFAULT_SPLIT_RATIOS,
) -> tuple[DatasetVersion, bool]:
    """Validate a source and write it as a dataset version. Returns the version and whether it is new.

    Bad samples and boxes are reported in `source.report` and skipped; raises DatasetError when nothing usable
    is left. Nothing already stored is touched until the new version is complete.
    """
    report = source.report
    classes = list(classes or source.classes or sorted({b.label for s in source.samples for b in s.boxes}))
    class_ids = {c: i + 1 for i, c in enumerate(classes)}

    rows = []  # (split, sample, sha, width, height, boxes)
    for sample in source.samples:
        if not sample.image.exists():
            report.add("missing_image", sample.image, "image file not found")
            continue
        try:
            width, height = read_image_size(sample.image)
        except Exception as e:  # PIL raises several types for bad files
            report.add("corrupt_image", sample.image, f"cannot decode image: {e}")
            continue
        split = sample.split or assign_split(sample.image.name, split_ratios)
        boxes = _validated_boxes(sample, width, height, class_ids, report)
        rows.append((split, sample, sha256_file(sample.image), width, height, boxes))
    if not rows:
        raise DatasetError(f"{source.description or name}: no usable samples left after validation "
                           f"(problems: {report.counts()})")

    # The same image twice in a source would be counted twice by the evaluator: keep its first occurrence.
    rows = list({r[2]: r for r in reversed(rows)}.values())[::-1]
    rows.sort(key=lambda r: (SPLITS.index(r[0]), r[1].image.name, r[2]))
    fingerprint = hashlib.sha256(json.dumps(
        {"classes": classes, "samples": sorted([r[0], r[2], r[3], r[4], r[5]] for r in rows)},
        separators=(",", ":"),
    ).encode()).hexdigest()
    version_id = fingerprint[:12]
    base = Path(datasets_dir) / name
    final = base / version_id
    if (final / "card.json").exists():
        _point_latest(base, version_id)
        return DatasetVersion(final), False

    base.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=".incoming-", dir=base))
    try:
        cocos = {s: {"images": [], "annotations": [], "categories": [
            {"id": i, "name": c} for c, i in class_ids.items()]} for s in SPLITS}
        used_names: set[str] = set()
        for split, sample, sha, width, height, boxes in rows:
            rel = f"images/{split}/{sample.image.name}"
            if rel in used_names:  # same file name from different source folders
                rel = f"images/{split}/{sample.image.stem}-{sha[:8]}{sample.image.suffix}"
            used_names.add(rel)
            _place(sample.image, tmp / rel, sha)
            coco = cocos[split]
            image_id = len(coco["images"]) + 1
            coco["images"].append({"id": image_id, "file_name": rel, "width": width, "height": height,
                                   "sha256": sha, "source": str(sample.image)})
            for cid, (x0, y0, x1, y1) in boxes:
                coco["annotations"].append({
                    "id": len(coco["annotations"]) + 1, "image_id": image_id, "category_id": cid,
                    "bbox": [x0, y0, round(x1 - x0, 3), round(y1 - y0, 3)],
                    "area": round((x1 - x0) * (y1 - y0), 3), "iscrowd": 0})
        (tmp / "annotations").mkdir()
        for split, coco in cocos.items():
            (tmp / "annotations" / f"{split}.json").write_text(json.dumps(coco))
        card = {
            "name": name,
            "version": version_id,
            "fingerprint": fingerprint,
            "classes": classes,
            "splits": {s: {"images": len(c["images"]), "boxes": len(c["annotations"]),
                           "boxes_per_class": _per_class(c, classes)} for s, c in cocos.items()},
            "source": source.description,
            **({"provenance": source.provenance} if source.provenance else {}),
            "problems": report.counts(),
            "created": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        }
        (tmp / "card.json").write_text(json.dumps(card, indent=1))
        (tmp / "report.json").write_text(report.to_json())
        make_readable(tmp)
        os.rename(tmp, final)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    _point_latest(base, version_id)
    return DatasetVersion(final), True


def _per_class(coco: dict, classes: list[str]) -> dict[str, int]:
    counts = Counter(a["category_id"] for a in coco["annotations"])
    return {c: counts.get(i + 1, 0) for i, c in enumerate(classes)}


def _point_latest(base: Path, version_id: str) -> None:
    tmp = base / f".latest-{uuid.uuid4().hex}"
    tmp.write_text(version_id + "\n")
    os.replace(tmp, base / "latest")
