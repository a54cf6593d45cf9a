"""Camera footage to candidate images: sample frames, drop near-duplicates, keep where each frame came from.

    atom data frames VIDEO_OR_FOLDER --out DIR [--every 2s | --count N] [--min-change 0.01] [--camera ID]

    DIR/<camera>/<video stem>-<ms>.jpg     kept frames (the time into the video, in milliseconds, in the name)
    DIR/frames.jsonl                       one line per kept frame: image, camera, source, time_s, recorded_at, ...
    DIR/frames-report.json                 redaction policy; per video: decoded, sampled, kept, near-duplicates, errors
    DIR/.contact_sheet.jpg                 the kept frames at a glance (hidden: not an image to label)
    DIR/.frames/<camera>/<stem>.json       per video, written when it is done: what a rerun skips

Fixed cameras film long runs of nearly identical frames (an empty road between two cars). A sampled frame is kept
only when it differs from every frame already kept for the same camera in more than `min_change` percent of its
area (a pixel differs when a colour channel moves by more than PIXEL_DELTA on a blurred 192-pixel-wide thumbnail),
so the empty background is kept once, not once per gap between cars. Why not a perceptual hash: on the shared
fixed-camera clips a global hash (pHash 64 bits, dHash 256 bits) moved as much between two empty frames (sensor
noise, a wet road) as for a pedestrian or cyclist entering the frame, so small objects, the ones city scenes are
about, were dropped with the duplicates; the changed area separated them (empty frames 0-0.005 %, a pedestrian
0.02-0.06 %, a car 2-87 %).

Resumable per video: a video whose record in .frames/ matches its size, modification time and the settings is
skipped, and its kept frames still count for its camera's later videos; an interrupted video is done again (same
file names, the same frames). A corrupt or truncated video is reported with the file and the frame where decoding
failed; the frames kept before it stay, and the other videos go on.

`--redact` (atom/privacy.py): frames leave the trusted zone, so faces (and, with a plate model, licence plates) are
blurred before they are written; each manifest line lists what was redacted and the report names the policy.
"""

from __future__ import annotations

import json
import math
import os
import re
import tempfile
from dataclasses import asdict, dataclass, field
from datetime import datetime, timedelta
from pathlib import Path

import numpy as np

from atom.errors import AtomError


VIDEO_SUFFIXES = {".mp4", ".m4v", ".mov", ".mkv", ".avi", ".ts", ".webm", ".flv", ".mpg", ".mpeg"}
THUMB_WIDTH = 192  # frames are compared as thumbnails this wide, blurred: compression noise averages out
PIXEL_DELTA = 40   # of 255, in any colour channel: a pixel that moved less is noise (rain, grain, codec)
RECORD_FORMAT = 2
CONTACT_SHEET = ".contact_sheet.jpg"


class FramesError(AtomError):
    """Footage cannot be read or the request is malformed; the message names the file and the reason."""


@dataclass(frozen=True)
class Sampling:
    every_s: float | None = 2.0   # a frame every `every_s` seconds of video ...
    count: int | None = None      # ... or about `count` frames spread over each video
    min_change: float = 0.01      # percent of the frame that must differ from every kept frame to keep it
    quality: int = 95             # JPEG quality of the written frames

    def __post_init__(self):
        if (self.every_s is None) == (self.count is None):
            raise FramesError("give one of --every (seconds between frames) or --count (frames per video)")
        if self.every_s is not None and not self.every_s > 0:
            raise FramesError(f"--every {self.every_s}: must be a positive duration")
        if self.count is not None and self.count < 1:
            raise FramesError(f"--count {self.count}: must be at least 1")
        if not 0 <= self.min_change < 100:
            raise FramesError(f"--min-change {self.min_change}: a percentage of the frame, 0 <= x < 100")


def parse_duration(text: str) -> float:
    """'2s', '500ms', '1.5', '1m' -> seconds."""
    match = re.fullmatch(r"\s*([0-9]*\.?[0-9]+)\s*(ms|s|m|min)?\s*", text)
    if not match:
        raise FramesError(f"--every {text!r}: a duration such as 2s, 500ms or 1m")
    value, unit = float(match.group(1)), match.group(2) or "s"
    return value * {"ms": 1e-3, "s": 1.0, "m": 60.0, "min": 60.0}[unit]


@dataclass
class VideoResult:
    source: str
    camera: str
    status: str = "done"            # done | failed | skipped (done by an earlier run)
    decoded: int = 0                # frames decoded
    sampled: int = 0                # frames due by the sampling interval
    kept: int = 0
    duplicates: int = 0             # sampled, dropped as near-duplicates of a kept frame
    duration_s: float = 0.0
    decode_s: float = 0.0
    error: str | None = None
    frames: list[dict] = field(default_factory=list)


def find_videos(path: Path) -> list[Path]:
    path = Path(path)
    if path.is_file():
        return [path]
    if not path.is_dir():
        raise FramesError(f"{path}: no such video file or folder")
    videos = sorted(p for p in path.rglob("*") if p.is_file() and p.suffix.lower() in VIDEO_SUFFIXES)
    if not videos:
        raise FramesError(f"{path}: no video files ({', '.join(sorted(VIDEO_SUFFIXES))})")
    return videos


def camera_of(video: Path, root: Path, camera: str | None) -> str:
    """The camera id: given, else the first folder under the input folder (one folder per camera), else the stem."""
    if camera:
        return camera
    if root.is_dir() and len(video.relative_to(root).parts) > 1:
        return video.relative_to(root).parts[0]
    return video.stem


def signature(image) -> np.ndarray:
    """What frames are compared by: a blurred colour thumbnail (int16, so that differences do not wrap)."""
    from PIL import Image, ImageFilter

    thumb = image.convert("RGB").resize((THUMB_WIDTH, max(1, THUMB_WIDTH * image.height // image.width)),
                                        Image.BILINEAR).filter(ImageFilter.GaussianBlur(1))
    return np.asarray(thumb, np.int16)


def change(sig: np.ndarray, kept: list[np.ndarray]) -> float:
    """Percent of the frame that differs from the closest kept frame (100 when nothing is kept yet)."""
    same = [k for k in kept if k.shape == sig.shape]
    if not same:
        return 100.0
    moved = (np.abs(np.stack(same) - sig[None]).max(axis=3) > PIXEL_DELTA).mean(axis=(1, 2))
    return float(moved.min() * 100)


def _write_jpeg(image, path: Path, quality: int) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.stem}-", suffix=".jpg", dir=path.parent)
    os.close(fd)
    try:
        image.save(tmp, quality=quality)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def _recorded_at(container) -> datetime | None:
    stamp = (container.metadata or {}).get("creation_time")
    try:
        return datetime.fromisoformat(stamp.replace("Z", "+00:00")) if stamp else None
    except ValueError:
        return None


def sample_video(video: Path, camera: str, out: Path, sampling: Sampling, kept: list[np.ndarray],
                 progress=None, redactor=None) -> VideoResult:
    """Decode one video, keep sampled frames that are no near-duplicate of `kept` (the signatures of the camera's
    frames kept so far, extended in place)."""
    import time

    import av

    result = VideoResult(source=str(video.resolve()), camera=camera)
    start = time.perf_counter()
    try:
        container = av.open(str(video))
    except (av.error.FFmpegError, OSError) as e:
        result.status, result.error = "failed", f"{video}: cannot open as video ({e})"
        return result
    with container:
        if not container.streams.video:
            result.status, result.error = "failed", f"{video}: no video stream"
            return result
        stream = container.streams.video[0]
        stream.thread_type = "AUTO"
        duration = (float(stream.duration * stream.time_base) if stream.duration
                    else (container.duration or 0) / 1e6)
        result.duration_s = round(duration, 3)
        every = sampling.every_s if sampling.every_s is not None else max(duration, 1e-3) / sampling.count
        recorded = _recorded_at(container)
        task = progress.add_task(video.name, total=stream.frames or None) if progress else None
        due = last_t = 0.0
        try:
            for index, frame in enumerate(container.decode(stream)):
                result.decoded += 1
                if task is not None:
                    progress.advance(task)
                t = frame.time if frame.time is not None else index / float(stream.average_rate or 25)
                last_t = t
                if t + 1e-6 < due:
                    continue
                due = (math.floor(t / every + 1e-6) + 1) * every
                result.sampled += 1
                image = frame.to_image()
                sig = signature(image)
                changed = change(sig, kept)
                if changed <= sampling.min_change:
                    result.duplicates += 1
                    continue
                name = f"{camera}/{video.stem}-{round(t * 1000):08d}.jpg"
                found = []
                if redactor is not None:  # the frames leave the trusted zone: faces (and plates) blurred
                    image, found = redactor(image)
                _write_jpeg(image, out / name, sampling.quality)
                kept.append(sig)
                entry = {"image": name, "camera": camera, "source": result.source, "frame_index": index,
                         "time_s": round(t, 3), "width": image.width, "height": image.height,
                         "changed_percent": round(min(changed, 100.0), 4)}
                if redactor is not None:
                    entry["redacted"] = [{"kind": kind, "box": [round(v, 1) for v in box], "score": round(score, 3)}
                                         for kind, box, score in found]
                if recorded:
                    entry["recorded_at"] = (recorded + timedelta(seconds=t)).isoformat()
                result.frames.append(entry)
        except (av.error.FFmpegError, OSError, ValueError) as e:
            result.status = "failed"
            result.error = (f"{video}: decoding failed at frame {result.decoded + 1} (after {last_t:.2f} s of "
                            f"footage): {e}; the {len(result.frames)} frames kept before it are written")
        if result.status == "done" and duration - last_t > max(1.0, 0.05 * duration):
            # Demuxers stop quietly at a cut or a damaged stretch: the declared duration tells it was not the end.
            result.status = "failed"
            result.error = (f"{video}: truncated or corrupt: decoding stopped at frame {result.decoded} "
                            f"({last_t:.2f} s) of {duration:.2f} s declared; the {len(result.frames)} frames kept "
                            f"before it are written")
        if task is not None:
            progress.remove_task(task)
    result.kept = len(result.frames)
    result.decode_s = round(time.perf_counter() - start, 3)
    return result


def _record_path(out: Path, camera: str, video: Path) -> Path:
    return out / ".frames" / camera / f"{video.stem}.json"


def _settings(sampling: Sampling, video: Path, redaction: dict | None) -> dict:
    stat = video.stat()
    return {"format": RECORD_FORMAT, "sampling": asdict(sampling), "size": stat.st_size, "mtime": stat.st_mtime_ns,
            "redaction": redaction}


def extract(path: Path, out: Path, sampling: Sampling, camera: str | None = None,
            show_progress: bool = False, redactor=None) -> list[VideoResult]:
    """Sample every video under `path` into `out`; returns one result per video (see the module's docstring).
    `redactor` (atom.privacy.Redactor): the written frames have faces (and plates) blurred, and the report says
    how (frames-report.json's "redaction")."""
    path, out = Path(path), Path(out)
    videos = find_videos(path)
    root = path if path.is_dir() else path.parent
    out.mkdir(parents=True, exist_ok=True)
    signatures: dict[str, list[np.ndarray]] = {}
    redaction = redactor.policy.describe() if redactor is not None else None
    results: list[VideoResult] = []
    progress = None
    if show_progress:
        from rich.progress import Progress

        progress = Progress(transient=True)
        progress.start()
    try:
        for video in videos:
            cam = camera_of(video, root, camera)
            kept = signatures.setdefault(cam, [])
            record_file = _record_path(out, cam, video)
            settings = _settings(sampling, video, redaction)
            record = json.loads(record_file.read_text()) if record_file.exists() else None
            if record and record["settings"] == settings and all((out / f["image"]).exists()
                                                                  for f in record["result"]["frames"]):
                result = VideoResult(**{**record["result"], "status": "skipped"})
                kept.extend(_signature_of(out / f["image"]) for f in result.frames)
            else:
                result = sample_video(video, cam, out, sampling, kept, progress, redactor)
                if result.status == "done":  # a failed video is tried again by the next run
                    _write_json(record_file, {"settings": settings, "result": asdict(result)})
            results.append(result)
    finally:
        if progress:
            progress.stop()
    _write_manifest(out, results, redaction)
    return results


def _signature_of(path: Path) -> np.ndarray:
    from PIL import Image

    with Image.open(path) as image:
        return signature(image)


def _write_json(path: Path, data) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_text(json.dumps(data, indent=1))
    os.replace(tmp, path)


def _write_manifest(out: Path, results: list[VideoResult], redaction: dict | None = None) -> None:
    """frames.jsonl, frames-report.json and the contact sheet, rebuilt from every video's result."""
    lines = [json.dumps(f) for r in results for f in r.frames]
    tmp = out / ".frames.jsonl.tmp"
    tmp.write_text("".join(line + "\n" for line in lines))
    os.replace(tmp, out / "frames.jsonl")
    report = {"redaction": redaction or "none: frames written as decoded (inside the trusted zone)",
              "videos": [{k: v for k, v in asdict(r).items() if k != "frames"} for r in results]}
    _write_json(out / "frames-report.json", report)
    frames = [f for r in results for f in r.frames]
    if frames:
        contact_sheet(out, frames, out / CONTACT_SHEET)


def read_manifest(folder: Path) -> dict[str, dict]:
    """frames.jsonl of a frames folder, keyed by image path relative to the folder; {} where there is none."""
    path = Path(folder) / "frames.jsonl"
    if not path.exists():
        return {}
    return {entry["image"]: entry for entry in map(json.loads, path.read_text().splitlines()) if entry}


def contact_sheet(folder: Path, frames: list[dict], path: Path, columns: int = 6, width: int = 256) -> Path:
    """A grid of thumbnails of the kept frames, each captioned with camera and time."""
    from PIL import Image, ImageDraw

    thumbs = []
    for f in frames:
        with Image.open(folder / f["image"]) as im:
            im = im.convert("RGB")
            im.thumbnail((width, width))
            thumbs.append((im.copy(), f"{f['camera']}  {f['time_s']:.1f} s"))
    height = max(t.height for t, _ in thumbs) + 16
    rows = math.ceil(len(thumbs) / columns)
    sheet = Image.new("RGB", (columns * width, rows * height), "white")
    draw = ImageDraw.Draw(sheet)
    for i, (thumb, caption) in enumerate(thumbs):
        x, y = (i % columns) * width, (i // columns) * height
        sheet.paste(thumb, (x, y))
        draw.text((x + 4, y + thumb.height + 2), caption, fill="black")
    sheet.save(path, quality=90)
    return path
