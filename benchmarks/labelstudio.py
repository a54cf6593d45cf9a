"""Label Studio throughput with a real local server: tasks imported per second and predictions pushed per second
for N tasks (default 500), plus a pull of the same tasks. Prints numbers; asserts nothing about time.

    .venv/bin/python benchmarks/labelstudio.py [--tasks 500]
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
os.environ.setdefault("NO_ALBUMENTATIONS_UPDATE", "1")

from benchmarks import history  # noqa: E402


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--tasks", type=int, default=500)
    args = ap.parse_args()

    import torch

    from atom.data.formats import read_source
    from atom.data.synthetic import CLASSES, make_sample
    from atom.labelstudio.connection import connect
    from atom.labelstudio.project import Scene, SceneProject
    from tests.servers import LocalServer
    from atom.models.detector import Detector, DetectorSpec

    torch.set_num_threads(2)
    with tempfile.TemporaryDirectory() as tmp:
        server = LocalServer(Path(tmp))
        t = time.perf_counter()
        server.start()
        numbers = {"tasks": args.tasks, "server_start_s": round(time.perf_counter() - t, 1)}
        try:
            export = make_sample(server.document_root / "bench", args.tasks)
            conn = connect(server.url, server.token)
            project = SceneProject(conn, Scene("bench", CLASSES, export.parent / "images"), server.document_root)

            t = time.perf_counter()
            created = project.ensure()["tasks_created"]
            numbers["tasks_imported_per_s"] = round(created / (time.perf_counter() - t), 1)

            source = read_source("labelstudio", export)  # ground-truth boxes as ready-made predictions
            t = time.perf_counter()
            project.import_labeled(source, model_version="bench-labels")
            numbers["predictions_pushed_per_s (push only)"] = round(args.tasks / (time.perf_counter() - t), 1)

            detector = Detector(DetectorSpec(classes=CLASSES, input_size=320)).eval()
            t = time.perf_counter()
            pushed = project.push_predictions(detector, "bench-model/1")["pushed"]
            numbers["predictions_pushed_per_s (with 320 px inference)"] = round(pushed / (time.perf_counter() - t), 1)

            for task in project.tasks()[:100]:
                project.client.annotations.create(id=task.id, result=[])
            t = time.perf_counter()
            version, _, _ = project.pull(Path(tmp) / "datasets", "bench")
            numbers["pull_100_annotated_s"] = round(time.perf_counter() - t, 2)
        finally:
            server.stop()
    print(json.dumps(numbers, indent=1))
    rows = [history.record("labelstudio", {"tasks": args.tasks}, numbers)]
    print("\n".join(history.compare("labelstudio", rows)))
    return 0


if __name__ == "__main__":
    sys.exit(main())
