"""The benchmarks' history: every benchmark run appends its numbers, with where they were measured (git commit,
date, machine, the composed config), to a committed file `benchmarks/results/<benchmark>.jsonl`, and sets them
beside the last recorded numbers of the same setup, flagging a drop beyond the recorded spread.

    .venv/bin/python benchmarks/history.py                 # the latest recorded setups of every benchmark
    .venv/bin/python benchmarks/history.py vehicles        # one benchmark

A row: {"benchmark", "setup": what makes runs comparable (dataset, model size, K, variant, ... and the seed),
"numbers": flat name -> value, "commit", "date", "machine": {cores, torch_threads, cpu, torch}, "config"}.
Runs of one setup that differ only in their seed form a group; a group's spread is its standard deviation.
"""

from __future__ import annotations

import json
import os
import platform
import statistics
import sys
from datetime import datetime, timezone
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

RESULTS = Path(__file__).resolve().parent / "results"
# Without a recorded spread (a single earlier run), a drop counts beyond this share of the earlier value.
DEFAULT_RELATIVE_SPREAD = 0.05


def machine() -> dict:
    import torch

    cpu = next((line.split(":", 1)[1].strip() for line in _read("/proc/cpuinfo").splitlines()
                if line.startswith("model name")), platform.processor())
    return {"cores": os.cpu_count(), "torch_threads": torch.get_num_threads(), "cpu": cpu,
            "torch": torch.__version__, "python": platform.python_version(), "packages": _versions()}


# Recorded because the code is not all that shapes a result: numpy, opencv and pillow are not pinned in
# pyproject.toml, and the guard's training run, seed 0, gave 0.307 at eb427e9 and 0.347 at 7c5ff52 although
# `git diff eb427e9 7c5ff52` changes nothing it runs.
PACKAGES = ("timm", "pytorch-lightning", "albumentations", "numpy", "opencv-python-headless", "pillow",
            "onnxruntime", "faster-coco-eval", "openvino", "nncf")


def _versions() -> dict:
    from importlib.metadata import PackageNotFoundError, version

    def get(name):
        try:
            return version(name)
        except PackageNotFoundError:
            return None
    return {name: get(name) for name in PACKAGES}


def _read(path: str) -> str:
    try:
        return Path(path).read_text()
    except OSError:
        return ""


def record(benchmark: str, setup: dict, numbers: dict, config: dict | None = None) -> dict:
    """Append one run to the history and return the row."""
    from atom.tracking import git_commit

    row = {"benchmark": benchmark, "setup": setup, "numbers": numbers, "commit": git_commit(),
           "date": datetime.now(timezone.utc).isoformat(timespec="seconds"), "machine": machine(),
           "config": config or {}}
    RESULTS.mkdir(parents=True, exist_ok=True)
    with (RESULTS / f"{benchmark}.jsonl").open("a") as f:
        f.write(json.dumps(row, default=str) + "\n")
    return row


def load(benchmark: str) -> list[dict]:
    path = RESULTS / f"{benchmark}.jsonl"
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()] if path.exists() else []


def group_key(setup: dict) -> str:
    """Runs that differ only in their seed are one group."""
    return json.dumps({k: v for k, v in setup.items() if k != "seed"}, sort_keys=True)


HIGHER_IS_BETTER = ("mAP", "AP50", "per_s")  # name parts: accuracy, throughput
LOWER_IS_BETTER = ("latency", "_ms", "wall", "_min", "_mb")  # time, size


def direction(name: str) -> int:
    """+1: higher is better, -1: lower is better, 0: neither (counts, settings)."""
    if any(p in name for p in HIGHER_IS_BETTER):
        return 1
    return -1 if any(p in name for p in LOWER_IS_BETTER) else 0


def groups(rows: list[dict]) -> dict[tuple[str, str], list[dict]]:
    """(setup group, commit) -> rows, in the order first recorded."""
    out: dict[tuple[str, str], list[dict]] = {}
    for r in rows:
        out.setdefault((group_key(r["setup"]), r["commit"]), []).append(r)
    return out


def _numeric(v) -> bool:
    return isinstance(v, (int, float)) and not isinstance(v, bool)


def spread(values: list[float]) -> float:
    """The sample standard deviation over seeds; 0 for a single run."""
    return statistics.stdev(values) if len(values) > 1 else 0.0


def mean_std(values: list[float]) -> str:
    return f"{statistics.fmean(values):.3f} ± {spread(values):.3f}"


def summary(rows: list[dict]) -> dict[str, tuple[float, float, int]]:
    """name -> (mean, standard deviation, runs) over rows, for the numeric numbers."""
    names = {n for r in rows for n, v in r["numbers"].items() if _numeric(v)}
    out = {}
    for n in sorted(names):
        vals = [float(r["numbers"][n]) for r in rows if _numeric(r["numbers"].get(n))]
        out[n] = (statistics.fmean(vals), spread(vals), len(vals))
    return out


def compare(benchmark: str, new: list[dict], names: tuple[str, ...] | None = None) -> list[str]:
    """Lines setting the new rows' numbers (grouped by setup; `names`: only those) beside the last recorded group
    of the same setup at an earlier commit; a drop beyond max(2 x the larger recorded spread, 5 % of the earlier
    value) is flagged DROP."""
    history = load(benchmark)
    new_ids = {id(r) for r in new}
    lines = []
    for key in dict.fromkeys(group_key(r["setup"]) for r in new):
        ours = [r for r in new if group_key(r["setup"]) == key]
        commit = ours[-1]["commit"]
        earlier = [r for r in history if group_key(r["setup"]) == key and r["commit"] != commit
                   and id(r) not in new_ids]
        lines.append(f"{benchmark} {key}")
        now = {n: v for n, v in summary(ours).items() if names is None or n in names}
        if not earlier:
            lines += [f"  {n:<32} {m:10.4f} ± {s:.4f} (n={k})   no earlier record" for n, (m, s, k) in now.items()]
            continue
        last_commit = earlier[-1]["commit"]
        before = summary([r for r in earlier if r["commit"] == last_commit])
        lines.append(f"  against {last_commit[:12]} (the last recorded commit of this setup)")
        for n, (m, s, k) in now.items():
            if n not in before:
                lines.append(f"  {n:<32} {m:10.4f} ± {s:.4f} (n={k})   not recorded before")
                continue
            bm, bs, bk = before[n]
            spread = max(2 * max(s, bs), DEFAULT_RELATIVE_SPREAD * abs(bm))
            d = direction(n)
            flag = "DROP" if d and (m - bm) * d < -spread else ""
            lines.append(f"  {n:<32} {m:10.4f} ± {s:.4f} (n={k})   was {bm:10.4f} ± {bs:.4f} (n={bk})  {flag}")
    return lines


def main() -> int:
    names = sys.argv[1:] or sorted(p.stem for p in RESULTS.glob("*.jsonl"))
    for name in names:
        rows = load(name)
        if not rows:
            print(f"{name}: no recorded runs")
            continue
        print(f"{name}: {len(rows)} runs recorded")
        for (key, commit), group in groups(rows).items():
            numbers = "  ".join(f"{n} {m:.4f}±{s:.4f}" for n, (m, s, _) in summary(group).items()
                                if direction(n))
            print(f"  {commit[:12]} {group[-1]['date'][:10]} n={len(group)} {key}\n      {numbers}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
