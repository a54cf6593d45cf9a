"""Side-by-side ONNX Runtime latency of our detector's exported graph and YOLOv8n's, in one run, same machine.

Each graph is timed at batch 1 (and batch 8), 2 intra-op threads, the same input size, median of `--runs` calls
after a warm-up, alternating between the graphs so that a change in the machine's load hits both. Our graph is the
bundle's network (decoded boxes + per-class scores, no NMS); YOLOv8n's is Ultralytics' ONNX export (decoded boxes +
class scores, no NMS): the same work. Weights do not change latency: ours are ImageNet + a fresh head, YOLOv8n is
built from its yaml (nothing is downloaded).

Ultralytics is a peer for this comparison only, never a dependency: `make bench-latency` runs this script with
.venv-peers (the project's packages + `ultralytics --no-deps`). Without Ultralytics only our graphs are timed.

    .venv-peers/bin/python benchmarks/latency.py [--size 320] [--models lite0 lite1 lite2] [--runs 200]
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
os.environ.setdefault("YOLO_OFFLINE", "1")
os.environ.setdefault("YOLO_AUTOINSTALL", "False")

from benchmarks import history  # noqa: E402


def our_graph(model: str, size: int | None, out: Path) -> tuple[Path, int]:
    """Export the detector config `model` (conf/model/<model>.yaml) at `size` (its own when None)."""
    import torch

    from atom.models.detector import Detector, DetectorSpec
    from exporters import onnx as onnx_export
    from recipes import compose

    cfg = dict(compose("train", [f"model={model}"]).model)
    size = size or cfg["input_size"]
    detector = Detector(DetectorSpec(**{**cfg, "classes": ["a", "b", "c", "d", "e"], "input_size": size})).eval()
    path = onnx_export.export(detector, torch.zeros(1, 3, size, size), out / model)
    return path, size


def yolo_graph(size: int, out: Path) -> Path | None:
    try:
        from ultralytics import YOLO
    except ImportError:
        return None
    import torch

    threads = torch.get_num_threads()  # Ultralytics changes torch's thread count at import
    cwd = os.getcwd()
    os.chdir(out)  # it writes next to the model file and the working directory
    try:
        path = YOLO("yolov8n.yaml").export(format="onnx", imgsz=size, simplify=False, opset=17, dynamic=True)
    finally:
        os.chdir(cwd)
        torch.set_num_threads(threads)
    return Path(out / path if not Path(path).is_absolute() else path)


def session(path: Path, threads: int):
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.intra_op_num_threads = threads
    options.inter_op_num_threads = 1
    return ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])


def time_interleaved(sessions: dict, size: int, batch: int, runs: int, warmup: int = 10) -> dict[str, float]:
    import numpy as np

    x = np.random.default_rng(0).uniform(0, 255, (batch, 3, size, size)).astype(np.float32)
    feeds = {name: {s.get_inputs()[0].name: x} for name, s in sessions.items()}
    for _ in range(warmup):
        for name, s in sessions.items():
            s.run(None, feeds[name])
    times = {name: [] for name in sessions}
    for _ in range(runs):
        for name, s in sessions.items():
            t = time.perf_counter()
            s.run(None, feeds[name])
            times[name].append((time.perf_counter() - t) * 1000)
    return {name: statistics.median(t) for name, t in times.items()}


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--size", type=int, default=320, help="input size for every graph (0: each model's own)")
    ap.add_argument("--models", nargs="+", default=["lite0"], help="detector configs (conf/model/)")
    ap.add_argument("--runs", type=int, default=200)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--batches", type=int, nargs="+", default=[1, 8])
    args = ap.parse_args()

    import onnxruntime as ort

    with tempfile.TemporaryDirectory() as tmp:
        out = Path(tmp)
        graphs, sizes = {}, {}
        for m in args.models:
            (out / m).mkdir()
            graphs[m], sizes[m] = our_graph(m, args.size or None, out)
        yolo = yolo_graph(args.size or 320, out) if args.size else None
        if yolo is not None:
            graphs["yolov8n"], sizes["yolov8n"] = yolo, args.size
        else:
            print("Ultralytics not importable (or --size 0): YOLOv8n is not timed")
        by_size: dict[int, dict] = {}
        for name, path in graphs.items():
            by_size.setdefault(sizes[name], {})[name] = session(path, args.threads)
        rows = []
        for size, sessions in by_size.items():
            for batch in args.batches:
                medians = time_interleaved(sessions, size, batch, args.runs if batch == 1 else max(args.runs // 4, 20))
                for name, ms in medians.items():
                    rows.append((name, size, batch, ms))
        print(f"ONNX Runtime {ort.__version__}, {args.threads} threads, median of {args.runs} (batch 1)")
        print(f"{'graph':<10} {'size':>5} {'batch':>5} {'ms':>8} {'ms/image':>9}")
        for name, size, batch, ms in rows:
            print(f"{name:<10} {size:>5} {batch:>5} {ms:8.2f} {ms / batch:9.2f}")
        recorded = []
        for name in graphs:
            numbers = {f"latency_ms_batch{b}": round(ms, 3) for n, _, b, ms in rows if n == name}
            numbers["onnx_mb"] = round(graphs[name].stat().st_size / 2**20, 2)
            recorded.append(history.record("latency", {"graph": name, "size": sizes[name],
                                                        "threads": args.threads}, numbers,
                                           {"onnxruntime": ort.__version__, "runs": args.runs}))
        if "yolov8n" in graphs:
            for m in args.models:
                if sizes[m] == sizes["yolov8n"]:
                    ours = next(ms for n, _, b, ms in rows if n == m and b == 1)
                    theirs = next(ms for n, _, b, ms in rows if n == "yolov8n" and b == 1)
                    print(f"{m} / yolov8n at batch 1, {sizes[m]} px: {ours / theirs:.2f}x")
        print("\n".join(history.compare("latency", recorded)))
    return 0


if __name__ == "__main__":
    sys.exit(main())
