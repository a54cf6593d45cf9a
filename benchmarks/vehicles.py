"""Benchmark on ../shared/datasets/vehicles: train throughput, test mAP after a training budget, and batch-1
latency of the network in PyTorch and onnxruntime. Prints numbers; asserts nothing about time.

    .venv/bin/python benchmarks/vehicles.py [--minutes 20] [hydra overrides...]
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from atom import PROJECT_ROOT  # noqa: E402

SHARED = PROJECT_ROOT.parent / "shared" / "datasets" / "vehicles"


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--minutes", type=float, default=22.0, help="wall-time bound on training (max_time)")
    ap.add_argument("--output", default=str(PROJECT_ROOT / "outputs" / "benchmarks"))
    ap.add_argument("overrides", nargs="*")
    args = ap.parse_args()
    if not SHARED.exists():
        print(f"skipped: {SHARED} not found (the benchmark needs ../shared/datasets/vehicles)")
        return 0

    from atom.data.formats import read_source
    from atom.data.version import write_version
    from recipes import compose
    from recipes.export import export
    from recipes.train import train

    out = Path(args.output)
    datasets = out / "datasets"
    t = time.perf_counter()
    version, _ = write_version(read_source("yolo", SHARED), datasets, "vehicles")
    print(f"import: {time.perf_counter() - t:.1f} s, version {version.card['version']}")

    minutes = int(args.minutes)
    seconds = round((args.minutes - minutes) * 60)
    common = [f"paths.datasets={datasets}", f"paths.output_dir={out}"]
    cfg = compose("train", ["experiment=vehicles", *common, "run_name=vehicles-benchmark",
                            f"trainer.max_time=00:00:{minutes:02d}:{seconds:02d}", "tracking.alias=benchmark",
                            *args.overrides])
    t = time.perf_counter()
    result = train(cfg)
    train_min = (time.perf_counter() - t) / 60
    exp = export(compose("export", [*common, f"registered_model={result['model_name']}/{result['model_version']}"]))
    lat = exp["latency_ms_batch1"]
    numbers = {
        "train_budget_min": args.minutes, "train_wall_min": round(train_min, 2), "epochs": result["epochs"],
        "train_images_per_s": result["train_images_per_s"], "input_size": cfg.model.input_size,
        "test_mAP50": round(result["mAP50"], 4), "test_mAP50_95": round(result["mAP50_95"], 4),
        "test_AP50_per_class": {k: round(v["AP50"], 3) for k, v in result["per_class"].items()},
        "latency_ms_batch1_pytorch": round(lat["pytorch"], 1), "latency_ms_batch1_onnxruntime": round(lat["onnx"], 1),
        "onnxruntime_over_pytorch": round(lat["onnx"] / lat["pytorch"], 2),
        "export_verification": {k: exp["verification"][k] for k in ("passed", "max_box_error_relative",
                                                                    "map_abs_diff")},
        "model": f"{result['model_name']}/{result['model_version']}", "bundle": exp["bundle"],
    }
    print(json.dumps(numbers, indent=1))
    (out / "vehicles.json").write_text(json.dumps(numbers, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
