"""Export formats side by side on one trained detector: per format, the bundle `atom export` makes (verified on the
val split), then test mAP50 / mAP50:95 through the exported model (the same preprocessing and post-processing as
PyTorch's, so a difference is the format's), the change from PyTorch, batch-1 and batch-8 latency on this machine
(from export_report.json: median of 20 runs on real images), throughput relative to fp32 ONNX Runtime at batch 8,
and size. Rows go to benchmarks/results/formats.jsonl. Asserts nothing.

    .venv/bin/python benchmarks/formats.py                   # trains vehicles lite0, seed 0 (24 epochs, ~15 min)
    .venv/bin/python benchmarks/formats.py --model atom-vehicles-bench/1      # a registered model in --output
    .venv/bin/python benchmarks/formats.py --model ... --formats onnx-int8 \\
        --override export.args.calibration_method=entropy                     # one format, another setting
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
os.environ.setdefault("NO_ALBUMENTATIONS_UPDATE", "1")

from atom import PROJECT_ROOT  # noqa: E402
from benchmarks import history, shared  # noqa: E402

CONFIGS = ["onnx", "onnx-fp16", "onnx-int8", "openvino", "openvino-int8", "tensorrt"]  # conf/export/
HEADLINE = ("test_mAP50", "test_mAP50_95", "latency_ms_batch1", "latency_ms_batch8")


def trained_model(data: str, seed: int, out: Path) -> str:
    from recipes import compose
    from recipes.train import train

    result = train(compose("train", [f"experiment={data}", f"seed={seed}", f"paths.datasets={out / 'datasets'}",
                                     f"paths.output_dir={out}", f"run_name=formats-{data}-s{seed}",
                                     f"tracking.model_name=atom-{data}-bench", "tracking.alias=benchmark",
                                     "callbacks.rich_progress=false"]))
    return f"{result['model_name']}/{result['model_version']}"


def run(model: str, config: str, overrides: list[str], out: Path, pytorch: dict) -> dict | None:
    from omegaconf import OmegaConf

    from atom.evaluation import coco_evaluate, predict_split
    from exporters import FORMATS, ExportError, FormatUnavailable, format_module
    from recipes import compose
    from recipes.common import load_registered
    from recipes.export import export

    cfg = compose("export", [f"model={model}", f"export={config}", f"paths.datasets={out / 'datasets'}",
                             f"paths.output_dir={out}", *overrides])
    try:
        report = export(cfg)
    except FormatUnavailable as e:
        print(f"{config}: skipped: {e}")
        return None
    except ExportError as e:  # a refused export is a result too: its verification failed
        print(f"{config}: REFUSED: {e}")
        return None
    ref, detector, version = load_registered(cfg)
    name, args = cfg.export.format, OmegaConf.to_container(cfg.export.args)
    bundle = Path(report["bundle"])
    model_file = json.loads((bundle / "manifest.json").read_text())["model"]["file"]
    detect = format_module(FORMATS[name]).runner(bundle / model_file, **args)
    gt = version.coco("test", detector.spec.classes)
    if not pytorch:
        pytorch.update(coco_evaluate(gt, predict_split(detector, detector.spec, version, "test"))[0])
    test = coco_evaluate(gt, predict_split(detect, detector.spec, version, "test"))[0]
    v = report["verification"]
    numbers = {
        "test_mAP50": round(test["mAP50"], 4), "test_mAP50_95": round(test["mAP50_95"], 4),
        "pytorch_test_mAP50": round(pytorch["mAP50"], 4), "pytorch_test_mAP50_95": round(pytorch["mAP50_95"], 4),
        "delta_test_mAP50": round(test["mAP50"] - pytorch["mAP50"], 4),
        "delta_test_mAP50_95": round(test["mAP50_95"] - pytorch["mAP50_95"], 4),
        "delta_val_mAP50": round(v["exported"]["mAP50"] - v["pytorch"]["mAP50"], 4),
        "latency_ms_batch1": round(report["latency_ms_batch1"][name], 2),
        "latency_ms_batch8": round(report["latency_ms_batch8"][name], 2),
        "pytorch_latency_ms_batch8": round(report["latency_ms_batch8"]["pytorch"], 2),
        "size_MB": round(report["size_bytes"] / 1e6, 2), "verified": v["passed"],
        **({"calibration_images": report["calibration"]["images"]} if "calibration" in report else {})}
    setup = {"data": ref.tags["dataset.name"], "model": model, "format": config, "overrides": overrides}
    return history.record("formats", setup, numbers, {"model": model,
                                                      "export": OmegaConf.to_container(cfg.export, resolve=True)})


def table(rows: list[dict]) -> list[str]:
    onnx = next((r["numbers"]["latency_ms_batch8"] for r in rows if r["setup"]["format"] == "onnx"), None)
    lines = [f"{'format':<14} {'test mAP50':>10} {'Δ':>7} {'mAP50:95':>8} {'Δ':>7} {'b1 ms':>6} {'b8 ms':>7} "
             f"{'b8 vs onnx':>10} {'MB':>5}  overrides"]
    for r in rows:
        n = r["numbers"]
        speed = f"{onnx / n['latency_ms_batch8']:.2f}x" if onnx else "-"
        lines.append(f"{r['setup']['format']:<14} {n['test_mAP50']:>10.4f} {n['delta_test_mAP50']:>+7.4f} "
                     f"{n['test_mAP50_95']:>8.4f} {n['delta_test_mAP50_95']:>+7.4f} {n['latency_ms_batch1']:>6.1f} "
                     f"{n['latency_ms_batch8']:>7.1f} {speed:>10} {n['size_MB']:>5.1f}  "
                     f"{' '.join(r['setup']['overrides'])}")
    return lines


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--data", default="vehicles", choices=sorted(shared.FORMATS))
    ap.add_argument("--model", help="a registered model (NAME/VERSION) in --output's store; default: train one")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--formats", nargs="+", default=CONFIGS, choices=CONFIGS)
    ap.add_argument("--output", default=str(PROJECT_ROOT / "outputs" / "benchmarks"))
    ap.add_argument("--override", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                    help="a Hydra override of the export (repeatable)")
    args = ap.parse_args()
    if not shared.available(args.data):
        print(f"skipped: {shared.SHARED / args.data} not found")
        return 0
    out = Path(args.output)
    shared.import_shared(args.data, out / "datasets")
    from atom import tracking

    tracking.configure(out)
    model = args.model or trained_model(args.data, args.seed, out)
    rows, pytorch = [], {}
    for config in args.formats:
        row = run(model, config, args.overrides, out, pytorch)
        if row:
            print(f"{config}: {row['numbers']}", flush=True)
            rows.append(row)
    if rows:
        print(f"\n{model}, commit {rows[-1]['commit'][:12]}, {rows[-1]['machine']['cores']} cores; PyTorch test "
              f"mAP50 {pytorch['mAP50']:.4f}, mAP50:95 {pytorch['mAP50_95']:.4f}")
        print("\n".join(table(rows)))
        print("\n".join(history.compare("formats", rows, HEADLINE)))
    return 0


if __name__ == "__main__":
    sys.exit(main())
