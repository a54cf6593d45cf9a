"""Side-by-side ONNX Runtime latency of our detector's exported graph and YOLOv8n's, in one run, same machine.

Each graph is timed at batch 1 (and batch 8), 2 intra-op threads, the same input size, median of `--runs` calls,
the graphs taking turns in blocks so that a change in the machine's load hits both. Our graph is the bundle's
network as `atom export` writes it (decoded boxes + per-class scores, no NMS); YOLOv8n's is Ultralytics' ONNX export
with its default simplification (decoded boxes + class scores, no NMS): the same work, both through onnxslim. Weights do not change latency: ours are ImageNet + a fresh head, YOLOv8n is
built from its yaml (nothing is downloaded).

Ultralytics is a peer for this comparison only, never a dependency: `make bench-latency` runs this script with
.venv-peers (the project's packages + `ultralytics --no-deps`). Without Ultralytics only our graphs are timed.

    .venv-peers/bin/python benchmarks/latency.py [--models lite0 lite1 lite2] [--size S] [--runs 200]
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
    """Export the detector config `model` (conf/detector/<model>.yaml) at `size` (its own when None)."""
    import torch

    from atom.models.detector import Detector, DetectorSpec
    from exporters import onnx as onnx_export
    from recipes import compose

    from omegaconf import OmegaConf

    cfg = OmegaConf.to_container(compose("train", [f"detector={model}"]).detector)
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
        # simplify=True (Ultralytics' default) runs onnxslim, as our exporter does.
        path = YOLO("yolov8n.yaml").export(format="onnx", imgsz=size, simplify=True, opset=17, dynamic=True)
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


def time_alternating(sessions: dict, size: int, batch: int, runs: int, block: int = 20) -> dict[str, float]:
    """Median ms per call. The graphs take turns in blocks of `block` calls, so a change of the machine's load
    hits all of them; not call by call, since ONNX Runtime's idle threads spin for a while after a call and would
    slow the other graph's next call."""
    import numpy as np

    x = np.random.default_rng(0).uniform(0, 255, (batch, 3, size, size)).astype(np.float32)
    feeds = {name: {s.get_inputs()[0].name: x} for name, s in sessions.items()}
    times = {name: [] for name in sessions}
    for _ in range(max(runs // block, 1)):
        for name, s in sessions.items():
            for i in range(block + 3):  # 3 warm-up calls per block
                t = time.perf_counter()
                s.run(None, feeds[name])
                if i >= 3:
                    times[name].append((time.perf_counter() - t) * 1000)
    return {name: statistics.median(t) for name, t in times.items()}


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--models", nargs="+", default=["lite0"], help="detector configs (conf/detector/), each at its "
                    "own input size unless --size")
    ap.add_argument("--size", type=int, help="one input size for every detector")
    ap.add_argument("--yolo-size", type=int, default=320, help="YOLOv8n's input size (0: not timed)")
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
            graphs[m], sizes[m] = our_graph(m, args.size, out)
        yolo = yolo_graph(args.yolo_size, out) if args.yolo_size else None
        if yolo is not None:
            graphs["yolov8n"], sizes["yolov8n"] = yolo, args.yolo_size
        else:
            print("YOLOv8n not timed (Ultralytics is not importable here, or --yolo-size 0)")
        by_size: dict[int, dict] = {}
        for name, path in graphs.items():
            by_size.setdefault(sizes[name], {})[name] = session(path, args.threads)
        rows = []
        for size, sessions in sorted(by_size.items()):
            for batch in args.batches:
                runs = args.runs if batch == 1 else max(args.runs // 4, 20)
                rows += [(name, size, batch, ms) for name, ms in time_alternating(sessions, size, batch, runs).items()]
        print(f"ONNX Runtime {ort.__version__}, {args.threads} threads, median of {args.runs} calls at batch 1")
        print(f"{'graph':<10} {'size':>5} {'batch':>5} {'ms':>8} {'ms/image':>9}")
        for name, size, batch, ms in rows:
            print(f"{name:<10} {size:>5} {batch:>5} {ms:8.2f} {ms / batch:9.2f}")
        b1 = {name: ms for name, _, batch, ms in rows if batch == 1}
        for name in graphs:
            if name != "yolov8n" and "yolov8n" in b1 and sizes[name] == sizes["yolov8n"]:
                print(f"{name} / yolov8n, batch 1, {sizes[name]} px: {b1[name] / b1['yolov8n']:.2f}x")
            if name not in ("lite0", "yolov8n") and "lite0" in b1:
                print(f"{name} ({sizes[name]} px) / lite0 ({sizes['lite0']} px), batch 1: {b1[name] / b1['lite0']:.2f}x")
        recorded = []
        for name in graphs:
            numbers = {f"latency_ms_batch{b}": round(ms, 3) for n, _, b, ms in rows if n == name}
            numbers["onnx_mb"] = round(graphs[name].stat().st_size / 2**20, 2)
            recorded.append(history.record("latency", {"graph": name, "size": sizes[name], "threads": args.threads},
                                           numbers, {"onnxruntime": ort.__version__, "runs": args.runs}))
        print("\n".join(history.compare("latency", recorded)))
    return 0


if __name__ == "__main__":
    sys.exit(main())
