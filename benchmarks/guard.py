"""The accuracy guard's runs, defined once: tests/test_accuracy.py runs them with seed 0 and asserts FLOORS; this
script runs them over several seeds, records them in benchmarks/results/guard.jsonl, and prints the floors they
imply (mean of the seeds minus a margin of max(3 std, 0.05)).

- train: `atom train experiment=vehicles` for EPOCHS epochs (the schedule compressed into them), test mAP50;
- adapt: a base detector trained the same way without Motorcycle and Ambulance (`experiment=vehicles_base`),
  adapted with K=10 shots per new class by `atom adapt` (defaults), nAP50 on val+test.

    .venv/bin/python benchmarks/guard.py --seeds 3
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
os.environ.setdefault("NO_ALBUMENTATIONS_UPDATE", "1")

EPOCHS = 6  # 3.0-6.5 min of training on 2 CPU cores (guard.jsonl); the two guard tests take ~8-12 min

# Derived from `benchmarks/guard.py --seeds 3` (history: benchmarks/results/guard.jsonl): mean of seeds 0-2 minus
# max(3 std, 0.05). The seeds' spread is what remains once a seed repeats exactly (5979904); the margin keeps a
# fluke seed from failing CI, and is still well above what the regression gave (6 epochs at c7fc60c, seed 0).
# Another environment (the same pins, other unpinned packages; rows record their versions since 4c90bbd) gave
# seed 0 0.347 instead of 0.307 at 7c5ff52: within the margin, which is another reason for it.
FLOORS = {
    "train_test_mAP50": {"floor": 0.234, "measured": "0.307, 0.365, 0.383: 0.352 ± 0.039",
                         "commit": "eb427e9, repeated to the 4th digit at 4c90bbd"},
    "adapt_nAP50": {"floor": 0.388, "measured": "0.482, 0.483, 0.437: 0.468 ± 0.026",
                    "commit": "eb427e9, repeated to the 4th digit at 4c90bbd"},
}
MARGIN = {"min": 0.05, "stds": 3}


def _paths(dirs: dict, run_name: str) -> list[str]:
    return [f"paths.datasets={dirs['datasets']}", f"paths.output_dir={dirs['outputs']}", f"run_name={run_name}",
            *dirs.get("overrides", [])]


def train_run(dirs: dict, seed: int, experiment: str = "vehicles") -> dict:
    from recipes import compose
    from recipes.train import train

    return train(compose("train", [f"experiment={experiment}", f"trainer.max_epochs={EPOCHS}", f"seed={seed}",
                                   "callbacks.rich_progress=false", *_paths(dirs, f"guard-{experiment}-s{seed}")]))


def base_run(dirs: dict, seed: int) -> str:
    result = train_run(dirs, seed, "vehicles_base")
    return f"{result['model_name']}/{result['model_version']}"


def adapt_run(dirs: dict, base: str, seed: int) -> dict:
    from recipes import compose
    from recipes.adapt import adapt

    # ~export: the guard is about accuracy (the adapted models' exports are tested in tests/test_adapt.py)
    return adapt(compose("adapt", [f"model={base}", "data=vehicles", "shots=10", f"seed={seed}", "progress=false",
                                   "classes=[Motorcycle,Ambulance]", "~export",
                                   *_paths(dirs, f"guard-adapt-s{seed}")]))


def main() -> int:
    from benchmarks import history, shared

    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--seeds", type=int, default=3)
    ap.add_argument("--first-seed", type=int, default=0)
    ap.add_argument("--only", choices=["train", "adapt"], help="one of the two guards")
    ap.add_argument("--override", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                    help="a Hydra override for every run, e.g. threads=1 beside another benchmark (repeatable)")
    args = ap.parse_args()
    if not shared.available("vehicles"):
        print(f"skipped: {shared.SHARED / 'vehicles'} not found")
        return 0
    values: dict[str, list[float]] = {"train_test_mAP50": [], "adapt_nAP50": []}
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        dirs = {"datasets": Path(tmp) / "datasets", "outputs": Path(tmp) / "outputs", "overrides": args.overrides}
        shared.import_shared("vehicles", dirs["datasets"])
        for seed in range(args.first_seed, args.first_seed + args.seeds):
            if args.only in (None, "train"):
                t = time.perf_counter()
                r = train_run(dirs, seed)
                values["train_test_mAP50"].append(r["mAP50"])
                rows.append(history.record("guard", {"guard": "train", "epochs": EPOCHS, "seed": seed,
                                                            "overrides": args.overrides}, {
                    "test_mAP50": round(r["mAP50"], 4), "test_mAP50_95": round(r["mAP50_95"], 4),
                    "wall_min": round((time.perf_counter() - t) / 60, 2)}))
                print(rows[-1]["numbers"], flush=True)
            if args.only in (None, "adapt"):
                t = time.perf_counter()
                base = base_run(dirs, seed)
                r = adapt_run(dirs, base, seed)
                values["adapt_nAP50"].append(r["nAP50"])
                rows.append(history.record("guard", {"guard": "adapt", "epochs": EPOCHS, "shots": 10,
                                                            "seed": seed, "overrides": args.overrides}, {
                    "nAP50": round(r["nAP50"], 4), "bAP50": round(r["bAP50"], 4),
                    "wall_min": round((time.perf_counter() - t) / 60, 2)}))
                print(rows[-1]["numbers"], flush=True)
    commit = rows[-1]["commit"][:10] if rows else "?"
    for name, v in values.items():
        if len(v) > 1:
            mean, std = statistics.fmean(v), statistics.stdev(v)
            margin = max(MARGIN["stds"] * std, MARGIN["min"])
            print(f"{name}: {', '.join(f'{x:.3f}' for x in v)} -> mean {mean:.3f} ± {std:.3f}; "
                  f"floor {mean - margin:.3f} (margin {margin:.3f}) at {commit}")
    print("\n".join(history.compare("guard", rows)))
    return 0


if __name__ == "__main__":
    sys.exit(main())
