"""A bundle (exporters/: model file + manifest.json) as a detector: letterbox, ONNX Runtime (or OpenVINO for its
IR), class-wise NMS with the per-head caps, boxes back to original pixels — each step read from the manifest, as an
independent serving team would write it. numpy and onnxruntime only (openvino for OpenVINO bundles)."""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from atom.checksums import sha256_file
from atom.errors import AtomError

SCHEMA = "atom.bundle/1"
ONNXRUNTIME = ("onnx", "onnx-fp16", "onnx-int8")  # manifest model.format values run by ONNX Runtime
OPENVINO = ("openvino",)  # run by OpenVINO where it is installed (Intel edge boxes)
DETECTIONS = "detections"  # a graph exported with NMS inside (exporters/onnx.py nms=true)


class BundleError(AtomError):
    """A bundle is missing, incomplete, altered or of a format this runtime cannot run."""


@dataclass
class Detections:
    boxes: np.ndarray  # (N, 4) float32, x0 y0 x1 y1 in the original image's pixels
    scores: np.ndarray  # (N,) float32
    labels: np.ndarray  # (N,) int64, index into `classes`
    classes: list[str]

    def names(self) -> list[str]:
        return [self.classes[i] for i in self.labels]


def read_manifest(root: Path | str, check_files: bool = True) -> dict:
    """The bundle's manifest; with check_files, every file it lists must be present with its sha256."""
    root = Path(root)
    path = root / "manifest.json"
    try:
        manifest = json.loads(path.read_text())
    except FileNotFoundError:
        raise BundleError(f"{path}: no manifest; is {root} a bundle folder?") from None
    except (OSError, ValueError) as e:
        raise BundleError(f"{path}: unreadable manifest: {e}") from None
    if manifest.get("schema") != SCHEMA:
        raise BundleError(f"{path}: schema {manifest.get('schema')!r}, this runtime reads {SCHEMA!r}")
    if check_files:
        for name, expected in manifest.get("files", {}).items():
            file = root / name
            if not file.is_file():
                raise BundleError(f"{file}: listed in the manifest but missing (incomplete download?)")
            if sha256_file(file) != expected:
                raise BundleError(f"{file}: sha256 differs from the manifest's (truncated or altered)")
    return manifest


class Bundle:
    def __init__(self, root: Path | str, threads: int = 2, check_files: bool = True):
        self.root = Path(root)
        self.manifest = read_manifest(self.root, check_files)
        model = self.manifest["model"]
        if model["format"] not in ONNXRUNTIME + OPENVINO:
            raise BundleError(f"{self.root}: a {model['format']!r} bundle; this runtime runs {ONNXRUNTIME + OPENVINO}"
                              " (a TensorRT engine runs in TensorRT; see the bundle's build_engine.sh)")
        self.classes: list[str] = list(model["classes"])
        self.size = int(self.manifest["preprocess"]["resize"]["longest_side"])
        self.pad_value = self.manifest["preprocess"]["resize"].get("pad_value", 0)
        post = self.manifest["postprocess"]
        self.score_threshold = float(post["score_threshold"])
        self.pre_nms_top_k = int(post["pre_nms_top_k"])
        self.iou_threshold = float(post["nms"]["iou_threshold"])
        self.max_detections = int(post["max_detections"])
        self.groups = list(post.get("class_groups", {}).get("sizes") or [len(self.classes)])
        self.input_name = model["input"]["name"]
        self.output_names = [o["name"] for o in model["outputs"] if o["name"] != DETECTIONS]
        self.nms_in_graph = bool(post["nms"].get("in_graph"))
        batch = model["input"]["shape"][0]
        self.max_batch = batch if isinstance(batch, int) else None  # a graph exported for one batch size
        file = str(self.root / model["file"])
        self._run = _openvino(file, threads) if model["format"] in OPENVINO else _onnxruntime(file, threads)

    def detect(self, images: list[np.ndarray], batch_size: int = 8) -> list[Detections]:
        """HxWx3 uint8 RGB images -> their detections, boxes in each image's own pixels."""
        results = []
        batch_size = min(batch_size, self.max_batch or batch_size)
        for i in range(0, len(images), batch_size):
            chunk = [letterbox(image, self.size, self.pad_value) for image in images[i:i + batch_size]]
            batch = np.ascontiguousarray(np.stack([c for c, _ in chunk]).transpose(0, 3, 1, 2), dtype=np.float32)
            results += self.detect_batch(batch, [scale for _, scale in chunk])
        return results

    def detect_files(self, paths: list[Path | str]) -> list[Detections]:
        return self.detect([read_rgb(p) for p in paths])

    def detect_batch(self, batch: np.ndarray, scales: list[float]) -> list[Detections]:
        if self.nms_in_graph:  # the graph ran NMS: keep the top max_detections per image and group
            rows = self._run([DETECTIONS], self.input_name, batch)[0]
            capped = [cap_per_group(rows[rows[:, 0] == i], self.groups, self.max_detections) for i in range(len(batch))]
            return [Detections((d["boxes"] / scale).astype(np.float32), d["scores"], d["labels"], self.classes)
                    for d, scale in zip(capped, scales)]
        boxes, scores = self.run(batch)
        return [self.postprocess(b, s, scale) for b, s, scale in zip(boxes, scores, scales)]

    def run(self, batch: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """The graph itself: letterboxed float NCHW 0..255 -> per-location boxes (input pixels) and class scores."""
        boxes, scores = self._run(self.output_names, self.input_name, batch)
        return boxes, scores

    def postprocess(self, boxes: np.ndarray, scores: np.ndarray, scale: float) -> Detections:
        """One image: per class group, scores over the threshold, the top pre_nms_top_k, class-wise NMS, the top
        max_detections; then letterboxed coordinates back to the original image (divide by the scale)."""
        parts = []
        lo = 0
        for size in self.groups:
            s = scores[:, lo:lo + size]
            loc, cls = np.nonzero(s > self.score_threshold)
            b, sc, cls = boxes[loc], s[loc, cls], cls + lo
            if sc.size > self.pre_nms_top_k:
                top = np.argsort(-sc, kind="stable")[: self.pre_nms_top_k]
                b, sc, cls = b[top], sc[top], cls[top]
            keep = batched_nms(b, sc, cls, self.iou_threshold)[: self.max_detections]
            parts.append((b[keep], sc[keep], cls[keep]))
            lo += size
        b, sc, cls = (np.concatenate(t) for t in zip(*parts))
        return Detections((b / scale).astype(np.float32), sc.astype(np.float32), cls.astype(np.int64), self.classes)


def cap_per_group(rows: np.ndarray, groups: list[int], max_detections: int) -> dict[str, np.ndarray]:
    """One image's rows of a graph's `detections` output (batch, x0, y0, x1, y1, score, class; NMS done per class)
    -> boxes, scores, labels: per group of classes (one per head), the top max_detections by score."""
    labels = rows[:, 6].astype(np.int64)
    starts = np.cumsum([0, *groups])
    keep = []
    for lo, hi in zip(starts[:-1], starts[1:]):
        index = np.nonzero((labels >= lo) & (labels < hi))[0]
        keep.append(index[np.argsort(-rows[index, 5], kind="stable")[:max_detections]])
    keep = np.concatenate(keep).astype(np.int64)
    return {"boxes": rows[keep, 1:5].astype(np.float32), "scores": rows[keep, 5].astype(np.float32),
            "labels": labels[keep]}


def _onnxruntime(file: str, threads: int):
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.intra_op_num_threads = int(threads)
    session = ort.InferenceSession(file, options, providers=["CPUExecutionProvider"])
    return lambda outputs, input_name, batch: session.run(outputs, {input_name: batch})


def _openvino(file: str, threads: int):
    try:
        import openvino as ov
    except ImportError:
        raise BundleError(f"{file}: an OpenVINO model; install the openvino package to run it") from None
    compiled = ov.Core().compile_model(file, "CPU", {"INFERENCE_NUM_THREADS": int(threads),
                                                     "INFERENCE_PRECISION_HINT": "f32"})

    def run(outputs, input_name, batch):
        result = compiled({input_name: batch})
        return [result[compiled.output(name)] for name in outputs]

    return run


def batched_nms(boxes: np.ndarray, scores: np.ndarray, labels: np.ndarray, iou: float) -> np.ndarray:
    """Indices of the boxes kept by greedy NMS within each label, by decreasing score (torchvision's rule: a box is
    dropped when its IoU with a kept one of its label exceeds `iou`)."""
    if boxes.size == 0:
        return np.zeros(0, np.int64)
    # One NMS over all labels: boxes of different labels are moved apart so that they never overlap.
    shifted = boxes + (labels * (boxes.max() + 1))[:, None]
    x0, y0, x1, y1 = shifted.T
    areas = (x1 - x0) * (y1 - y0)
    order = np.argsort(-scores, kind="stable")
    keep = []
    while order.size:
        i, rest = order[0], order[1:]
        keep.append(i)
        w = np.clip(np.minimum(x1[i], x1[rest]) - np.maximum(x0[i], x0[rest]), 0, None)
        h = np.clip(np.minimum(y1[i], y1[rest]) - np.maximum(y0[i], y0[rest]), 0, None)
        inter = w * h
        order = rest[inter / (areas[i] + areas[rest] - inter) <= iou]
    return np.asarray(keep, np.int64)


def letterbox(image: np.ndarray, size: int, pad_value: int = 0) -> tuple[np.ndarray, float]:
    """The manifest's resize: longest side to `size`, aspect kept, bilinear (the sampling of OpenCV's INTER_LINEAR,
    which training used: pixel centres aligned, no antialiasing), padded bottom/right. Returns the size x size x 3
    uint8 image and the scale (original -> letterboxed: multiply)."""
    if image.ndim != 3 or image.shape[2] != 3:
        raise BundleError(f"expected an HxWx3 RGB image, got shape {image.shape}")
    h, w = image.shape[:2]
    scale = size / max(h, w)
    nh, nw = min(size, round(h * scale)), min(size, round(w * scale))
    out = np.full((size, size, 3), pad_value, np.uint8)
    out[:nh, :nw] = resize_bilinear(image, nh, nw)
    return out, scale


def resize_bilinear(image: np.ndarray, nh: int, nw: int) -> np.ndarray:
    def taps(n_out: int, n_in: int):
        x = np.clip((np.arange(n_out) + 0.5) * (n_in / n_out) - 0.5, 0, n_in - 1)
        x0 = np.floor(x).astype(np.int64)
        return x0, np.minimum(x0 + 1, n_in - 1), (x - x0).astype(np.float32)

    (y0, y1, fy), (x0, x1, fx) = taps(nh, image.shape[0]), taps(nw, image.shape[1])
    image = image.astype(np.float32)
    fx = fx[None, :, None]
    top = image[y0][:, x0] * (1 - fx) + image[y0][:, x1] * fx
    bottom = image[y1][:, x0] * (1 - fx) + image[y1][:, x1] * fx
    out = top * (1 - fy[:, None, None]) + bottom * fy[:, None, None]
    return np.clip(np.rint(out), 0, 255).astype(np.uint8)


def read_rgb(source) -> np.ndarray:
    """An image file's path, or its encoded bytes, as HxWx3 uint8 RGB (EXIF orientation applied, as training
    read it)."""
    import io

    from PIL import Image, ImageOps, UnidentifiedImageError

    name = source if isinstance(source, (str, Path)) else "image bytes"
    try:
        with Image.open(io.BytesIO(source) if isinstance(source, (bytes, bytearray)) else source) as image:
            return np.asarray(ImageOps.exif_transpose(image).convert("RGB"))
    except (OSError, UnidentifiedImageError) as e:
        raise BundleError(f"{name}: cannot decode image: {e}") from None
