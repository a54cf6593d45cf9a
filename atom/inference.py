"""Inference on image files, written once: read (EXIF-upright), letterbox, batch, detect, map boxes back to the
original pixels. Pre-annotations, the labeling queue, the ML backend and the benchmarks all go through
`predict_images`; evaluation on a dataset version's split goes through atom.evaluation.predict_split, which reads
the same preprocessing from the version's folder.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from atom.data.report import ImportReport


@dataclass
class Detections:
    """One image's detections in its original pixels, best first."""

    path: Path
    width: int
    height: int
    boxes: list[list[float]] = field(default_factory=list)  # xyxy
    scores: list[float] = field(default_factory=list)
    labels: list[str] = field(default_factory=list)
    embedding: np.ndarray | None = None  # the image's backbone embedding, when asked for (the labeling queue)

    def top(self, min_score: float = 0.0, max_boxes: int | None = None) -> "Detections":
        """The detections scoring at least min_score, at most max_boxes of them."""
        keep = [i for i in np.argsort(self.scores)[::-1] if self.scores[i] >= min_score][:max_boxes]
        return Detections(self.path, self.width, self.height, [self.boxes[i] for i in keep],
                          [self.scores[i] for i in keep], [self.labels[i] for i in keep], self.embedding)


def embed(detector, images) -> np.ndarray:
    """L2-normalised global-average-pooled deepest backbone feature per image (B x C): what the labeling queue
    measures diversity with."""
    import torch

    feats = detector.backbone((images - detector.mean) / detector.std)[-1].mean((2, 3))
    return torch.nn.functional.normalize(feats, dim=1).numpy()


def predict_images(detector, images: list[Path], report: ImportReport | None = None, batch_size: int = 8,
                   with_embeddings: bool = False) -> list[Detections | None]:
    """Per image, its Detections; None where the image cannot be read (reported in `report` with its path)."""
    import torch

    from atom.models.preprocess import letterbox, read_rgb, to_batch

    report = report if report is not None else ImportReport()
    size, classes = detector.spec.input_size, detector.spec.classes
    out: list[Detections | None] = []
    for i in range(0, len(images), batch_size):
        batch, scales, readable = [], [], []
        for path in images[i:i + batch_size]:
            try:
                rgb = read_rgb(path)
            except ValueError as e:
                report.add("corrupt_image" if Path(path).exists() else "missing_image", path, str(e))
                out.append(None)
                continue
            boxed, scale = letterbox(rgb, size)
            batch.append(boxed)
            scales.append(scale)
            readable.append(len(out))
            out.append(Detections(Path(path), rgb.shape[1], rgb.shape[0]))
        if not batch:
            continue
        tensor = torch.from_numpy(to_batch(batch))
        with torch.no_grad():
            dets = detector.predict(tensor, scales)
            embeddings = embed(detector, tensor) if with_embeddings else [None] * len(batch)
        for k, det, emb in zip(readable, dets, embeddings):
            d = out[k]
            d.boxes, d.scores = det["boxes"].tolist(), det["scores"].tolist()
            d.labels = [classes[c] for c in det["labels"].tolist()]
            d.embedding = emb
    return out
