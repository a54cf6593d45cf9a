"""Privacy by default (atom/privacy.py): faces found and blurred before images leave the trusted zone, no face box
surviving in an exported sample; plates as the boxes of a registered model's classes."""

from __future__ import annotations

import json

import numpy as np
import pytest
from PIL import Image

from atom.cli import main as atom


@pytest.fixture(scope="module")
def portrait() -> Image.Image:
    """A real photograph with one face: NASA's portrait of Eileen Collins (public domain, shipped in scikit-image)."""
    from skimage import data

    return Image.fromarray(data.astronaut())


def sharpness(image: Image.Image, box) -> float:
    """Variance of the Laplacian inside a box: high where there are edges (eyes, mouth), low once blurred."""
    from scipy import ndimage

    x0, y0, x1, y1 = (int(v) for v in box)
    gray = np.asarray(image.convert("L"), np.float32)[y0:y1, x0:x1]
    return float(ndimage.laplace(gray).var())


def test_a_face_is_found_and_redacted_beyond_detection(portrait):
    from atom.privacy import PrivacyPolicy, Redactor, detect_faces

    (face, score), = detect_faces(portrait)
    assert score > 0.5 and 150 < face[0] < 220 and 30 < face[1] < 90  # Collins' face, top centre-left
    for mode in ("blur", "pixelate"):
        redacted, found = Redactor(PrivacyPolicy(mode=mode))(portrait)
        assert [kind for kind, _, _ in found] == ["face"]
        assert detect_faces(redacted) == []  # nothing the detector calls a face at the operating threshold
        if mode == "blur":
            assert sharpness(redacted, face) < 0.1 * sharpness(portrait, face)
        else:  # a few flat cells instead of ~10k distinct colours
            region = np.asarray(redacted.crop(tuple(int(v) for v in face))).reshape(-1, 3)
            assert len(np.unique(region, axis=0)) < 200
        outside = (0, 300, 150, 500)  # the flag and the suit: untouched
        assert np.array_equal(np.asarray(redacted.crop(outside)), np.asarray(portrait.convert("RGB").crop(outside)))


def write_face_video(path, portrait, seconds: int = 3, fps: int = 5):
    import av

    frame = np.asarray(portrait.resize((256, 256)))
    with av.open(str(path), "w") as container:
        stream = container.add_stream("mpeg4", rate=fps)
        stream.width, stream.height, stream.pix_fmt, stream.bit_rate = 256, 256, "yuv420p", 4_000_000
        for i in range(seconds * fps):
            shifted = np.roll(frame, i * 12, axis=1)  # the camera pans: every sampled frame differs
            for packet in stream.encode(av.VideoFrame.from_ndarray(shifted, format="rgb24")):
                container.mux(packet)
        for packet in stream.encode():
            container.mux(packet)
    return path


def test_no_face_survives_in_frames_written_with_redact(portrait, tmp_path):
    from atom.privacy import detect_faces

    video = write_face_video(tmp_path / "lobby.mkv", portrait)
    plain, redacted = tmp_path / "plain", tmp_path / "redacted"
    for out, extra in ((plain, []), (redacted, ["--redact"])):
        assert atom(["data", "frames", str(video), "--out", str(out), "--every", "1s", "--no-progress",
                     *extra]) == 0
    plain_lines = [json.loads(x) for x in (plain / "frames.jsonl").read_text().splitlines()]
    lines = [json.loads(x) for x in (redacted / "frames.jsonl").read_text().splitlines()]
    assert len(lines) == len(plain_lines) == 3
    for before, after in zip(plain_lines, lines):
        assert detect_faces(Image.open(plain / before["image"]))  # the face is there without --redact
        assert [r["kind"] for r in after["redacted"]] == ["face"]
        assert detect_faces(Image.open(redacted / after["image"])) == []
    report = json.loads((redacted / "frames-report.json").read_text())
    assert report["redaction"]["faces"]["threshold"] == 0.2 and "not redacted" in report["redaction"]["plates"]
    assert json.loads((plain / "frames-report.json").read_text())["redaction"].startswith("none")


def test_plates_are_the_boxes_of_a_registered_models_classes(trained, portrait):
    """No plate detector ships in a package: a registered ATOM model's classes stand in (here the sample model's
    `car`, threshold 0, so that the tiny model's boxes count)."""
    from atom import tracking
    from atom.inference import predict_images
    from atom.privacy import PrivacyPolicy, Redactor

    tracking.configure(trained["cfg"].paths.output_dir)
    ref = tracking.resolve_model(f"{trained['result']['model_name']}@candidate")
    detector = tracking.load_detector(ref)
    policy = PrivacyPolicy(faces=False, plates_model=ref.uri, plate_classes=("car",), plate_threshold=0.0)
    redactor = Redactor(policy, detector)
    found = redactor.find(portrait)
    path = "/tmp/atom-privacy-portrait.png"
    portrait.save(path)
    (expected,) = predict_images(detector, [path])
    assert len(found) == sum(label == "car" for label in expected.labels) > 0
    assert all(kind == "plate" for kind, _, _ in found)
    assert policy.describe()["plates"] == {"model": ref.uri, "classes": ["car"], "threshold": 0.0}


def test_prediction_grids_logged_to_mlflow_have_faces_redacted(portrait, tmp_path):
    from atom.data.source import Box, Sample, Source
    from atom.data.version import write_version
    from atom.evaluation import prediction_grid
    from atom.privacy import PrivacyPolicy, Redactor, detect_faces

    path = tmp_path / "collins.jpg"
    portrait.save(path, quality=95)
    version, _ = write_version(Source([Sample(path, [Box("person", 150, 30, 300, 200)], "val")], ["person"]),
                               tmp_path / "datasets", "portraits")
    grid = Image.open(prediction_grid(version, "val", [], ["person"], tmp_path / "grid.jpg"))
    raw = Image.open(prediction_grid(version, "val", [], ["person"], tmp_path / "raw.jpg",
                                     redactor=Redactor(PrivacyPolicy(faces=False))))
    (face, _), = detect_faces(raw)  # the same grid without redaction shows the face, there
    assert sharpness(grid, face) < 0.1 * sharpness(raw, face)
    assert detect_faces(grid) == []


def test_a_dataset_export_leaves_with_faces_redacted_and_says_how(portrait, tmp_path, capsys):
    from atom.checksums import sha256_file
    from atom.data.source import Box, Sample, Source
    from atom.data.version import write_version
    from atom.privacy import detect_faces

    path = tmp_path / "collins.jpg"
    portrait.save(path, quality=95)
    version, _ = write_version(Source([Sample(path, [Box("person", 150, 30, 300, 200)], "train")], ["person"]),
                               tmp_path / "datasets", "portraits")
    out = tmp_path / "export"
    assert atom(["data", "export", "portraits", "--out", str(out), "--datasets", str(tmp_path / "datasets")]) == 0
    coco = json.loads((out / "annotations" / "train.json").read_text())
    (image,) = coco["images"]
    assert coco["annotations"][0]["bbox"] == version.coco("train")["annotations"][0]["bbox"]
    assert detect_faces(Image.open(out / image["file_name"])) == []
    assert sha256_file(out / image["file_name"]) == image["sha256"]  # the exported bytes, not the version's
    card = json.loads((out / "card.json").read_text())
    assert card["exported"]["redacted_boxes"] == 1 and card["exported"]["redaction"]["faces"]["threshold"] == 0.2
    assert detect_faces(Image.open(version.root / image["file_name"]))  # the version itself is untouched
    capsys.readouterr()
    assert atom(["data", "export", "portraits", "--out", str(out), "--datasets", str(tmp_path / "datasets")]) == 1
    assert "not empty" in capsys.readouterr().err  # an earlier export is never overwritten
