"""The validation report every import produces: problems with file and reason, counted by kind."""

from __future__ import annotations

import json
from collections import Counter
from dataclasses import asdict, dataclass, field

# Kinds of problems an import can find. Each is reported with its file; what happens to the sample is said here.
PROBLEM_KINDS = {
    "missing_image": "image file not found; sample skipped",
    "corrupt_image": "image cannot be decoded; sample skipped",
    "remote_image": "image is a remote URL (no downloads here); sample skipped",
    "outside_root": "image path points outside the allowed root; sample skipped",
    "degenerate_box": "box has zero or negative width/height after clipping; box dropped",
    "clipped_box": "box extends outside the image; clipped to the image",
    "unknown_label": "label not in the class list; box dropped",
    "polygon_row": "YOLO row has polygon coordinates, not a box; row dropped",
    "invalid_row": "annotation row cannot be parsed; row dropped",
    "rotated_box": "rotated box converted to its enclosing axis-aligned box",
    "unlabeled_task": "task has no submitted, non-cancelled annotation; not imported",
    "annotation_conflict": "several annotations for one image (across its tasks); the latest one is used",
    "missing_annotation": "image has no annotation file; imported with no boxes",
    "missing_split_file": "image listed in a split file has no annotation; sample skipped",
}


@dataclass(frozen=True)
class Problem:
    kind: str
    file: str
    reason: str


@dataclass
class ImportReport:
    problems: list[Problem] = field(default_factory=list)

    def add(self, kind: str, file: object, reason: str) -> None:
        if kind not in PROBLEM_KINDS:
            raise ValueError(f"unknown problem kind {kind!r}")
        self.problems.append(Problem(kind, str(file), reason))

    def counts(self) -> dict[str, int]:
        return dict(sorted(Counter(p.kind for p in self.problems).items()))

    def of_kind(self, kind: str) -> list[Problem]:
        return [p for p in self.problems if p.kind == kind]

    def to_json(self) -> str:
        return json.dumps(
            {"counts": self.counts(), "problems": [asdict(p) for p in self.problems]}, indent=1
        )
