"""DVC with many small files: how long tracking, `dvc push` and a pull into a fresh clone take for dataset versions,
to a local-folder remote and to an S3-compatible server (moto on 127.0.0.1; a real S3/MinIO adds network latency
per request, so per-file cost matters more there). Two layouts: `files` (`dvc add` of the version folder, one DVC
object per file) and `shards` (what ATOM does, atom/data/remote.py: `track` packs tar shards and adds them; the pull
is `atom data pull`, which also unpacks and checks every image's sha256). Versions: ../shared's vehicles and a
synthetic version of N small images (default 10,000: random-noise JPEGs, one box each), each in its own git + DVC
repository. Rows go to benchmarks/results/dvc_transfer.jsonl. Asserts nothing.

    .venv/bin/python benchmarks/dvc_transfer.py                   # vehicles + 10k synthetic, both layouts, local and s3
    .venv/bin/python benchmarks/dvc_transfer.py --images 2000 --remotes local --layouts shards
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from benchmarks import history, shared  # noqa: E402
from tests.servers import start_s3  # noqa: E402

GIT = ["git", "-c", "user.email=bench@atom", "-c", "user.name=bench"]


def dvc(repo: Path, *args: str) -> float:
    start = time.perf_counter()
    subprocess.run([sys.executable, "-m", "dvc", *args], cwd=repo, check=True, capture_output=True,
                   env={**os.environ, "DVC_NO_ANALYTICS": "1"})
    return time.perf_counter() - start


def synthetic_coco(folder: Path, n: int) -> Path:
    """n small JPEGs (96x96 noise) with one box each, as a COCO file."""
    import numpy as np
    from PIL import Image

    rng = np.random.default_rng(0)
    (folder / "images").mkdir(parents=True)
    coco = {"images": [], "annotations": [], "categories": [{"id": 1, "name": "thing"}]}
    for i in range(n):
        name = f"{i:06d}.jpg"
        Image.fromarray(rng.integers(0, 255, (96, 96, 3), dtype=np.uint8)).save(folder / "images" / name, quality=80)
        coco["images"].append({"id": i + 1, "file_name": f"images/{name}", "width": 96, "height": 96})
        coco["annotations"].append({"id": i + 1, "image_id": i + 1, "category_id": 1, "bbox": [10, 10, 40, 40],
                                    "area": 1600, "iscrowd": 0})
    (folder / "annotations.json").write_text(json.dumps(coco))
    return folder / "annotations.json"


def measure(name: str, source: tuple[str, Path], tmp: Path, remotes: dict[str, list[list[str]]],
            layout: str) -> list[dict]:
    from atom.cli import main as atom
    from atom.data import remote as atom_remote
    from atom.data.version import DatasetVersion

    repo = tmp / f"repo-{name}-{layout}"
    repo.mkdir()
    subprocess.run(["git", "init", "-q"], cwd=repo, check=True)
    (repo / ".gitignore").write_text((Path(__file__).resolve().parents[1] / ".gitignore").read_text())
    dvc(repo, "init", "-q")
    for setup in remotes.values():
        for args in setup:
            dvc(repo, *[a.replace("{tmp}", str(tmp)) for a in args])
    start = time.perf_counter()
    assert atom(["data", "import", "--format", source[0], str(source[1]), "--name", name,
                 "--datasets", str(repo / "datasets"), "--no-dvc"]) == 0
    import_s = time.perf_counter() - start
    (version,) = [p for p in (repo / "datasets" / name).iterdir() if (p / "card.json").exists()]
    files = sum(1 for p in version.rglob("*") if p.is_file())
    size_mb = sum(p.stat().st_size for p in version.rglob("*") if p.is_file()) / 1e6
    start = time.perf_counter()
    if layout == "files":
        dvc(repo, "add", "--quiet", str(version.relative_to(repo)))
    else:
        atom_remote.track(DatasetVersion(version))
    add_s = time.perf_counter() - start
    objects = files if layout == "files" else len(list(atom_remote.shards_dir(version).iterdir()))
    subprocess.run(["git", "add", "-A"], cwd=repo, check=True)
    subprocess.run([*GIT, "commit", "-qm", "data"], cwd=repo, check=True)
    rows = []
    for remote in remotes:
        push_s = dvc(repo, "push", "--quiet", "-r", remote)
        fresh = tmp / f"clone-{name}-{remote}"
        subprocess.run(["git", "clone", "-q", str(repo), str(fresh)], check=True)
        start = time.perf_counter()
        if layout == "files":
            dvc(fresh, "pull", "--quiet", "-r", remote)
        else:
            assert atom(["data", "pull", f"{name}@{version.name}", "-r", remote,
                         "--datasets", str(fresh / "datasets")]) == 0
        pull_s = time.perf_counter() - start
        pulled = sum(1 for p in (fresh / "datasets" / name / version.name).rglob("*") if p.is_file())
        numbers = {"files": files, "objects": objects, "size_MB": round(size_mb, 1), "import_s": round(import_s, 1),
                   "track_s": round(add_s, 1), "push_s": round(push_s, 1), "pull_s": round(pull_s, 1),
                   "push_files_per_s": round(files / push_s, 1), "pull_files_per_s": round(files / pull_s, 1),
                   "pulled_files": pulled}
        print(f"{name:15s} {layout:6s} {remote:6s} {files:6d} files ({objects:5d} objects) {size_mb:7.1f} MB  "
              f"track {add_s:5.1f} s  push {push_s:5.1f} s  pull {pull_s:5.1f} s  "
              f"({files / push_s:7.1f} / {files / pull_s:7.1f} files/s)", flush=True)
        rows.append(history.record("dvc_transfer", {"data": name, "remote": remote, "layout": layout}, numbers))
        shutil.rmtree(fresh)
    return rows


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--images", type=int, default=10_000, help="images of the synthetic version")
    ap.add_argument("--remotes", nargs="+", default=["local", "s3"], choices=["local", "s3"])
    ap.add_argument("--layouts", nargs="+", default=["files", "shards"], choices=["files", "shards"])
    args = ap.parse_args()
    with tempfile.TemporaryDirectory(prefix="atom-dvc-bench-") as tmp_name:
        tmp = Path(tmp_name)
        remotes: dict[str, list[list[str]]] = {}
        server = None
        if "local" in args.remotes:
            remotes["local"] = [["remote", "add", "local", "{tmp}/local-remote"]]
        if "s3" in args.remotes:
            server, url = start_s3(tmp, "atom-bench")
            remotes["s3"] = [["remote", "add", "s3", "s3://atom-bench/dvc"],
                             ["remote", "modify", "s3", "endpointurl", url]]
        try:
            sources = {}
            if shared.available("vehicles"):
                sources["vehicles"] = ("yolo", shared.SHARED / "vehicles")
            else:
                print(f"vehicles: skipped ({shared.SHARED / 'vehicles'} not found)")
            sources[f"synthetic{args.images}"] = ("coco", synthetic_coco(tmp / "synthetic-src", args.images))
            for name, source in sources.items():
                for layout in args.layouts:
                    measure(name, source, tmp, remotes, layout)
        finally:
            if server:
                server.terminate()
                server.wait(timeout=30)
    return 0


if __name__ == "__main__":
    sys.exit(main())
