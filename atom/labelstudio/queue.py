"""Which unlabeled images to label next: model uncertainty plus a diversity term.

Uncertainty of an image: the mean of its three most uncertain detections, a detection with score s counting
1 - |2s - 1| (1 at s = 0.5, 0 when the model is sure either way). Diversity: the cosine distance of the image's
backbone embedding to the nearest image already queued. Images are queued greedily by
uncertainty + diversity_weight * distance, so near-duplicates of a queued image sink (a core-set flavoured
uncertainty sampling: cheap, needs no labels, and works with any detector).
"""

from __future__ import annotations

import numpy as np
import torch


def image_uncertainty(scores: torch.Tensor, top: int = 3) -> float:
    if scores.numel() == 0:
        return 0.0
    u = 1 - (2 * scores - 1).abs()
    return float(u.topk(min(top, u.numel())).values.mean())


def rank_for_labeling(uncertainty: np.ndarray, embeddings: np.ndarray, diversity_weight: float = 1.0) -> list[int]:
    """Greedy order of indices: each step takes the image with the highest uncertainty + weight * distance to
    its nearest already-ranked image (distance 1 before anything is ranked)."""
    n = len(uncertainty)
    remaining = np.ones(n, bool)
    nearest = np.ones(n)  # cosine distance to the closest ranked image
    order = []
    for _ in range(n):
        gain = np.where(remaining, uncertainty + diversity_weight * nearest, -np.inf)
        i = int(np.argmax(gain))
        order.append(i)
        remaining[i] = False
        nearest = np.minimum(nearest, 1 - embeddings @ embeddings[i])
    return order
