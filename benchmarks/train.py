"""Training benchmark on the shared real datasets: per dataset, detector size and seed, `atom train` with the
dataset's experiment config, then test mAP, training time and throughput, parameters and (with --export) the
verified ONNX bundle's batch-1/batch-8 latency. Every run is recorded in benchmarks/results/train.jsonl and the
table (mean ± std over seeds) is set beside the last recorded runs of the same setup. Asserts nothing.

    .venv/bin/python benchmarks/train.py                                     # vehicles, lite0, seed 0, exported
    .venv/bin/python benchmarks/train.py --models lite0 lite1 lite2 --seeds 3   # the model-size ladder
    .venv/bin/python benchmarks/train.py --report --models lite0 lite1 lite2   # the table of recorded runs
    .venv/bin/python benchmarks/train.py --data vehicles --seeds 2 --no-export \\
        --override trainer.max_epochs=6 --override detector.freeze_bn=false     # a screening of one setting
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
os.environ.setdefault("NO_ALBUMENTATIONS_UPDATE", "1")

from atom import PROJECT_ROOT  # noqa: E402
from benchmarks import history, shared  # noqa: E402


HEADLINE = ("test_mAP50", "test_mAP50_95", "train_wall_min", "train_images_per_s", "onnx_latency_ms_batch1")


def run(data: str, model: str, seed: int, overrides: list[str], out: Path, export: bool) -> dict:
    from omegaconf import OmegaConf

    from recipes import compose
    from recipes.export import export as export_model
    from recipes.train import train

    common = [f"paths.datasets={out / 'datasets'}", f"paths.output_dir={out}"]
    run_name = f"{data}-{model}-s{seed}"
    cfg = compose("train", [f"experiment={data}", f"detector={model}", f"seed={seed}", *common, f"run_name={run_name}",
                            f"tracking.model_name=atom-{data}-bench", "tracking.alias=benchmark",
                            "callbacks.rich_progress=false", *overrides])
    t = time.perf_counter()
    result = train(cfg)
    numbers = {"test_mAP50": round(result["mAP50"], 4), "test_mAP50_95": round(result["mAP50_95"], 4),
               "best_val_mAP50": round(result["best_val_mAP50"], 4), "epochs": result["epochs"],
               "train_wall_min": round((time.perf_counter() - t) / 60, 2),
               "train_images_per_s": result["train_images_per_s"], "parameters_M": result["parameters_M"],
               **{f"test_AP50_{c}": round(v["AP50"], 3) for c, v in result["per_class"].items()}}
    if export:
        exp = export_model(compose("export", [*common, f"model={result['model_name']}/"
                                                       f"{result['model_version']}"]))
        numbers.update({"onnx_latency_ms_batch1": round(exp["latency_ms_batch1"]["onnx"], 2),
                        "pytorch_latency_ms_batch1": round(exp["latency_ms_batch1"]["pytorch"], 2),
                        "export_verified": exp["verification"]["passed"]})
        if "latency_ms_batch8" in exp:
            numbers["onnx_latency_ms_batch8"] = round(exp["latency_ms_batch8"]["onnx"], 2)
    setup = {"data": data, "model": model, "overrides": overrides, "seed": seed}
    return history.record("train", setup, numbers, OmegaConf.to_container(cfg, resolve=True))


def table(rows: list[dict]) -> list[str]:
    """mean ± std over seeds per setup."""
    lines = [f"{'data':<9} {'model':<6} {'seeds':>5} {'test mAP50':>15} {'test mAP50:95':>15} {'train min':>9} "
             f"{'img/s':>6} {'params M':>8} {'ORT b1 ms':>9}  overrides"]
    for key, group in history.groups(rows).items():
        s = group[0]["setup"]
        f = lambda n: [r["numbers"][n] for r in group if n in r["numbers"]]  # noqa: E731
        lat = f"{statistics.fmean(f('onnx_latency_ms_batch1')):.1f}" if f("onnx_latency_ms_batch1") else "-"
        lines.append(f"{s['data']:<9} {s['model']:<6} {len(group):>5} {history.mean_std(f('test_mAP50')):>15} "
                     f"{history.mean_std(f('test_mAP50_95')):>15} {statistics.fmean(f('train_wall_min')):>9.1f} "
                     f"{statistics.fmean(f('train_images_per_s')):>6.1f} {group[0]['numbers']['parameters_M']:>8.2f} "
                     f"{lat:>9}  {' '.join(s['overrides'])}")
    return lines


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--data", nargs="+", default=["vehicles"], choices=sorted(shared.FORMATS))
    ap.add_argument("--models", nargs="+", default=["lite0"], help="detector configs (conf/detector/)")
    ap.add_argument("--seeds", type=int, default=1)
    ap.add_argument("--first-seed", type=int, default=0)
    ap.add_argument("--no-export", dest="export", action="store_false", help="skip the ONNX export and latency")
    ap.add_argument("--output", default=str(PROJECT_ROOT / "outputs" / "benchmarks"))
    ap.add_argument("--override", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                    help="a Hydra override for every run (repeatable)")
    ap.add_argument("--report", action="store_true", help="train nothing: the table of the recorded runs of the "
                    "current commit (or --commit) for --data and --models, e.g. after runs made one at a time")
    ap.add_argument("--commit", help="with --report: the commit (a prefix) whose runs to show")
    args = ap.parse_args()
    if args.report:
        from atom.tracking import git_commit

        commit = args.commit or git_commit()
        rows = [r for r in history.load("train") if r["commit"].startswith(commit)
                and r["setup"]["data"] in args.data and r["setup"]["model"] in args.models
                and r["setup"]["overrides"] == args.overrides]
        print(f"recorded runs of commit {commit[:12]}" + (f", overrides {args.overrides}" if args.overrides else ""))
        print("\n".join(table(rows)) if rows else "none")
        return 0
    out = Path(args.output)
    rows = []
    for data in args.data:
        if not shared.available(data):
            print(f"skipped {data}: {shared.SHARED / data} not found")
            continue
        shared.import_shared(data, out / "datasets")
        for model in args.models:
            for seed in range(args.first_seed, args.first_seed + args.seeds):
                row = run(data, model, seed, args.overrides, out, args.export)
                print(f"{data} {model} seed {seed}: {row['numbers']}", flush=True)
                rows.append(row)
    if rows:
        print(f"\ncommit {rows[-1]['commit'][:12]}, {rows[-1]['machine']['cores']} cores, "
              f"{rows[-1]['machine']['torch_threads']} torch threads")
        print("\n".join(table(rows)))
        print("\n".join(history.compare("train", rows, HEADLINE)))
    return 0


if __name__ == "__main__":
    sys.exit(main())
