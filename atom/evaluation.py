"""COCO evaluation (faster-coco-eval): mAP50:95, mAP50, per-class AP, PR curves and a grid of predictions.

The detector is passed as a function from a float NCHW batch to decoded (boxes, scores), so PyTorch and
onnxruntime are evaluated by the same code.
"""

from __future__ import annotations

import contextlib
import io
import json
from pathlib import Path
from typing import Callable

import numpy as np
import torch
from torch.utils.data import DataLoader

from atom.data.loader import DetectionDataset, collate
from atom.data.version import DatasetVersion
from atom.models.detector import DetectorSpec, postprocess

DetectFn = Callable[[torch.Tensor], tuple[torch.Tensor, torch.Tensor]]


def predict_split(detect: DetectFn, spec: DetectorSpec, version: DatasetVersion, split: str,
                  batch_size: int = 8) -> list[dict]:
    """COCO result dicts (bbox xywh in original pixels, category_id 1-based) for every image of a split."""
    loader = DataLoader(DetectionDataset(version, split, spec.input_size, classes=spec.classes), batch_size=batch_size,
                        collate_fn=collate)
    results = []
    with torch.no_grad():
        for images, _, metas in loader:
            if hasattr(detect, "detections"):  # a graph with NMS inside post-processes itself (exporters/onnx.py)
                dets = [{**d, "boxes": d["boxes"] / m["scale"]} for d, m in zip(detect.detections(images, spec), metas)]
            else:
                dets = postprocess(*detect(images), spec, [m["scale"] for m in metas])
            for meta, det in zip(metas, dets):
                results.extend(to_coco_results(meta["image_id"], det))
    return results


def to_coco_results(image_id: int, det: dict) -> list[dict]:
    out = []
    for (x0, y0, x1, y1), score, label in zip(det["boxes"].tolist(), det["scores"].tolist(), det["labels"].tolist()):
        out.append({"image_id": image_id, "category_id": int(label) + 1, "score": float(score),
                    "bbox": [x0, y0, x1 - x0, y1 - y0]})
    return out


def coco_evaluate(gt: dict, results: list[dict]):
    """Returns (metrics, evaluator). metrics: mAP50_95, mAP50, and per class AP50_95 / AP50."""
    from faster_coco_eval import COCO, COCOeval_faster

    with contextlib.redirect_stdout(io.StringIO()):
        coco_gt = COCO(gt)
        coco_dt = coco_gt.loadRes(results) if results else None
        if coco_dt is None:
            return _empty_metrics(gt), None
        ev = COCOeval_faster(coco_gt, coco_dt, iouType="bbox")
        ev.evaluate()
        ev.accumulate()
        ev.summarize()
    metrics = {"mAP50_95": _clean(ev.stats[0]), "mAP50": _clean(ev.stats[1]), "per_class": {}}
    precision = ev.eval["precision"]  # [iou thresholds, recall points, classes, areas, max dets]
    for k, cat in enumerate(ev.params.catIds):
        name = coco_gt.cats[cat]["name"]
        p = precision[:, :, k, 0, -1]
        metrics["per_class"][name] = {"AP50_95": _mean_valid(p), "AP50": _mean_valid(p[0])}
    return metrics, ev


def _clean(v: float) -> float:
    return max(float(v), 0.0)  # COCO reports -1 where there is no ground truth


def _mean_valid(a: np.ndarray) -> float:
    a = a[a > -1]
    return float(a.mean()) if a.size else 0.0


def _empty_metrics(gt: dict) -> dict:
    return {"mAP50_95": 0.0, "mAP50": 0.0,
            "per_class": {c["name"]: {"AP50_95": 0.0, "AP50": 0.0} for c in gt["categories"]}}


def evaluate(detect: DetectFn, spec: DetectorSpec, version: DatasetVersion, split: str) -> tuple[dict, list, object]:
    results = predict_split(detect, spec, version, split)
    metrics, ev = coco_evaluate(version.coco(split, spec.classes), results)
    return metrics, results, ev


def evaluate_bundle(bundle, version: DatasetVersion, split: str) -> tuple[dict, list, object]:
    """The same evaluation through a serving bundle (atom.runtime.Bundle): its own preprocessing, runtime and NMS,
    read from its manifest, as serving runs it."""
    gt = version.coco(split, bundle.classes)
    detections = bundle.detect_files([version.root / im["file_name"] for im in gt["images"]])
    results = [r for im, det in zip(gt["images"], detections) for r in to_coco_results(im["id"], vars(det))]
    metrics, ev = coco_evaluate(gt, results)
    return metrics, results, ev


def evaluate_and_log(detector, version: DatasetVersion, split: str, out_dir: Path, run_id: str,
                     metric_prefix: str | None = None, artifact_path: str = "evaluation",
                     extra: dict | None = None) -> tuple[dict, list]:
    """The one evaluation of a detector (or of a serving bundle, atom.runtime.Bundle) that train, adapt and `atom
    evaluate` share: COCO metrics on `split` of the version (classes and their order are the detector's, whatever
    the dataset has), written to out_dir/metrics.json with the PR curves and a prediction grid, and logged to the
    MLflow run (metrics under `metric_prefix`, default the split; files under `artifact_path`). Returns the metrics
    and the predictions (COCO results)."""
    from mlflow import MlflowClient

    if hasattr(detector, "detect_files"):
        metrics, results, ev = evaluate_bundle(detector, version, split)
        classes = detector.classes
    else:
        metrics, results, ev = evaluate(detector, detector.spec, version, split)
        classes = detector.spec.classes
    metrics = {"split": split, **metrics, **(extra or {}), "dataset_fingerprint": version.fingerprint}
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    (out_dir / "metrics.json").write_text(json.dumps(metrics, indent=1))
    files = [out_dir / "metrics.json", plot_pr_curves(ev, classes, out_dir / "pr_curves.png"),
             out_dir / "pr_curves.json", prediction_grid(version, split, results, classes, out_dir / "predictions.jpg")]
    client = MlflowClient()
    prefix = metric_prefix or split.replace("+", "_")  # MLflow metric names allow no '+'
    client.log_metric(run_id, f"{prefix}/mAP50", metrics["mAP50"])
    client.log_metric(run_id, f"{prefix}/mAP50_95", metrics["mAP50_95"])
    for name, ap in metrics["per_class"].items():
        client.log_metric(run_id, f"{prefix}/AP50/{name}", ap["AP50"])
    for f in files:
        client.log_artifact(run_id, str(f), artifact_path)
    from atom.privacy import PrivacyPolicy

    client.set_tag(run_id, "privacy.prediction_grid", json.dumps(PrivacyPolicy().describe()))
    return metrics, results


def plot_pr_curves(ev, classes: list[str], path: Path) -> Path:
    """Precision-recall at IoU 0.5: one curve per class in a picture (path), and beside it (path with .json) the
    mean over the classes that have ground truth (mAP50 is the area under it) as rows of recall and precision,
    which `dvc plots` draws and compares across runs."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6, 5))
    recall = np.linspace(0, 1, 101)
    curves = []
    if ev is not None:
        for k, name in enumerate(classes):
            p = ev.eval["precision"][0, :, k, 0, -1]
            if (p > -1).any():
                ax.plot(recall, np.clip(p, 0, 1), label=f"{name} (AP50 {_mean_valid(p):.3f})")
                curves.append(np.clip(p, 0, 1))
    ax.set(xlabel="recall", ylabel="precision", xlim=(0, 1), ylim=(0, 1.02), title="PR curves at IoU 0.5")
    ax.legend(loc="lower left", fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)
    mean = np.mean(curves, axis=0) if curves else np.zeros_like(recall)
    Path(path).with_suffix(".json").write_text(json.dumps(
        [{"recall": round(float(r), 2), "precision": round(float(p), 4)} for r, p in zip(recall, mean)]))
    return path


def prediction_grid(version: DatasetVersion, split: str, results: list[dict], classes: list[str], path: Path,
                    n: int = 9, min_score: float = 0.3, redactor=None) -> Path:
    """A 3x3 grid of images with predicted boxes (score >= min_score) drawn on them. The grid leaves the trusted
    zone (it is logged to MLflow): `redactor` (atom.privacy, by default faces) obscures what it finds first."""
    import cv2
    from PIL import Image

    from atom.models.preprocess import letterbox, read_rgb
    from atom.privacy import Redactor

    redactor = redactor or Redactor()
    images = version.coco(split)["images"][:n]
    tiles = []
    for info in images:
        image = np.array(redactor(Image.fromarray(read_rgb(version.root / info["file_name"])))[0])
        for r in results:
            if r["image_id"] == info["id"] and r["score"] >= min_score:
                x, y, w, h = map(int, r["bbox"])
                cv2.rectangle(image, (x, y), (x + w, y + h), (255, 64, 0), 2)
                cv2.putText(image, f"{classes[r['category_id'] - 1]} {r['score']:.2f}", (x, max(y - 4, 10)),
                            cv2.FONT_HERSHEY_SIMPLEX, 0.5, (255, 255, 0), 1)
        tiles.append(letterbox(image, 320)[0])
    while len(tiles) % 3:
        tiles.append(np.zeros_like(tiles[0]))
    grid = np.vstack([np.hstack(tiles[i:i + 3]) for i in range(0, len(tiles), 3)])
    cv2.imwrite(str(path), cv2.cvtColor(grid, cv2.COLOR_RGB2BGR))
    return path
