"""Camera footage to frames (`atom data frames`, atom/data/frames.py) on ../shared's fixed-camera clips: how fast
footage decodes, how fast it is sampled and compared, and how many sampled frames are kept or dropped as
near-duplicates at several `min_change` settings. Rows go to benchmarks/results/frames.jsonl; the kept frames and
their contact sheet of the default setting to outputs/benchmarks/frames/. Asserts nothing.

    .venv/bin/python benchmarks/frames.py
    .venv/bin/python benchmarks/frames.py --every 1 --min-change 0 0.005 0.01 0.05
"""

from __future__ import annotations

import argparse
import shutil
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from atom import PROJECT_ROOT  # noqa: E402
from atom.data.frames import Sampling, extract  # noqa: E402
from benchmarks import history, shared  # noqa: E402


def decode_rate(video: Path) -> tuple[int, float]:
    import av

    start = time.perf_counter()
    with av.open(str(video)) as container:
        stream = container.streams.video[0]
        stream.thread_type = "AUTO"
        frames = sum(1 for _ in container.decode(stream))
    return frames, frames / (time.perf_counter() - start)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--every", type=float, nargs="+", default=[2.0], help="seconds between sampled frames")
    ap.add_argument("--min-change", type=float, nargs="+", default=[0.0, 0.005, 0.01, 0.02, 0.05])
    args = ap.parse_args()
    if not shared.available("videos"):
        print(f"skipped: {shared.SHARED / 'videos'} not found")
        return 0
    videos = sorted((shared.SHARED / "videos").glob("*.mp4"))
    out_root = PROJECT_ROOT / "outputs" / "benchmarks" / "frames"
    for video in videos:
        frames, fps = decode_rate(video)
        print(f"{video.name}: {frames} frames, decode only {fps:.0f} frames/s")
        history.record("frames", {"video": video.name, "step": "decode"}, {"frames": frames, "decode_fps": round(fps)})
    for every in args.every:
        for min_change in args.min_change:
            out = out_root / f"every{every:g}-min{min_change:g}"
            shutil.rmtree(out, ignore_errors=True)
            start = time.perf_counter()
            results = extract(shared.SHARED / "videos", out, Sampling(every_s=every, min_change=min_change))
            total_s = time.perf_counter() - start
            for r in results:
                numbers = {"decoded": r.decoded, "sampled": r.sampled, "kept": r.kept, "duplicates": r.duplicates,
                           "seconds": r.decode_s, "frames_per_s": round(r.decoded / r.decode_s)}
                print(f"every {every:g} s  min_change {min_change:g} %  {Path(r.source).name:34s} "
                      f"{r.decoded} decoded, {r.sampled} sampled, {r.kept} kept, {r.duplicates} dropped  "
                      f"({numbers['frames_per_s']} frames/s with sampling and comparison)")
                history.record("frames", {"video": Path(r.source).name, "every_s": every, "min_change": min_change},
                               numbers)
            print(f"  -> {out} ({total_s:.1f} s with the contact sheet)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
