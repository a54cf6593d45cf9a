"""Which images to label first: the labeling queue, cold-start diversity and random order, over seeds.

A simulated annotator labels the first N train images of an order; a detector trains on them with the same short
budget (`--images-seen` images, one validation at the end), and its test mAP50 is recorded. Orders:

    random     a seeded shuffle of the pool
    diversity  cold start (atom/labelstudio/queue.py cold_start_order): medoids of N k-means clusters of the
               images' ImageNet embeddings (the backbone before any detection training), no model needed
    queue      the product's flow: the first --seed-images by diversity, a detector trained on them, then the
               queue (uncertainty + diversity, rank_for_labeling) ranks the rest with that detector

Rows (one per scene, order, N and seed) go to benchmarks/results/label_queue.jsonl; the summary prints mean +- std
per order and N. Asserts nothing.

    .venv/bin/python benchmarks/label_queue.py                                  # vehicles, N 20 50 100, seeds 0-4
    .venv/bin/python benchmarks/label_queue.py --scenes street --seeds 0 1 2 --n 50
"""

from __future__ import annotations

import argparse
import json
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
    ap.add_argument("--scenes", nargs="+", default=["vehicles"], choices=["vehicles", "street", "bccd"])
    ap.add_argument("--n", type=int, nargs="+", default=[20, 50, 100])
    ap.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2, 3, 4])
    ap.add_argument("--orders", nargs="+", default=["random", "diversity", "queue"])
    ap.add_argument("--seed-images", type=int, default=10, help="the queue's first batch, chosen by diversity")
    ap.add_argument("--images-seen", type=int, default=1000, help="training budget in images per run")
    ap.add_argument("--output", default=str(PROJECT_ROOT / "outputs" / "benchmarks-queue"))
    args = ap.parse_args()

    import numpy as np
    import torch

    from atom import tracking
    from atom.data.version import write_version
    from atom.inference import predict_images
    from atom.labelstudio.queue import cold_start_order, image_uncertainty, rank_for_labeling
    from atom.models.detector import Detector, DetectorSpec
    from recipes import compose
    from recipes.train import train

    out = Path(args.output)
    datasets = out / "datasets"
    rows = []
    for scene in args.scenes:
        if not shared.available(scene):
            print(f"{scene}: skipped ({shared.SHARED / scene} not found)")
            continue
        full = shared.import_shared(scene, datasets)
        base_cfg = compose("train", [f"experiment={scene}"])
        files = {im["id"]: full.root / im["file_name"] for im in full.coco("train")["images"]}
        pool = sorted(files)
        # ImageNet features: the detector's backbone as shipped, before any detection training
        imagenet = Detector(DetectorSpec(**{**base_cfg.detector, "classes": full.classes})).eval()
        embeddings = np.stack([d.embedding for d in predict_images(imagenet, [files[i] for i in pool],
                                                                    with_embeddings=True)])

        def run(name: str, train_ids: set[int]) -> dict:
            version, _ = write_version(subset_source(full, train_ids), datasets, name)
            epochs = max(1, math.ceil(args.images_seen / len(train_ids)))
            result = train(compose("train", [
                f"experiment={scene}", f"data.name={name}", f"paths.datasets={datasets}", f"paths.output_dir={out}",
                f"run_name={name}", f"trainer.max_epochs={epochs}", "trainer.max_time=00:00:06:00",
                f"trainer.check_val_every_n_epoch={epochs}", "callbacks.rich_progress=false",
                "data.num_workers=0", f"tracking.model_name=queue-{name}"]))
            return {"train_images": len(train_ids), "epochs": epochs, "test_mAP50": round(result["mAP50"], 4),
                    "test_mAP50_95": round(result["mAP50_95"], 4), "model": f"{result['model_name']}/1"}

        for seed in args.seeds:
            orders: dict[str, list[int] | None] = {}
            if "random" in args.orders:
                shuffled = pool[:]
                random.Random(seed).shuffle(shuffled)
                orders["random"] = shuffled
            if "queue" in args.orders:
                first = [pool[i] for i in cold_start_order(embeddings, args.seed_images, seed)[:args.seed_images]]
                name = f"{scene}-bootstrap-s{seed}"
                run(name, set(first))
                tracking.configure(out)
                scorer = tracking.load_detector(tracking.resolve_model(f"queue-{name}@candidate"))
                rest = [i for i in pool if i not in set(first)]
                detections = predict_images(scorer, [files[i] for i in rest], with_embeddings=True)
                uncertainty = np.array([image_uncertainty(torch.tensor(d.scores)) for d in detections])
                ranked = rank_for_labeling(uncertainty, np.stack([d.embedding for d in detections]))
                orders["queue"] = first + [rest[i] for i in ranked]
            for n in args.n:
                for order in args.orders:
                    if order == "diversity":  # k-means with k = N: the batch itself depends on N
                        ids = [pool[i] for i in cold_start_order(embeddings, n, seed)[:n]]
                    else:
                        ids = orders[order][:n]
                    result = run(f"{scene}-{order}-n{n}-s{seed}", set(ids))
                    print(f"{scene} {order:9s} N={n:3d} seed {seed}: test mAP50 {result['test_mAP50']:.3f}",
                          flush=True)
                    rows.append(history.record(
                        "label_queue", {"scene": scene, "order": order, "n": n, "seed": seed,
                                        "seed_images": args.seed_images, "images_seen": args.images_seen},
                        {k: v for k, v in result.items() if k != "model"}))
    groups: dict[tuple, list[float]] = {}
    for r in rows:
        groups.setdefault((r["setup"]["scene"], r["setup"]["n"], r["setup"]["order"]), []).append(
            r["numbers"]["test_mAP50"])
    for (scene, n, order), values in sorted(groups.items()):
        spread = statistics.stdev(values) if len(values) > 1 else 0.0
        print(f"{scene:9s} N={n:3d} {order:9s} test mAP50 {statistics.mean(values):.3f} +- {spread:.3f} "
              f"({len(values)} seeds: {', '.join(f'{v:.3f}' for v in values)})")
    print(json.dumps({"rows": len(rows)}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
