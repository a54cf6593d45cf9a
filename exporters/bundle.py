"""Make a verified bundle from a registered model version, place it atomically, and log it to MLflow."""

from __future__ import annotations

import json
import os
import shutil
import statistics
import tempfile
import time
from collections import defaultdict
from datetime import datetime, timezone
from pathlib import Path

import numpy as np
import torch
from torchvision.ops import box_iou

import atom
from atom.data.version import DatasetVersion, make_readable, sha256_file
from atom.evaluation import coco_evaluate, predict_split
from atom.models.detector import PRE_NMS_TOP_K
from atom.tracking import ModelRef
from exporters import ExportError, format_module, resolve_format


def verify(detector, detect, version: DatasetVersion, split: str, box_rtol: float, map_tol: float,
           reference: list[dict] | None = None) -> dict:
    """Compare the exported model with PyTorch on a real split: detections matched as sets per image (same class,
    box coordinates within box_rtol of the image's longest side), and COCO mAP equal within map_tol. Detections
    present on one side only are tolerated only at the score threshold or the detection cap, where rounding decides.
    `reference`: PyTorch's COCO results on this split where the caller has just computed them (adapt evaluates
    before it exports), so the slower model does not run twice."""
    spec = detector.spec
    torch_results = predict_split(detector, spec, version, split) if reference is None else reference
    export_results = predict_split(detect, spec, version, split)
    gt = version.coco(split, spec.classes)
    ours, theirs = _by_image(torch_results), _by_image(export_results)
    worst_rel, matched, borderline, failures = 0.0, 0, 0, []
    for info in gt["images"]:
        m, border, rel, problem = _match(ours[info["id"]], theirs[info["id"]], spec, max(info["width"], info["height"]))
        matched, borderline, worst_rel = matched + m, borderline + border, max(worst_rel, rel)
        if problem:
            failures.append(f"image {info['id']} ({info['file_name']}): {problem}")
    map_torch = coco_evaluate(gt, torch_results)[0]
    map_export = coco_evaluate(gt, export_results)[0]
    diffs = {k: abs(map_torch[k] - map_export[k]) for k in ("mAP50", "mAP50_95")}
    if worst_rel > box_rtol:
        failures.append(f"box error {worst_rel:.2e} relative exceeds {box_rtol:.0e}")
    failures += [f"{k} differs by {d:.4f} (> {map_tol})" for k, d in diffs.items() if d > map_tol]
    return {"split": split, "images": len(gt["images"]), "matched_detections": matched,
            "borderline_detections": borderline, "max_box_error_relative": worst_rel,
            "pytorch": {k: map_torch[k] for k in ("mAP50", "mAP50_95")},
            "exported": {k: map_export[k] for k in ("mAP50", "mAP50_95")},
            "map_abs_diff": diffs, "tolerances": {"box_rtol": box_rtol, "map_tol": map_tol},
            "passed": not failures, "failures": failures[:20]}


def _by_image(results: list[dict]) -> defaultdict:
    """COCO results -> image id -> detections as tensors (boxes xyxy, scores, 0-based labels); empty by default."""
    rows = defaultdict(list)
    for r in results:
        x, y, w, h = r["bbox"]
        rows[r["image_id"]].append((x, y, x + w, y + h, r["score"], r["category_id"] - 1))

    def detections(rs=()):
        t = torch.tensor(rs, dtype=torch.float64).reshape(-1, 6)
        return {"boxes": t[:, :4], "scores": t[:, 4], "labels": t[:, 5].long()}

    out = defaultdict(detections)
    out.update({i: detections(rs) for i, rs in rows.items()})
    return out


def _match(a: dict, b: dict, spec, image_side: float, border: float = 1e-3):
    """Greedy set matching of two detection sets: each detection of `a`, best score first, takes the unmatched
    detection of `b` with the same label and the highest IoU (>= 0.5). Returns (matched, borderline, worst box error
    relative to the image side, problem). Relative to the image, not to each coordinate: float differences in the
    network are absolute, and a coordinate near 0 would make a per-coordinate ratio meaningless. A detection on one
    side only is borderline when its score is at the threshold or at the lowest kept score of its class group (the
    cap)."""
    group = torch.repeat_interleave(torch.arange(len(spec.class_groups)), torch.tensor(spec.class_groups))
    iou = box_iou(a["boxes"], b["boxes"]).numpy()
    iou[(a["labels"][:, None] != b["labels"][None, :]).numpy()] = -1.0  # only the same class can match
    taken = np.zeros(len(b["scores"]), dtype=bool)
    matched_a, matched_b, leftovers = [], [], []  # leftovers: (score, class group) of detections found by one side only
    for i in torch.argsort(a["scores"], descending=True).tolist():
        row = np.where(taken, -1.0, iou[i])
        j = int(row.argmax()) if len(row) else -1
        if j < 0 or row[j] < 0.5:
            leftovers.append((a["scores"][i].item(), int(group[a["labels"][i]])))
            continue
        taken[j] = True
        matched_a.append(i)
        matched_b.append(j)
    leftovers += [(b["scores"][j].item(), int(group[b["labels"][j]])) for j in np.flatnonzero(~taken)]
    scores = torch.cat([a["scores"], b["scores"]])
    groups = torch.cat([group[a["labels"]], group[b["labels"]]])
    lowest = {g: scores[groups == g].min().item() for g in groups.unique().tolist()}
    not_borderline = [s for s, g in leftovers if s - spec.score_thresh > border and s - lowest[g] > border]
    problem = None
    if not_borderline:
        problem = f"{len(not_borderline)} detections found by only one model (scores {not_borderline[:3]})"
    worst = (a["boxes"][matched_a] - b["boxes"][matched_b]).abs().max().item() / image_side if matched_a else 0.0
    return len(matched_a), len(leftovers) - len(not_borderline), worst, problem


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
                            + (f" (+ {len(spec.own_features)} head(s) with a backbone + FPN of their own)"
                               if spec.own_features else ""),
            "classes": spec.classes,
            "input": {"name": "images", "shape": ["batch", 3, size, size], "dtype": "float32"},
            "outputs": [
                {"name": "boxes", "shape": ["batch", "locations", 4], "layout": "x0,y0,x1,y1 in input pixels"},
                {"name": "scores", "shape": ["batch", "locations", n_classes],
                 "layout": "per-class score in 0..1, class index = position in classes"},
            ],
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
            "nms": {"per_class": True, "iou_threshold": spec.nms_iou}, "max_detections": spec.max_detections,
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
                bundles_dir: Path, tracking_uri: str, reference: list[dict] | None = None) -> tuple[Path, dict]:
    """Export, verify (`reference`: see `verify`), write manifest and report, then move the bundle into place.
    Raises ExportError on a failed verification; an existing bundle for the same version stays as it was until the
    new one is complete."""
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
        model_file = module.export(detector, sample, tmp, **args)
        detect = module.runner(model_file, **args)
        verification = verify(detector, detect, version, verify_cfg["split"], verify_cfg["box_rtol"],
                              verify_cfg["map_tol"], reference)
        if not verification["passed"]:
            raise ExportError(f"{format_name} export of {ref.uri} failed verification: {verification['failures']}")
        report = {"verification": verification}
        for batch in (1, 8):
            real = torch.from_numpy(_first_images(version, verify_cfg["split"], size, batch))
            report[f"latency_ms_batch{batch}"] = {"pytorch": latency_ms(detector, real),
                                                  format_name: latency_ms(detect, real), "input_size": size,
                                                  "threads": torch.get_num_threads()}
        (tmp / "export_report.json").write_text(json.dumps(report, indent=1))
        doc = manifest(format_name, model_file.name, detector, ref, version, report, tracking_uri, args)
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
    """Attach the bundle to the model version: artifacts on its run, a tag on the version pointing at them."""
    from mlflow import MlflowClient

    client = MlflowClient()
    path = f"bundles/{format_name}"
    client.log_artifacts(ref.run_id, str(bundle), path)
    uri = f"runs:/{ref.run_id}/{path}"
    client.set_model_version_tag(ref.name, ref.version, f"bundle.{format_name}", uri)
    return uri
