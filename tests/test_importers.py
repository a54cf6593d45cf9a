"""Importers on all four formats, with the bad inputs each must report, and the dataset-version contract."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest

from atom.cli import main as cli
from atom.data import version as version_module
from atom.data.formats import read_source
from atom.data.version import DatasetError, open_version, write_version


def _images(sample_export: Path, n: int) -> list[Path]:
    return sorted((sample_export.parent / "images").glob("*.jpg"))[:n]


def _ls_task(i, image_url, results, **annotation):
    return {"id": i, "data": {"image": image_url},
            "annotations": [{"id": i, "result": results, "was_cancelled": False,
                             "updated_at": "2026-01-01T00:00:00Z", **annotation}]}


def _rect(label, x, y, w, h, rotation=0, with_size=True):
    r = {"type": "rectanglelabels", "value": {"x": x, "y": y, "width": w, "height": h, "rotation": rotation,
                                              "rectanglelabels": [label]}}
    if with_size:
        r.update(original_width=320, original_height=240)
    return r


# ------------------------------------------------------------------ Label Studio
def test_labelstudio_sample_imports_cleanly(sample_export, tmp_path):
    source = read_source("labelstudio", sample_export)
    version, new = write_version(source, tmp_path, "sample")
    card = version.card
    assert new and not source.report.problems
    assert sum(s["images"] for s in card["splits"].values()) == 60
    assert card["classes"] == ["bus", "car", "pedestrian"]
    tasks = json.loads(sample_export.read_text())
    assert sum(s["boxes"] for s in card["splits"].values()) == sum(len(t["annotations"][0]["result"]) for t in tasks)


def test_labelstudio_bad_inputs(sample_export, tmp_path):
    images = _images(sample_export, 8)
    root = sample_export.parent
    (root / "broken.jpg").write_bytes(b"not a jpeg at all")
    url = lambda p: f"/data/local-files/?d=images/{p.name}"  # noqa: E731
    tasks = [
        _ls_task(1, url(images[0]), [_rect("car", 10, 10, 20, 20, rotation=30)]),
        _ls_task(2, url(images[1]), [_rect("car", 10, 10, 20, 20, with_size=False)]),
        _ls_task(3, url(images[2]), [_rect("tram", 10, 10, 20, 20)]),
        _ls_task(4, "/data/local-files/?d=images/does-not-exist.jpg", [_rect("car", 1, 1, 5, 5)]),
        _ls_task(5, "/data/local-files/?d=broken.jpg", [_rect("car", 1, 1, 5, 5)]),
        _ls_task(6, "/data/local-files/?d=../../etc/passwd", [_rect("car", 1, 1, 5, 5)]),
        _ls_task(7, url(images[3]), []),  # empty annotation: a background image
        {**_ls_task(8, url(images[4]), [_rect("car", 1, 1, 5, 5)]),
         "annotations": [{"id": 8, "result": [_rect("car", 1, 1, 5, 5)], "was_cancelled": True}]},
        {"id": 9, "data": {"image": url(images[5])}, "annotations": [
            {"id": 91, "result": [_rect("bus", 1, 1, 5, 5)], "updated_at": "2026-01-01T00:00:00Z"},
            {"id": 92, "result": [_rect("car", 50, 50, 10, 10)], "updated_at": "2026-02-01T00:00:00Z"}]},
        _ls_task(10, "https://example.com/x.jpg", [_rect("car", 1, 1, 5, 5)]),
        _ls_task(11, url(images[6]), [_rect("car", 90, 90, 20, 20), _rect("car", 100, 50, 5, 5)]),
    ]
    export = root / "bad-export.json"
    export.write_text(json.dumps(tasks))
    source = read_source("labelstudio", export)
    version, _ = write_version(source, tmp_path, "bad", classes=["bus", "car", "pedestrian"])
    counts = source.report.counts()
    assert counts == {"annotation_conflict": 1, "clipped_box": 1, "corrupt_image": 1, "degenerate_box": 1,
                      "missing_image": 1, "outside_root": 1, "remote_image": 1, "rotated_box": 1,
                      "unknown_label": 1, "unlabeled_task": 1}
    assert all(p.file for p in source.report.problems)
    assert "broken.jpg" in source.report.of_kind("corrupt_image")[0].file
    coco = {s: version.coco(s) for s in ("train", "val", "test")}
    by_source = {im["source"]: (s, im) for s, c in coco.items() for im in c["images"]}
    assert len(by_source) == 6  # tasks 1, 2, 3, 7, 9, 11 keep their image

    def boxes_of(image):
        split, im = by_source[str(image)]
        return [(a["bbox"], a["category_id"]) for a in coco[split]["annotations"] if a["image_id"] == im["id"]]

    # rotated 30 deg around its top-left corner (32,24), 64x48 px: the enclosing box spans x 32-0.5*48 .. 32+cos*64
    (bbox, _), = boxes_of(images[0])
    assert bbox[0] == pytest.approx(32 - 48 * 0.5, abs=1e-2) and bbox[2] == pytest.approx(64 * 0.866 + 24, abs=1e-2)
    (bbox, _), = boxes_of(images[1])  # no original_width/height: size read from the file (320x240)
    assert bbox == pytest.approx([32, 24, 64, 48], abs=1e-3)
    assert boxes_of(images[2]) == [] and boxes_of(images[3]) == []
    (bbox, cat), = boxes_of(images[5])  # the later annotation (car at 50%) wins
    assert cat == 2 and bbox[0] == pytest.approx(160)
    (bbox, _), = boxes_of(images[6])  # clipped to the image; the box entirely outside is degenerate
    assert bbox[0] + bbox[2] == pytest.approx(320)


def test_labelstudio_tasks_of_one_image_are_one_sample(sample_export, tmp_path):
    image = _images(sample_export, 1)[0]
    url = f"/data/local-files/?d=images/{image.name}"
    tasks = [_ls_task(1, url, [_rect("bus", 1, 1, 5, 5)], updated_at="2026-03-01T00:00:00Z"),
             _ls_task(2, url, [_rect("car", 50, 50, 10, 10)], updated_at="2026-01-01T00:00:00Z"),
             {"id": 3, "data": {"image": url}, "annotations": []}]
    export = sample_export.parent / "twins-export.json"
    export.write_text(json.dumps(tasks))
    source = read_source("labelstudio", export)
    assert len(source.samples) == 1 and [b.label for b in source.samples[0].boxes] == ["bus"]  # the latest
    (conflict,) = source.report.problems
    assert conflict.kind == "annotation_conflict" and "tasks 2, 3" in conflict.file and "task 1" in conflict.reason


# ------------------------------------------------------------------ YOLO
def _yolo_tree(tmp_path: Path, images: list[Path], labels: list[str]) -> Path:
    root = tmp_path / "yolo"
    for split in ("train", "valid"):
        (root / split / "images").mkdir(parents=True)
        (root / split / "labels").mkdir(parents=True)
    for i, (image, text) in enumerate(zip(images, labels)):
        split = "train" if i < len(images) - 1 else "valid"
        shutil.copy(image, root / split / "images" / image.name)
        if text is not None:
            (root / split / "labels" / f"{image.stem}.txt").write_text(text)
    (root / "data.yaml").write_text("train: ../train/images\nval: ../valid/images\nnc: 2\nnames: ['car', 'bus']\n")
    return root


def test_yolo_with_bad_rows(sample_export, tmp_path):
    images = _images(sample_export, 4)
    root = _yolo_tree(tmp_path, images, [
        "0 0.5 0.5 0.2 0.2\n1 0.1 0.1 0.3 0.3\n",  # second box crosses the top-left corner: clipped
        "0 0.1 0.1 0.2 0.1 0.3 0.3 0.1 0.3\n7 0.5 0.5 0.1 0.1\nzero 0.5 0.5 0.1 0.1\n0 0.5 0.5 0 0.2\n",
        None,
        "1 0.5 0.5 0.4 0.4\n",
    ])
    source = read_source("yolo", root)
    version, _ = write_version(source, tmp_path / "datasets", "yolo")
    assert source.report.counts() == {"clipped_box": 1, "degenerate_box": 1, "invalid_row": 1,
                                      "missing_annotation": 1, "polygon_row": 1, "unknown_label": 1}
    assert any(":2" in p.file for p in source.report.of_kind("unknown_label"))  # file and line
    card = version.card
    assert card["classes"] == ["car", "bus"]
    assert card["splits"]["train"] == {"images": 3, "boxes": 2, "boxes_per_class": {"car": 1, "bus": 1}}
    assert card["splits"]["val"]["boxes"] == 1


def test_yolo_vehicles(shared_datasets, tmp_path):
    source = read_source("yolo", shared_datasets / "vehicles")
    version, _ = write_version(source, tmp_path, "vehicles")
    card = version.card
    assert {s: card["splits"][s]["images"] for s in ("train", "val", "test")} == {"train": 439, "val": 125, "test": 63}
    assert card["classes"] == ["Ambulance", "Bus", "Car", "Motorcycle", "Truck"]


# ------------------------------------------------------------------ Pascal VOC
def _voc_xml(filename, objects):
    objs = "".join(f"<object><name>{n}</name><bndbox><xmin>{a}</xmin><ymin>{b}</ymin><xmax>{c}</xmax>"
                   f"<ymax>{d}</ymax></bndbox></object>" for n, (a, b, c, d) in objects)
    return f"<annotation><filename>{filename}</filename>{objs}</annotation>"


def test_voc_with_bad_boxes(sample_export, tmp_path):
    root = tmp_path / "VOC"
    (root / "Annotations").mkdir(parents=True)
    (root / "JPEGImages").mkdir()
    images = _images(sample_export, 3)
    for image in images:
        shutil.copy(image, root / "JPEGImages" / image.name)
    (root / "Annotations" / "a.xml").write_text(_voc_xml(images[0].name, [("car", (10, 10, 50, 40)),
                                                                          ("bus", (60, 60, 60, 90))]))
    (root / "Annotations" / "b.xml").write_text(_voc_xml(images[1].name, [("car", (300, 200, 400, 260))]))
    (root / "Annotations" / "c.xml").write_text("<annotation><object>")  # truncated XML
    (root / "Annotations" / "d.xml").write_text(_voc_xml("gone.jpg", [("car", (1, 1, 5, 5))]))
    source = read_source("voc", tmp_path)  # a folder above the VOC root is accepted
    version, _ = write_version(source, tmp_path / "datasets", "voc")
    assert source.report.counts() == {"clipped_box": 1, "degenerate_box": 1, "invalid_row": 1, "missing_image": 1}
    assert sum(s["boxes"] for s in version.card["splits"].values()) == 2


def test_voc_bccd_reports_two_degenerate_boxes(shared_datasets, tmp_path):
    source = read_source("voc", shared_datasets / "bccd")
    version, _ = write_version(source, tmp_path, "bccd")
    degenerate = source.report.of_kind("degenerate_box")
    assert len(degenerate) == 2 and all("BloodImage" in p.file for p in degenerate)
    card = version.card
    assert sum(s["images"] for s in card["splits"].values()) == 364
    assert card["splits"]["test"]["images"] == 72  # the dataset's own ImageSets split is kept
    assert set(card["classes"]) == {"Platelets", "RBC", "WBC"}


# ------------------------------------------------------------------ COCO
def test_coco_file_and_split_folder(sample_export, tmp_path):
    images = _images(sample_export, 3)
    for image in images:
        shutil.copy(image, tmp_path / image.name)
    coco = {"categories": [{"id": 1, "name": "car"}, {"id": 2, "name": "bus"}],
            "images": [{"id": i, "file_name": p.name, "width": 320, "height": 240} for i, p in enumerate(images)],
            "annotations": [{"id": 1, "image_id": 0, "category_id": 1, "bbox": [10, 10, 30, 20]},
                            {"id": 2, "image_id": 1, "category_id": 9, "bbox": [10, 10, 30, 20]},
                            {"id": 3, "image_id": 5, "category_id": 1, "bbox": [10, 10, 30, 20]},
                            {"id": 4, "image_id": 2, "category_id": 2, "bbox": [10, 10]}]}
    (tmp_path / "train.json").write_text(json.dumps(coco))
    source = read_source("coco", tmp_path / "train.json")
    version, _ = write_version(source, tmp_path / "datasets", "coco")
    assert source.report.counts() == {"invalid_row": 2, "unknown_label": 1}
    assert sum(s["images"] for s in version.card["splits"].values()) == 3

    source = read_source("coco", tmp_path)  # a folder of split files: train.json is the train split
    version, _ = write_version(source, tmp_path / "datasets", "coco-split")
    assert version.card["splits"]["train"]["images"] == 3


# ------------------------------------------------------------------ the version contract
def test_same_content_same_fingerprint_and_no_new_version(sample_export, tmp_path):
    v1, new1 = write_version(read_source("labelstudio", sample_export), tmp_path, "s")
    v2, new2 = write_version(read_source("labelstudio", sample_export), tmp_path, "s")
    assert new1 and not new2 and v1.fingerprint == v2.fingerprint
    assert open_version(tmp_path, "s").root == v1.root
    assert len([p for p in (tmp_path / "s").iterdir() if p.is_dir()]) == 1


def test_interrupted_write_leaves_previous_version_intact(sample_export, tmp_path, monkeypatch):
    first, _ = write_version(read_source("labelstudio", sample_export), tmp_path, "s", classes=["car", "bus"])
    calls = {"n": 0}
    real_place = version_module._place

    def failing_place(src, dst, sha):  # the disk fills up half-way through copying images
        calls["n"] += 1
        if calls["n"] > 5:
            raise OSError(28, "No space left on device")
        real_place(src, dst, sha)

    monkeypatch.setattr(version_module, "_place", failing_place)
    with pytest.raises(OSError):
        write_version(read_source("labelstudio", sample_export), tmp_path, "s")
    assert open_version(tmp_path, "s").root == first.root
    assert sorted(p.name for p in (tmp_path / "s").iterdir()) == sorted([first.root.name, "latest"])


def test_a_version_does_not_change_when_its_source_image_is_overwritten(sample_export, tmp_path):
    source_dir = tmp_path / "source"
    shutil.copytree(sample_export.parent, source_dir)
    version, _ = write_version(read_source("labelstudio", source_dir / sample_export.name), tmp_path / "d", "s")
    image = version.coco("train")["images"][0]
    stored = version.root / image["file_name"]
    before = stored.read_bytes()
    Path(image["source"]).write_bytes(b"overwritten by the camera's next frame")  # in place: same inode
    assert stored.read_bytes() == before and version_module.sha256_file(stored) == image["sha256"]
    assert not stored.stat().st_mode & 0o222  # read-only: an edit in the version folder needs intent


def test_versions_get_the_umask_mode_not_mkdtemps_0700(sample_export, tmp_path):
    import os

    old = os.umask(0o022)
    try:
        version, _ = write_version(read_source("labelstudio", sample_export), tmp_path, "s")
    finally:
        os.umask(old)
    assert version.root.stat().st_mode & 0o777 == 0o755


def test_nothing_usable_is_an_error_and_cli_exits_nonzero(tmp_path, capsys):
    export = tmp_path / "tasks.json"
    export.write_text(json.dumps([_ls_task(1, "/data/local-files/?d=missing.jpg", [])]))
    with pytest.raises(DatasetError, match="no usable samples"):
        write_version(read_source("labelstudio", export), tmp_path / "d", "x")
    assert cli(["data", "import", "--format", "labelstudio", str(export), "--name", "x",
                "--datasets", str(tmp_path / "d")]) == 1
    assert "no usable samples" in capsys.readouterr().err
    assert not (tmp_path / "d" / "x" / "latest").exists()


def test_cli_import_prints_summary(sample_export, tmp_path, capsys):
    assert cli(["data", "import", "--format", "labelstudio", str(sample_export), "--name", "demo",
                "--datasets", str(tmp_path)]) == 0
    out = capsys.readouterr().out
    assert "dataset demo version" in out and "pedestrian" in out and "no problems found" in out
    with pytest.raises(SystemExit) as e:  # argparse rejects an unknown format before anything runs
        cli(["data", "import", "--format", "nope", str(sample_export), "--name", "x"])
    assert e.value.code == 2


def test_unknown_format_is_an_error(sample_export):
    with pytest.raises(DatasetError, match="unknown format"):
        read_source("pascal", sample_export)
