"""Make a verified bundle from a registered model version, place it atomically, and log it to MLflow."""

from __future__ import annotations

import json
import os
import shutil
import statistics
import tempfile
import time
from datetime import datetime, timezone
from pathlib import Path

import torch

import atom
from atom.checksums import sha256_file
from atom.data.version import DatasetVersion, make_readable
from atom.evaluation import coco_evaluate, predict_split
from atom.models.detector import PRE_NMS_TOP_K
from atom.tracking import ModelRef
from exporters import ExportError, format_module, resolve_format
from exporters.calibration import calibration_batches


def verify(detector, detect, version: DatasetVersion, split: str, box_rtol: float, score_atol: float,
           map_tol: float, raw_images: int = 32, reference: list[dict] | None = None) -> dict:
    """Compare the exported model with PyTorch on a real split, where they must agree:
    - what the graph computes: the raw per-location boxes and class scores, before thresholds and NMS, element-wise
      on the split's first `raw_images` images (scores within score_atol everywhere; boxes within box_rtol of the
      input side wherever a class scores over the threshold, i.e. where a box can become a detection).
      Not the detections after NMS: two overlapping boxes whose scores differ in the 7th digit may swap which one
      survives, which is not a difference of the graphs;
    - what a serving team measures: COCO mAP50 and mAP50:95 on the whole split, equal within map_tol.
    `reference`: PyTorch's COCO results on this split where the caller has just computed them (adapt evaluates
    before it exports), so the slower model does not run twice on the whole split."""
    from torch.utils.data import DataLoader

    from atom.data.loader import DetectionDataset, collate

    spec = detector.spec
    box_err = score_err = 0.0
    checked = 0
    loader = DataLoader(DetectionDataset(version, split, spec.input_size, classes=spec.classes), batch_size=8,
                        collate_fn=collate)
    with torch.no_grad():
        for images, _, _ in loader:
            (b0, s0), (b1, s1) = detector(images), detect(images)
            # Boxes where either model scores a class over the threshold: elsewhere no box becomes a detection
            # (an INT8 graph's boxes at empty background locations move freely and change nothing served).
            scored = (s0.amax(-1) > spec.score_thresh) | (s1.amax(-1) > spec.score_thresh)
            if scored.any():
                box_err = max(box_err, (b0 - b1)[scored].abs().max().item() / spec.input_size)
            score_err = max(score_err, (s0 - s1).abs().max().item())
            checked += len(images)
            if checked >= raw_images:
                break
    torch_results = predict_split(detector, spec, version, split) if reference is None else reference
    export_results = predict_split(detect, spec, version, split)
    gt = version.coco(split, spec.classes)
    map_torch = coco_evaluate(gt, torch_results)[0]
    map_export = coco_evaluate(gt, export_results)[0]
    diffs = {k: abs(map_torch[k] - map_export[k]) for k in ("mAP50", "mAP50_95")}
    failures = []
    if box_err > box_rtol:
        failures.append(f"raw boxes differ by {box_err:.2e} of the input side (> {box_rtol:.0e})")
    if score_err > score_atol:
        failures.append(f"raw scores differ by {score_err:.2e} (> {score_atol:.0e})")
    failures += [f"{k} differs by {d:.4f} (> {map_tol})" for k, d in diffs.items() if d > map_tol]
    return {"split": split, "images": len(gt["images"]), "raw_images": checked,
            "max_box_error_relative": box_err, "max_score_error": score_err,
            "pytorch": {k: map_torch[k] for k in ("mAP50", "mAP50_95")},
            "exported": {k: map_export[k] for k in ("mAP50", "mAP50_95")},
            "map_abs_diff": diffs,
            "tolerances": {"box_rtol": box_rtol, "score_atol": score_atol, "map_tol": map_tol},
            "passed": not failures, "failures": failures}


def verification_split(version: DatasetVersion, preferred: str) -> str:
    """The split to verify on: the preferred one, else the first of val, test, train the version has."""
    for split in (preferred, "val", "test", "train"):
        if version.has_split(split):
            return split
    raise ExportError(f"{version.root}: the dataset version has no images to verify the export on")


def latency_ms(fn, sample: torch.Tensor, runs: int = 20, warmup: int = 3) -> float:
    """Median wall time of fn(sample) in milliseconds."""
    with torch.no_grad():
        for _ in range(warmup):
            fn(sample)
        times = []
        for _ in range(runs):
            t = time.perf_counter()
            fn(sample)
            times.append((time.perf_counter() - t) * 1000)
    return statistics.median(times)


def manifest(fmt_name: str, file: str, detector, ref: ModelRef, version: DatasetVersion, report: dict,
             tracking_uri: str, args: dict) -> dict:
    spec = detector.spec
    size, n_classes = spec.input_size, len(spec.classes)
    return {
        "schema": "atom.bundle/1",
        "model": {
            "format": fmt_name,
            "file": file,
            "architecture": f"{spec.backbone} + FPN(P3-P5, {spec.fpn_channels}) + FCOS-style head"
                            + (f" (+ {len(spec.own_features)} head(s) with a backbone + FPN of their own, at "
                               + ", ".join(f"{spec.feature_scales[g]:g}x" for g in spec.own_features)
                               + " the input resolution)" if spec.own_features else ""),
            "classes": spec.classes,
            "input": {"name": "images", "shape": ["batch" if args.get("dynamic_batch", True) else 1, 3, size, size],
                      "dtype": "float32"},
            "outputs": [
                {"name": "boxes", "shape": ["batch", "locations", 4], "layout": "x0,y0,x1,y1 in input pixels"},
                {"name": "scores", "shape": ["batch", "locations", n_classes],
                 "layout": "per-class score in 0..1, class index = position in classes"},
            ] + ([{"name": "detections", "shape": ["detections", 7],
                   "layout": "batch index, x0, y0, x1, y1 (input pixels), score, class index: class-wise NMS done "
                             "(scores over score_threshold, at most max_detections per class and image); keep the "
                             "top max_detections per image and class group, then map to original pixels"}]
                 if args.get("nms") else []),
            "export_args": args,
        },
        "preprocess": {
            "color": "RGB", "layout": "NCHW", "dtype": "float32", "pixel_range": [0, 255],
            "resize": {"mode": "letterbox", "longest_side": size, "interpolation": "bilinear",
                       "pad": "bottom-right", "pad_value": 0},
            "normalize": {"mean": spec.mean, "std": spec.std, "scale": "0..1", "done_inside_model": True},
        },
        "postprocess": {
            "score_threshold": spec.score_thresh, "pre_nms_top_k": PRE_NMS_TOP_K,
            "nms": {"per_class": True, "iou_threshold": spec.nms_iou, "in_graph": bool(args.get("nms"))},
            "max_detections": spec.max_detections,
            "class_groups": {"sizes": spec.class_groups, "rule": "pre_nms_top_k and max_detections apply per group "
                             "of consecutive classes (one group per head), so added classes never displace others"},
            "to_original_pixels": "divide box coordinates by the letterbox scale (longest_side / max(h, w))",
        },
        "source": {
            "registered_model": ref.name, "version": ref.version, "run_id": ref.run_id,
            "tracking_uri": tracking_uri.split("@")[-1],  # never carry credentials into a bundle
            "dataset": {"name": version.name, "version": version.card["version"],
                        "fingerprint": version.fingerprint},
            "git_commit": ref.tags.get("git.commit", "unknown"),
            "metrics": {k: v for k, v in ref.tags.items() if "mAP" in k},
            "verification": {k: report["verification"][k] for k in ("pytorch", "exported", "passed")},
            "exported_at": datetime.now(timezone.utc).isoformat(timespec="seconds"),
            "atom_version": atom.__version__,
        },
    }


def make_bundle(ref: ModelRef, detector, version: DatasetVersion, format_name: str, args: dict, verify_cfg: dict,
                bundles_dir: Path, tracking_uri: str, reference: list[dict] | None = None,
                calibration_split: str = "train") -> tuple[Path, dict]:
    """Export, verify (`reference`: see `verify`), write manifest and report, then move the bundle into place.
    Formats that quantize calibrate on `calibration_split` (the images the model was trained on). Raises
    ExportError on a failed verification; an existing bundle for the same version stays as it was until the new
    one is complete."""
    fmt, args = resolve_format(format_name, args)
    module = format_module(fmt)
    if version.fingerprint != ref.tags.get("dataset.fingerprint", version.fingerprint):
        raise ExportError(f"{version.root}: dataset fingerprint differs from the one model {ref.uri} was trained on")
    target = Path(bundles_dir) / ref.name / f"v{ref.version}" / format_name
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".incoming-{format_name}-", dir=target.parent))
    try:
        size = detector.spec.input_size
        sample = torch.zeros(1, 3, size, size)
        calibrated: dict = {}

        def calibration(images: int):
            if not version.has_split(calibration_split):
                raise ExportError(f"{version.root}: no {calibration_split!r} split to calibrate {format_name} on")
            batches = calibration_batches(version, calibration_split, size, images)
            calibrated.update(split=calibration_split, images=sum(len(b) for b in batches))
            return batches

        model_file = module.export(detector, sample, tmp, calibration=calibration, **args)
        detect = module.runner(model_file, **args)
        split = verification_split(version, verify_cfg["split"])
        verification = verify(detector, detect, version, split, verify_cfg["box_rtol"], verify_cfg["score_atol"],
                              verify_cfg["map_tol"], verify_cfg.get("raw_images", 32),
                              reference if split == verify_cfg["split"] else None)
        if not verification["passed"]:
            raise ExportError(f"{format_name} export of {ref.uri} failed verification: {verification['failures']}")
        report = {"verification": verification, "size_bytes": sum(p.stat().st_size for p in tmp.iterdir()),
                  **({"calibration": calibrated} if calibrated else {})}
        for batch in (1, 8):
            real = torch.from_numpy(_first_images(version, split, size, batch))
            # PyTorch is the reference, not what is served: a median of 5 (at batch 8 a few-shot model with two
            # backbones takes seconds a run in PyTorch, most of an adaptation's export time with 20).
            report[f"latency_ms_batch{batch}"] = {"pytorch": latency_ms(detector, real, runs=5, warmup=1),
                                                  format_name: latency_ms(detect, real), "input_size": size,
                                                  "threads": torch.get_num_threads()}
        (tmp / "export_report.json").write_text(json.dumps(report, indent=1))
        doc = manifest(format_name, model_file.name, detector, ref, version, report, tracking_uri, args)
        if hasattr(module, "describe"):  # what an engine was built with, or how the target builds it
            doc["model"]["engine"] = module.describe(model_file)
        doc["files"] = {p.name: sha256_file(p) for p in sorted(tmp.iterdir()) if p.is_file()}
        (tmp / "manifest.json").write_text(json.dumps(doc, indent=1))
        make_readable(tmp)
        _swap_into_place(tmp, target)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return target, report


def _first_images(version: DatasetVersion, split: str, size: int, n: int):
    """A batch of the split's first n images (repeated when it has fewer), letterboxed."""
    from atom.models.preprocess import letterbox, read_rgb, to_batch

    images = version.coco(split)["images"]
    return to_batch([letterbox(read_rgb(version.root / images[i % len(images)]["file_name"]), size)[0]
                     for i in range(n)])


def _swap_into_place(new: Path, target: Path) -> None:
    old = None
    if target.exists():
        old = target.with_name(f".replaced-{target.name}-{os.getpid()}")
        os.rename(target, old)
    os.rename(new, target)
    if old is not None:
        shutil.rmtree(old, ignore_errors=True)


def log_bundle(ref: ModelRef, bundle: Path, format_name: str) -> str:
    """Attach the bundle to the model version: into its own files (`bundles/FORMAT/`, where the python_function
    flavour reads the onnx one; atom/flavor.py), and a tag `bundle.FORMAT` on the version pointing at it. The
    version's files, not its run's: two versions of one run never share a bundle."""
    from mlflow import MlflowClient

    from atom.errors import RegistryError

    if not ref.model_id:
        raise RegistryError(f"{ref.uri} was registered without a logged model (before MLflow 3?); register it again")
    client = MlflowClient()
    path = f"bundles/{format_name}"
    client.log_model_artifacts(ref.model_id, str(bundle), path)
    uri = f"{ref.uri}/{path}"
    client.set_model_version_tag(ref.name, ref.version, f"bundle.{format_name}", uri)
    # The files' sha256, as the manifest lists them: serving feedback names the bundle it ran by these
    # (atom/labelstudio/feedback.py), and tracking.find_by_bundle finds the version from them. Not under
    # `bundle.`: those tags are the bundles themselves (atom models list).
    files = json.loads((bundle / "manifest.json").read_text()).get("files", {})
    client.set_model_version_tag(ref.name, ref.version, f"bundle_files.{format_name}", json.dumps(files))
    return uri
