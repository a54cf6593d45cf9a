"""Labeling queue vs random order on ../shared/datasets/vehicles: a simulated annotator labels the first N train
images of each order (the same random seed set of S images first), a detector trains on them with the same short
budget, and test mAP50 is compared. The queue is scored by a detector trained on the seed set alone.

    .venv/bin/python benchmarks/label_queue.py [--seed-images 10] [--n 20 50] [--images-seen 1400]
"""

from __future__ import annotations

import argparse
import json
import math
import os
import random
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
os.environ.setdefault("NO_ALBUMENTATIONS_UPDATE", "1")

from atom import PROJECT_ROOT  # noqa: E402
from benchmarks import history  # noqa: E402

SHARED = PROJECT_ROOT.parent / "shared" / "datasets" / "vehicles"


def subset_source(version, train_ids: set[int]):
    """The version with its train split reduced to train_ids (val and test unchanged)."""
    from atom.data.source import Box, Sample, Source

    samples = []
    for split in ("train", "val", "test"):
        coco = version.coco(split)
        names = {c["id"]: c["name"] for c in coco["categories"]}
        for im in coco["images"]:
            if split == "train" and im["id"] not in train_ids:
                continue
            boxes = [Box(names[a["category_id"]], a["bbox"][0], a["bbox"][1], a["bbox"][0] + a["bbox"][2],
                         a["bbox"][1] + a["bbox"][3]) for a in coco["annotations"] if a["image_id"] == im["id"]]
            samples.append(Sample(version.root / im["file_name"], boxes, split))
    return Source(samples, version.classes)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--seed-images", type=int, default=10)
    ap.add_argument("--n", type=int, nargs="+", default=[20, 50])
    ap.add_argument("--images-seen", type=int, default=1400, help="training budget in images per run")
    ap.add_argument("--output", default=str(PROJECT_ROOT / "outputs" / "benchmarks-queue"))
    args = ap.parse_args()
    if not SHARED.exists():
        print(f"skipped: {SHARED} not found")
        return 0

    import numpy as np
    import torch

    from atom import tracking
    from atom.data.formats import read_source
    from atom.data.version import write_version
    from atom.inference import predict_images
    from atom.labelstudio.queue import image_uncertainty, rank_for_labeling
    from recipes import compose
    from recipes.train import train

    out = Path(args.output)
    datasets = out / "datasets"
    full, _ = write_version(read_source("yolo", SHARED), datasets, "vehicles")
    pool = [im["id"] for im in full.coco("train")["images"]]
    rng = random.Random(0)
    seed = set(rng.sample(pool, args.seed_images))
    rest = [i for i in pool if i not in seed]

    def run(name: str, train_ids: set[int]) -> dict:
        version, _ = write_version(subset_source(full, train_ids), datasets, name)
        epochs = max(1, math.ceil(args.images_seen / len(train_ids)))
        result = train(compose("train", [
            "experiment=vehicles", f"data.name={name}", f"paths.datasets={datasets}", f"paths.output_dir={out}",
            f"run_name={name}", f"trainer.max_epochs={epochs}", "trainer.max_time=00:00:06:00",
            f"trainer.check_val_every_n_epoch={max(1, epochs // 4)}", "callbacks.rich_progress=false",
            "data.num_workers=0", f"tracking.model_name=queue-{name}"]))
        return {"train_images": len(train_ids), "epochs": epochs, "test_mAP50": round(result["mAP50"], 4),
                "test_mAP50_95": round(result["mAP50_95"], 4), "model": f"{result['model_name']}/1"}

    results = {"seed": run("seed", seed)}
    tracking.configure(out)
    scorer = tracking.load_detector(tracking.resolve_model("queue-seed@candidate"))
    files = {im["id"]: full.root / im["file_name"] for im in full.coco("train")["images"]}
    detections = predict_images(scorer, [files[i] for i in rest], with_embeddings=True)
    uncertainty = np.array([image_uncertainty(torch.tensor(d.scores)) for d in detections])
    queue = [rest[i] for i in rank_for_labeling(uncertainty, np.stack([d.embedding for d in detections]))]
    shuffled = rest[:]
    rng.shuffle(shuffled)
    for n in args.n:
        extra = n - args.seed_images
        results[f"queue_N{n}"] = run(f"queue-{n}", seed | set(queue[:extra]))
        results[f"random_N{n}"] = run(f"random-{n}", seed | set(shuffled[:extra]))
    print(json.dumps(results, indent=1))
    rows = [history.record("label_queue", {"order": name.split("_")[0], "n": r["train_images"], "seed_images":
                                           args.seed_images, "images_seen": args.images_seen},
                           {k: v for k, v in r.items() if k != "model"}) for name, r in results.items()]
    print("\n".join(history.compare("label_queue", rows)))
    return 0


if __name__ == "__main__":
    sys.exit(main())
