"""Camera footage to frames (atom/data/frames.py, `atom data frames`): sampling, near-duplicates dropped per camera,
the manifest, resuming, and damaged footage reported by file and frame with the frames before it kept."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from atom.cli import main as atom


def write_video(path: Path, seconds: int = 10, fps: int = 10, moving: tuple[float, float] = (3.0, 6.0)) -> Path:
    """A fixed camera: an empty textured scene, and a red car crossing it between `moving` seconds."""
    import av

    scene = np.zeros((120, 160, 3), np.uint8)
    scene[:] = np.linspace(60, 160, 160, dtype=np.uint8)[None, :, None]  # asphalt under uneven light
    scene[100:104, :] = 230  # a stop line
    scene[10:25, 120:150] = (40, 120, 40)  # a hedge
    path.parent.mkdir(parents=True, exist_ok=True)
    with av.open(str(path), "w") as container:
        stream = container.add_stream("mpeg4", rate=fps)
        stream.width, stream.height, stream.pix_fmt = 160, 120, "yuv420p"
        stream.bit_rate = 4_000_000  # a camera's quality, not the encoder's default smear
        for i in range(seconds * fps):
            image = scene.copy()
            t = i / fps
            if moving[0] <= t < moving[1]:
                x = int((t - moving[0]) / (moving[1] - moving[0]) * 110)
                image[30:90, x:x + 50] = (200, 30, 30)
            for packet in stream.encode(av.VideoFrame.from_ndarray(image, format="rgb24")):
                container.mux(packet)
        for packet in stream.encode():
            container.mux(packet)
    return path


def read_lines(out: Path) -> list[dict]:
    return [json.loads(line) for line in (out / "frames.jsonl").read_text().splitlines()]


def test_fixed_camera_keeps_the_empty_scene_once_and_every_car_frame(tmp_path, capsys):
    video = write_video(tmp_path / "cam1.mkv")
    out = tmp_path / "frames"
    assert atom(["data", "frames", str(video), "--out", str(out), "--every", "1s", "--no-progress"]) == 0
    (report,) = json.loads((out / "frames-report.json").read_text())["videos"]
    assert report["decoded"] == 100 and report["sampled"] == 10 and report["status"] == "done"
    lines = read_lines(out)
    times = [f["time_s"] for f in lines]
    # 0 s: the empty scene; 1, 2 s and 6..9 s are that scene again (dropped); 3, 4, 5 s: the car, each elsewhere
    assert times == [0.0, 3.0, 4.0, 5.0], times
    assert report["kept"] == 4 and report["duplicates"] == 6
    for f in lines:
        assert (out / f["image"]).is_file() and f["camera"] == "cam1" and f["source"] == str(video.resolve())
        assert f["image"] == f"cam1/cam1-{round(f['time_s'] * 1000):08d}.jpg" and f["width"] == 160
    assert (out / ".contact_sheet.jpg").stat().st_size > 0

    capsys.readouterr()  # a second run skips the done video and keeps its frames and manifest
    assert atom(["data", "frames", str(video), "--out", str(out), "--every", "1s", "--no-progress"]) == 0
    assert "skipped" in capsys.readouterr().out and read_lines(out) == lines

    # other settings redo it: a frame every 0.5 s samples twice as many, and still keeps the empty scene once
    assert atom(["data", "frames", str(video), "--out", str(out), "--every", "500ms", "--no-progress"]) == 0
    (report,) = json.loads((out / "frames-report.json").read_text())["videos"]
    assert report["status"] == "done" and report["sampled"] == 20
    assert sum(1 for f in read_lines(out) if not 3.0 <= f["time_s"] < 6.0) == 1


def test_count_and_threshold_and_one_folder_per_camera(tmp_path):
    write_video(tmp_path / "videos" / "north" / "a.mkv")
    write_video(tmp_path / "videos" / "north" / "b.mkv", moving=(1.0, 2.0))  # the same camera, another hour
    out = tmp_path / "frames"
    assert atom(["data", "frames", str(tmp_path / "videos"), "--out", str(out), "--count", "5",
                 "--no-progress"]) == 0
    lines = read_lines(out)
    assert {f["camera"] for f in lines} == {"north"}
    # b.mkv's empty scene is a near-duplicate of the one a.mkv kept: the camera keeps it once over both files
    empty = [f for f in lines if not (3.0 <= f["time_s"] < 6.0 and "/a-" in f["image"])
             and not (1.0 <= f["time_s"] < 2.0 and "/b-" in f["image"])]
    assert len(empty) == 1, [f["image"] for f in empty]
    report = json.loads((out / "frames-report.json").read_text())["videos"]
    assert [r["sampled"] for r in report] == [5, 5]

    strict = tmp_path / "strict"  # a lenient setting keeps more: the codec's noise alone makes frames differ
    assert atom(["data", "frames", str(tmp_path / "videos"), "--out", str(strict), "--count", "5",
                 "--min-change", "0", "--no-progress"]) == 0
    assert len(read_lines(strict)) >= len(lines)


def test_damaged_footage_is_reported_by_file_and_frame_and_the_rest_goes_on(tmp_path, capsys):
    folder = tmp_path / "videos"
    good = write_video(folder / "good.mkv")
    whole = write_video(tmp_path / "whole.mkv").read_bytes()
    (folder / "cut.mkv").write_bytes(whole[:len(whole) // 2])  # a recorder that stopped mid-file
    (folder / "garbage.mp4").write_bytes(b"not a video" * 100)
    out = tmp_path / "frames"
    assert atom(["data", "frames", str(folder), "--out", str(out), "--every", "1s", "--no-progress"]) == 1
    err = capsys.readouterr().err
    assert f"{folder / 'cut.mkv'}: truncated or corrupt: decoding stopped at frame" in err
    assert f"{folder / 'garbage.mp4'}: cannot open as video" in err
    report = {Path(r["source"]).name: r for r in json.loads((out / "frames-report.json").read_text())["videos"]}
    assert report["cut.mkv"]["status"] == "failed" and report["cut.mkv"]["kept"] >= 2  # frames before the cut
    assert report["good.mkv"]["status"] == "done" and report["good.mkv"]["kept"] == 4
    cut_frames = [f for f in read_lines(out) if f["camera"] == "cut"]
    assert cut_frames and all((out / f["image"]).is_file() for f in cut_frames)
    assert good.exists()


def test_bad_requests_are_clear_errors(tmp_path, capsys):
    assert atom(["data", "frames", str(tmp_path / "nothing"), "--out", str(tmp_path / "o")]) == 1
    assert "no such video file or folder" in capsys.readouterr().err
    assert atom(["data", "frames", str(tmp_path), "--out", str(tmp_path / "o"), "--every", "soon"]) == 1
    assert "a duration such as 2s" in capsys.readouterr().err


def test_real_fixed_camera_footage(shared_datasets, tmp_path):
    out = tmp_path / "frames"
    assert atom(["data", "frames", str(shared_datasets / "videos"), "--out", str(out), "--every", "2s",
                 "--no-progress"]) == 0
    report = {Path(r["source"]).name: r for r in json.loads((out / "frames-report.json").read_text())["videos"]}
    assert set(report) == {"car-detection.mp4", "person-bicycle-car-detection.mp4"}
    for r in report.values():  # ~30 and ~38 s of footage, a frame every 2 s; long empty stretches are dropped
        assert r["status"] == "done" and r["decoded"] > 300 and r["duplicates"] > 0 and r["kept"] > 0
        assert r["sampled"] == r["kept"] + r["duplicates"]
    lines = read_lines(out)
    assert all(f["recorded_at"].startswith(("2018-", "2024-")) for f in lines)  # the container's creation time
