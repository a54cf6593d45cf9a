"""Post-training quantization's inputs: calibration images from the model's training split, and the layers kept in
float. Too little calibration data, and quantized output layers, are how INT8 detectors commonly lose up to ten
points of mAP; the defaults (FORMATS: 300 images, float outputs) avoid both, and fewer images are warned about."""

from __future__ import annotations

import contextlib
import logging
import tempfile
from pathlib import Path

import numpy as np

log = logging.getLogger(__name__)

RECOMMENDED_IMAGES = 300
# The head's last layers (class logits, box distances + centerness) and everything after them: a quantization step
# there moves every score and box edge directly; the backbone and towers are where the time goes.
FLOAT_OUTPUTS = r"/heads\.\d+/(cls|reg)\.\d+/"


def calibration_batches(version, split: str, size: int, images: int, batch: int = 8) -> list[np.ndarray]:
    """Up to `images` letterboxed images of the split (float NCHW 0..255, batches of `batch`), spread evenly over it
    so that every part of the split (its scenes, cameras, times of day) is represented."""
    from atom.models.preprocess import letterbox, read_rgb, to_batch
    from exporters import ExportError

    files = [im["file_name"] for im in version.coco(split)["images"]]
    if not files:
        raise ExportError(f"{version.root}: split {split!r} has no images to calibrate on")
    chosen = [files[i] for i in np.linspace(0, len(files) - 1, min(images, len(files))).round().astype(int)]
    if len(chosen) < RECOMMENDED_IMAGES:
        log.warning("calibrating on %d images of %s/%s (< %d recommended): INT8 accuracy may suffer",
                    len(chosen), version.name, split, RECOMMENDED_IMAGES)
    return [to_batch([letterbox(read_rgb(version.root / f), size)[0] for f in chosen[i:i + batch]])
            for i in range(0, len(chosen), batch)]


def data_reader(batches: list[np.ndarray], input_name: str):
    """ONNX Runtime's calibration interface over the batches."""
    from onnxruntime.quantization import CalibrationDataReader

    class Reader(CalibrationDataReader):
        def __init__(self):
            self.batches = iter(batches)

        def get_next(self):
            batch = next(self.batches, None)
            return None if batch is None else {input_name: batch}

    return Reader()


@contextlib.contextmanager
def scratch_dir():
    """A temporary working directory for ONNX Runtime's quantization tools, which write temporary files (shape
    inference models, external data) into the current directory."""
    with tempfile.TemporaryDirectory(prefix="atom-quantize-") as tmp, contextlib.chdir(tmp):
        yield Path(tmp)
