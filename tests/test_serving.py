"""The serving handoff: registered versions stored without pickles, the torch-free bundle runtime (atom.runtime)
and the registered model's python_function flavour, which serves through it."""

from __future__ import annotations

import base64
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from atom import PROJECT_ROOT

pytestmark = pytest.mark.slow

# Run first in a child process: every module of the training stack fails to import there.
BLOCK_TRAINING_STACK = """
import sys
BLOCKED = {"torch", "torchvision", "timm", "pytorch_lightning", "lightning", "cv2", "albumentations", "hydra"}
class _Blocked:
    def find_spec(self, name, path=None, target=None):
        if name.split(".")[0] in BLOCKED:
            raise ModuleNotFoundError(f"{name} is blocked: serving must not need the training stack", name=name)
sys.meta_path.insert(0, _Blocked())
"""


def without_training_stack(tmp_path: Path) -> dict:
    """An environment whose Python processes cannot import the training stack (a sitecustomize on PYTHONPATH)."""
    folder = tmp_path / "blocker"
    folder.mkdir(exist_ok=True)
    (folder / "sitecustomize.py").write_text(BLOCK_TRAINING_STACK)
    return {**os.environ, "PYTHONPATH": os.pathsep.join([str(folder), str(PROJECT_ROOT)])}


@pytest.fixture(scope="module")
def served(trained, project):
    """The tiny trained version, exported: (ModelRef, bundle folder)."""
    from atom import tracking
    from recipes import compose
    from recipes.export import export

    name = trained["result"]["model_name"]
    out = export(compose("export", [f"paths.datasets={project['datasets']}", f"paths.output_dir={project['outputs']}",
                                    f"model={name}@candidate"]))
    tracking.configure(project["outputs"])
    return tracking.resolve_model(f"{name}@candidate"), Path(out["bundle"])


def _val_images(project, n: int | None = None) -> list[Path]:
    version = project["version"]
    return [version.root / im["file_name"] for im in version.coco("val")["images"][:n]]


def test_a_registered_version_is_safetensors_and_a_spec_with_the_bundle_it_serves(served, tmp_path):
    import mlflow.artifacts
    from mlflow.models import Model

    ref, _ = served
    path = Path(mlflow.artifacts.download_artifacts(artifact_uri=ref.uri, dst_path=str(tmp_path)))
    files = {p.relative_to(path).as_posix() for p in path.rglob("*") if p.is_file()}
    assert {"MLmodel", "weights.safetensors", "spec.json", "bundles/onnx/manifest.json", "bundles/onnx/model.onnx"} \
        <= files
    assert not [f for f in files if f.endswith((".pth", ".pt", ".pkl", ".pickle"))]
    flavors = Model.load(str(path / "MLmodel")).flavors
    assert flavors["atom"]["weights"] == "weights.safetensors"
    assert flavors["python_function"]["loader_module"] == "atom.runtime.pyfunc"


def _register_pickled(model, project, name: str):
    """A version in the format before safetensors: the mlflow.pytorch flavour, a pickled module."""
    import mlflow
    import mlflow.pytorch

    from atom import tracking

    tracking.configure(project["outputs"])
    with mlflow.start_run(experiment_id=tracking.ensure_experiment("legacy", project["outputs"])):
        info = mlflow.pytorch.log_model(model, name="detector", serialization_format="pickle",
                                        pip_requirements=["torch"])
    mv = mlflow.register_model(info.model_uri, name)
    return tracking.resolve_model(f"{name}/{mv.version}")


class Payload:
    """Unpickling this runs Path.touch(marker): what a tampered model file could do."""

    def __init__(self, marker: Path):
        self.marker = marker

    def __reduce__(self):
        return Path.touch, (self.marker,)


def test_a_tampered_pickle_is_not_executed_on_the_default_path(project, tmp_path, monkeypatch):
    import torch

    from atom import tracking
    from atom.errors import RegistryError

    monkeypatch.delenv("ATOM_ALLOW_PICKLE", raising=False)
    marker = tmp_path / "code-ran"
    model = torch.nn.Linear(2, 2)
    model.payload = Payload(marker)  # pickled with the module
    ref = _register_pickled(model, project, "tampered")
    assert not marker.exists()
    with pytest.raises(RegistryError, match="old pickle format.*ATOM_ALLOW_PICKLE=1"):
        tracking.load_detector(ref)
    assert not marker.exists()
    monkeypatch.setenv("ATOM_ALLOW_PICKLE", "1")  # the payload is live: the opt-in does run it
    with pytest.warns(UserWarning, match="pickled"):
        tracking.load_detector(ref)
    assert marker.exists()


def test_an_old_pickled_version_loads_behind_the_opt_in_with_a_warning(trained, project, monkeypatch):
    import torch

    from atom import tracking
    from atom.errors import RegistryError

    tracking.configure(project["outputs"])
    detector = tracking.load_detector(tracking.resolve_model(f"{trained['result']['model_name']}@candidate"))
    ref = _register_pickled(detector, project, "legacy")
    monkeypatch.delenv("ATOM_ALLOW_PICKLE", raising=False)
    with pytest.raises(RegistryError):
        tracking.load_detector(ref)
    monkeypatch.setenv("ATOM_ALLOW_PICKLE", "1")
    with pytest.warns(UserWarning, match="pickled"):
        loaded = tracking.load_detector(ref)
    x = torch.rand(1, 3, detector.spec.input_size, detector.spec.input_size) * 255
    with torch.no_grad():
        assert all(torch.equal(a, b) for a, b in zip(detector(x), loaded(x)))


RUN_BUNDLE = """
import json, sys
from atom.runtime import Bundle
bundle = Bundle(sys.argv[1])
out = [{"boxes": d.boxes.tolist(), "scores": d.scores.tolist(), "labels": d.labels.tolist()}
       for d in bundle.detect_files(sys.argv[3:])]
heavy = sorted(m for m in ("torch", "cv2", "timm", "mlflow") if m in sys.modules)
open(sys.argv[2], "w").write(json.dumps({"detections": out, "heavy": heavy}))
"""


def test_the_runtime_gives_the_models_detections_from_the_manifest_without_torch(served, project, tmp_path):
    """The bundle alone (manifest + ONNX Runtime + numpy) detects what PyTorch does, in original pixels."""
    from atom import tracking
    from atom.evaluation import coco_evaluate, predict_split, to_coco_results

    ref, bundle = served
    version = project["version"]
    images = version.coco("val")["images"]
    out = tmp_path / "detections.json"
    run = subprocess.run([sys.executable, "-c", RUN_BUNDLE, str(bundle), str(out),
                          *[str(version.root / im["file_name"]) for im in images]],
                         env=without_training_stack(tmp_path), capture_output=True, text=True, cwd=tmp_path)
    assert run.returncode == 0, run.stderr[-3000:]
    result = json.loads(out.read_text())
    assert result["heavy"] == []
    runtime = [r for im, d in zip(images, result["detections"])
               for r in to_coco_results(im["id"], {k: np.asarray(v) for k, v in d.items()})]
    detector = tracking.load_detector(ref)
    pytorch = predict_split(detector, detector.spec, version, "val")
    # Each of PyTorch's 5 best detections per image is found by the runtime: same class, IoU >= 0.9, score within
    # 0.02 (the runtime's bilinear resize differs from OpenCV's by at most one grey level).
    for im in images:
        found = [r for r in runtime if r["image_id"] == im["id"]]
        best = sorted((r for r in pytorch if r["image_id"] == im["id"]), key=lambda r: -r["score"])[:5]
        assert best, "the tiny model detects something in every image at its low threshold"
        for r in best:
            assert any(f["category_id"] == r["category_id"] and iou(f["bbox"], r["bbox"]) >= 0.9
                       and abs(f["score"] - r["score"]) <= 0.02 for f in found), (im["file_name"], r)
    gt = version.coco("val", detector.spec.classes)
    assert abs(coco_evaluate(gt, runtime)[0]["mAP50"] - coco_evaluate(gt, pytorch)[0]["mAP50"]) <= 0.01
    # boxes are in the original images' pixels, not the letterboxed input's
    assert max(b[2] for d in result["detections"] for b in d["boxes"]) > detector.spec.input_size


def iou(a: list[float], b: list[float]) -> float:
    """IoU of two COCO (x, y, w, h) boxes."""
    w = max(0.0, min(a[0] + a[2], b[0] + b[2]) - max(a[0], b[0]))
    h = max(0.0, min(a[1] + a[3], b[1] + b[3]) - max(a[1], b[1]))
    return w * h / (a[2] * a[3] + b[2] * b[3] - w * h)


def test_the_runtimes_postprocessing_keeps_what_the_detectors_keeps(served, project):
    import torch

    from atom import tracking
    from atom.models.detector import postprocess
    from atom.runtime import Bundle
    from atom.runtime.bundle import letterbox, read_rgb

    ref, path = served
    bundle, detector = Bundle(path), tracking.load_detector(ref)
    bundle.score_threshold = detector.spec.score_thresh = 0.001  # many overlapping boxes: NMS has work to do
    batch = np.stack([letterbox(read_rgb(p), bundle.size)[0] for p in _val_images(project, 4)])
    boxes, scores = bundle.run(np.ascontiguousarray(batch.transpose(0, 3, 1, 2), dtype=np.float32))
    expected = postprocess(torch.from_numpy(boxes), torch.from_numpy(scores), detector.spec, [2.0] * len(batch))
    for b, s, e in zip(boxes, scores, expected):
        got = bundle.postprocess(b, s, 2.0)
        assert len(got.scores) == len(e["scores"]) > 10
        order, e_order = np.lexsort((got.labels, -got.scores)), np.lexsort((e["labels"].numpy(), -e["scores"].numpy()))
        np.testing.assert_allclose(got.boxes[order], e["boxes"].numpy()[e_order], rtol=0, atol=1e-4)
        np.testing.assert_array_equal(got.labels[order], e["labels"].numpy()[e_order])


def test_a_truncated_or_altered_bundle_is_refused(served, tmp_path):
    from atom.runtime import Bundle, BundleError

    _, bundle = served
    altered = shutil.copytree(bundle, tmp_path / "altered")
    data = bytearray((altered / "model.onnx").read_bytes())
    data[len(data) // 2] ^= 0xFF
    (altered / "model.onnx").write_bytes(bytes(data))
    with pytest.raises(BundleError, match=r"model.onnx: sha256 differs"):
        Bundle(altered)
    truncated = shutil.copytree(bundle, tmp_path / "truncated")
    (truncated / "export_report.json").unlink()
    with pytest.raises(BundleError, match=r"export_report.json: listed in the manifest but missing"):
        Bundle(truncated)


def encode(paths: list[Path]) -> list[str]:
    return [base64.b64encode(Path(p).read_bytes()).decode() for p in paths]


def test_the_pyfunc_of_a_registered_version_answers_with_the_bundles_detections(served, project):
    import mlflow.pyfunc
    import pandas as pd

    from atom.runtime import Bundle

    ref, bundle = served
    paths = _val_images(project, 3)
    table = mlflow.pyfunc.load_model(f"models:/{ref.name}@candidate").predict(pd.DataFrame({"image": encode(paths)}))
    expected = Bundle(bundle).detect_files(paths)
    assert len(table) == sum(len(d.scores) for d in expected) > 0
    for i, det in enumerate(expected):
        rows = table[table["image"] == i]
        np.testing.assert_allclose(rows[["x0", "y0", "x1", "y1"]].to_numpy(), det.boxes, rtol=0, atol=1e-4)
        assert rows["class"].tolist() == det.names()


def test_a_version_without_a_bundle_has_no_pyfunc_yet(trained, project):
    import mlflow.pyfunc

    from atom import tracking
    from atom.runtime import BundleError

    ref = tracking.resolve_model(f"{trained['result']['model_name']}@candidate")
    fresh = tracking.register_detector(tracking.load_detector(ref), ref.run_id, "not-exported", {}, None)
    with pytest.raises(BundleError, match="no verified ONNX bundle yet.*atom export"):
        mlflow.pyfunc.load_model(fresh.uri)
