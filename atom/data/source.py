"""What every importer reads a source format into, before validation turns it into a dataset version."""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from pathlib import Path

from atom.data.report import ImportReport

SPLITS = ("train", "val", "test")
SPLIT_ALIASES = {"train": "train", "val": "val", "valid": "val", "validation": "val", "test": "test"}


@dataclass(frozen=True)
class Box:
    """An annotated box. Coordinates are pixels, or fractions of the image size when `normalized`.

    A rotated box (Label Studio) is given by its unrotated top-left corner and size, turned by `rotation`
    degrees clockwise around that corner.
    """

    label: str
    x0: float
    y0: float
    x1: float
    y1: float
    normalized: bool = False
    rotation: float = 0.0

    def to_pixels(self, width: int, height: int) -> tuple[float, float, float, float]:
        sx, sy = (width, height) if self.normalized else (1, 1)
        x0, y0, x1, y1 = self.x0 * sx, self.y0 * sy, self.x1 * sx, self.y1 * sy
        if not self.rotation:
            return x0, y0, x1, y1
        w, h = x1 - x0, y1 - y0
        c, s = math.cos(math.radians(self.rotation)), math.sin(math.radians(self.rotation))
        xs = [x0, x0 + w * c, x0 + w * c - h * s, x0 - h * s]
        ys = [y0, y0 + w * s, y0 + w * s + h * c, y0 + h * c]
        return min(xs), min(ys), max(xs), max(ys)


@dataclass
class Sample:
    image: Path
    boxes: list[Box]
    split: str | None = None  # None: the dataset builder assigns one deterministically
    origin: str = ""  # where the boxes came from (label file, XML, task), named in box problems


@dataclass
class Source:
    """A source dataset as read from its format: samples, the declared class list if any, and problems so far."""

    samples: list[Sample]
    classes: list[str] | None
    report: ImportReport = field(default_factory=ImportReport)
    description: str = ""
    provenance: dict = field(default_factory=dict)  # goes to the version's card as is (e.g. feedback batches)


def normalize_split(name: str | None) -> str | None:
    if name is None:
        return None
    try:
        return SPLIT_ALIASES[name.lower()]
    except KeyError:
        raise ValueError(f"unknown split name {name!r}; expected one of {sorted(SPLIT_ALIASES)}") from None
