"""A detector on disk: its weights as safetensors and its DetectorSpec as JSON. Reading one never unpickles, so a
model from a shared registry cannot run code on the host that loads it, and refactoring the detector's classes
needs no compatibility shims: only the spec's fields and the weights' names are the format."""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path

WEIGHTS, SPEC = "weights.safetensors", "spec.json"
FORMAT = "atom.detector/1"


def save(detector, folder: Path | str) -> None:
    from safetensors.torch import save_file

    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    # contiguous copies: safetensors refuses views that share storage (e.g. tied or sliced parameters)
    save_file({k: v.detach().contiguous() for k, v in detector.state_dict().items()}, str(folder / WEIGHTS),
              metadata={"format": FORMAT})
    (folder / SPEC).write_text(json.dumps({"format": FORMAT, "spec": detector.spec.to_dict()}, indent=1))


def load(folder: Path | str):
    """The Detector stored in `folder` by `save`, in eval mode. Raises ValueError naming the file and the reason."""
    from safetensors.torch import load_file

    from atom.models.detector import Detector, DetectorSpec

    folder = Path(folder)
    try:
        doc = json.loads((folder / SPEC).read_text())
        if doc.get("format") != FORMAT:
            raise ValueError(f"format {doc.get('format')!r}, expected {FORMAT!r}")
        known = {f.name for f in dataclasses.fields(DetectorSpec)}
        unknown = sorted(set(doc["spec"]) - known)
        if unknown:
            raise ValueError(f"fields {unknown} unknown to this version of ATOM (a newer one wrote it?)")
        spec = DetectorSpec(**doc["spec"])
    except (OSError, KeyError, TypeError, ValueError) as e:
        raise ValueError(f"{folder / SPEC}: not a detector spec: {e}") from None
    # The weights come from the file: the backbone's ImageNet weights would be loaded only to be overwritten.
    detector = Detector(dataclasses.replace(spec, pretrained=False))
    detector.spec = spec
    try:
        detector.load_state_dict(load_file(str(folder / WEIGHTS)), strict=True)
    except Exception as e:  # safetensors' own errors, a missing file, missing or unexpected keys
        raise ValueError(f"{folder / WEIGHTS}: does not hold this detector's weights: {e}") from None
    return detector.eval()
