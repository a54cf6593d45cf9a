"""Serving feedback vs more random labels, on ../shared's vehicles.

A base detector trains on half of the train split (A). It then "serves" the other half (B): where it is wrong on an
image (a false alarm: a box scoring >= --serve-score that matches no object; a missed object; a wrong class), an
operator would flag it. The K most-flagged images of B come back as corrected samples (their full labels: the
annotator corrects the whole pre-annotation in Label Studio, atom/labelstudio/feedback.py). Two retrainings
continue from the base model (`init=`), with the same budget: A + the K flagged images, and A + K images of B drawn
at random. Test mAP50 of each is recorded; a third run continues on A alone (is it the extra images at all?).

    .venv/bin/python benchmarks/feedback.py [--k 40] [--seeds 0 1 2]

Rows go to benchmarks/results/feedback.jsonl. Asserts nothing.
"""

from __future__ import annotations

import argparse
import math
import os
import random
import statistics
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
os.environ.setdefault("NO_ALBUMENTATIONS_UPDATE", "1")

from atom import PROJECT_ROOT  # noqa: E402
from benchmarks import history, shared  # noqa: E402
from benchmarks.label_queue import subset_source  # noqa: E402


def errors(d, gt: list[tuple[str, list[float]]], score: float) -> int:
    """What an operator would flag on one image: false alarms, missed objects and wrong classes."""
    from atom.labelstudio.feedback import _iou

    preds = [(label, box) for box, label, s in zip(d.boxes, d.labels, d.scores) if s >= score]
    matched, flagged = set(), 0
    for label, box in preds:
        best = max(range(len(gt)), key=lambda j: _iou(box, gt[j][1]), default=None)
        if best is None or _iou(box, gt[best][1]) < 0.5:
            flagged += 1  # false alarm
        else:
            matched.add(best)
            flagged += gt[best][0] != label  # wrong class
    return flagged + len(gt) - len(matched)  # + missed


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--k", type=int, default=40, help="images fed back (or drawn at random)")
    ap.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2], help="retraining seeds (and random draws)")
    ap.add_argument("--serve-score", type=float, default=0.4, help="the serving threshold operators see boxes at")
    ap.add_argument("--base-images-seen", type=int, default=3000)
    ap.add_argument("--retrain-images-seen", type=int, default=1500)
    ap.add_argument("--output", default=str(PROJECT_ROOT / "outputs" / "benchmarks-feedback"))
    args = ap.parse_args()
    if not shared.available("vehicles"):
        print(f"skipped: {shared.SHARED / 'vehicles'} not found")
        return 0

    from atom import tracking
    from atom.data.version import write_version
    from atom.inference import predict_images
    from recipes import compose
    from recipes.train import train

    out = Path(args.output)
    datasets = out / "datasets"
    full = shared.import_shared("vehicles", datasets)
    coco = full.coco("train")
    names = {c["id"]: c["name"] for c in coco["categories"]}
    pool = sorted(im["id"] for im in coco["images"])
    rng = random.Random(0)
    a = set(rng.sample(pool, len(pool) // 2))
    b = [i for i in pool if i not in a]

    def run(name: str, ids: set[int], images_seen: int, seed: int, init: str | None = None) -> dict:
        write_version(subset_source(full, ids), datasets, name)
        epochs = max(1, math.ceil(images_seen / len(ids)))
        result = train(compose("train", [
            "experiment=vehicles", f"data.name={name}", f"paths.datasets={datasets}", f"paths.output_dir={out}",
            f"run_name={name}", f"seed={seed}", f"trainer.max_epochs={epochs}", "trainer.max_time=00:00:20:00",
            f"trainer.check_val_every_n_epoch={epochs}", "callbacks.rich_progress=false", "data.num_workers=0",
            f"tracking.model_name=feedback-{name}", *([f"init={init}"] if init else [])]))
        return {"train_images": len(ids), "epochs": epochs, "test_mAP50": round(result["mAP50"], 4),
                "test_mAP50_95": round(result["mAP50_95"], 4)}

    base = run("base", a, args.base_images_seen, 0)
    print(f"base (A, {len(a)} images): test mAP50 {base['test_mAP50']:.3f}", flush=True)
    tracking.configure(out)
    base_model = "feedback-base/1"
    files = {im["id"]: full.root / im["file_name"] for im in coco["images"]}
    gt = {i: [] for i in b}
    for ann in coco["annotations"]:
        if ann["image_id"] in gt:
            x, y, w, h = ann["bbox"]
            gt[ann["image_id"]].append((names[ann["category_id"]], [x, y, x + w, y + h]))
    served = predict_images(tracking.load_detector(tracking.resolve_model(base_model)), [files[i] for i in b])
    flags = {i: errors(d, gt[i], args.serve_score) for i, d in zip(b, served)}
    flagged = sorted((i for i in b if flags[i]), key=lambda i: (-flags[i], i))[:args.k]
    print(f"served B ({len(b)} images): {sum(1 for v in flags.values() if v)} with an error; "
          f"{len(flagged)} fed back ({sum(flags[i] for i in flagged)} verdicts)", flush=True)

    rows = [history.record("feedback", {"run": "base", "k": 0, "seed": 0}, base)]
    for seed in args.seeds:
        drawn = random.Random(seed).sample(b, len(flagged))
        for name, extra in [("feedback", flagged), ("random", drawn), ("continue", [])]:
            r = run(f"{name}-s{seed}", a | set(extra), args.retrain_images_seen, seed, init=base_model)
            print(f"{name:8s} seed {seed}: A + {len(extra)} -> test mAP50 {r['test_mAP50']:.3f}", flush=True)
            rows.append(history.record("feedback", {"run": name, "k": len(extra), "seed": seed,
                                                    "serve_score": args.serve_score}, r))
    for name in ("feedback", "random", "continue"):
        values = [r["numbers"]["test_mAP50"] for r in rows if r["setup"]["run"] == name]
        print(f"{name:8s} test mAP50 {statistics.mean(values):.3f} +- "
              f"{statistics.stdev(values) if len(values) > 1 else 0:.3f} ({', '.join(f'{v:.3f}' for v in values)}); "
              f"base {base['test_mAP50']:.3f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
