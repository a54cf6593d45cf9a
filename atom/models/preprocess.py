"""The detector's preprocessing, shared by evaluation, export verification and pre-annotation."""

from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np


def read_rgb(path: Path) -> np.ndarray:
    image = cv2.imread(str(path), cv2.IMREAD_COLOR)  # applies EXIF orientation, like the importer's size check
    if image is None:
        raise ValueError(f"{path}: cannot decode image")
    return cv2.cvtColor(image, cv2.COLOR_BGR2RGB)


def letterbox(image: np.ndarray, size: int) -> tuple[np.ndarray, float]:
    """Resize the longest side to `size` (aspect kept, bilinear), pad bottom/right with 0 to size x size.
    Returns the HxWx3 uint8 image and the scale (original -> letterboxed coordinates: multiply)."""
    h, w = image.shape[:2]
    scale = size / max(h, w)
    nh, nw = min(size, round(h * scale)), min(size, round(w * scale))
    out = np.zeros((size, size, 3), np.uint8)
    out[:nh, :nw] = cv2.resize(image, (nw, nh), interpolation=cv2.INTER_LINEAR)
    return out, scale


def to_batch(images: list[np.ndarray]) -> np.ndarray:
    """Letterboxed HxWx3 uint8 images -> float32 NCHW 0..255, the model's input."""
    return np.ascontiguousarray(np.stack(images).transpose(0, 3, 1, 2), dtype=np.float32)
