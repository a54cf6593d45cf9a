"""The python_function flavour of a registered detector (atom/flavor.py): MLflow calls `_load_pyfunc` with the
logged model's bundle folder, for `mlflow.pyfunc.load_model("models:/NAME@ALIAS")` and `mlflow models serve`.

Input: images as base64-encoded files (JPEG, PNG, ...): a DataFrame with an `image` column, a list, or
{"image": [...]}; served, e.g. `{"dataframe_split": {"columns": ["image"], "data": [["<base64>"]]}}`.
Output: a DataFrame with one row per detection: image (its index in the input), x0, y0, x1, y1 (original pixels),
score, label (class index), class.
"""

from __future__ import annotations

import base64
from pathlib import Path

from atom.runtime.bundle import Bundle, BundleError, read_rgb

COLUMNS = ["image", "x0", "y0", "x1", "y1", "score", "label", "class"]


def _load_pyfunc(path: str) -> "ServedDetector":
    if not (Path(path) / "manifest.json").is_file():
        raise BundleError(f"{path}: this model version has no verified ONNX bundle yet; "
                          "export it first: atom export model=NAME/VERSION")
    return ServedDetector(Bundle(path))


class ServedDetector:
    def __init__(self, bundle: Bundle):
        self.bundle = bundle

    def predict(self, model_input, params=None):
        import pandas as pd

        images = [read_rgb(_decode(item, i)) for i, item in enumerate(_items(model_input))]
        rows = []
        for i, det in enumerate(self.bundle.detect(images)):
            for box, score, label in zip(det.boxes.tolist(), det.scores.tolist(), det.labels.tolist()):
                rows.append([i, *box, score, label, det.classes[label]])
        return pd.DataFrame(rows, columns=COLUMNS)


def _items(model_input) -> list:
    if hasattr(model_input, "columns"):  # a DataFrame
        if "image" not in model_input.columns:
            raise BundleError(f"input has columns {list(model_input.columns)}; expected an 'image' column")
        return list(model_input["image"])
    if isinstance(model_input, dict):
        if "image" not in model_input:
            raise BundleError(f"input has keys {sorted(model_input)}; expected 'image'")
        model_input = model_input["image"]
    if isinstance(model_input, (str, bytes)):
        return [model_input]
    return list(model_input)


def _decode(item, index: int) -> bytes:
    if isinstance(item, (bytes, bytearray)):
        return bytes(item)
    try:
        return base64.b64decode(item, validate=True)
    except (TypeError, ValueError):
        raise BundleError(f"input image {index}: not base64-encoded image bytes") from None
