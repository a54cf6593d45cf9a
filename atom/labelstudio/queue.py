"""Which unlabeled images to label next: model uncertainty plus a diversity term; before any model exists (cold
start), diversity alone in the ImageNet backbone's embedding space (`cold_start_order`).

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


def rank_for_labeling(uncertainty: np.ndarray, embeddings: np.ndarray, diversity_weight: float = 1.0,
                      first: list[int] | None = None) -> list[int]:
    """Greedy order of indices: `first` as given, then each step takes the image with the highest uncertainty +
    weight * distance to its nearest already-ranked image (distance 1 before anything is ranked)."""
    n = len(uncertainty)
    remaining = np.ones(n, bool)
    nearest = np.ones(n)  # cosine distance to the closest ranked image
    order = []
    for i in first or []:
        order.append(i)
        remaining[i] = False
        nearest = np.minimum(nearest, 1 - embeddings @ embeddings[i])
    for _ in range(n - len(order)):
        gain = np.where(remaining, uncertainty + diversity_weight * nearest, -np.inf)
        i = int(np.argmax(gain))
        order.append(i)
        remaining[i] = False
        nearest = np.minimum(nearest, 1 - embeddings @ embeddings[i])
    return order


def cold_start_order(embeddings: np.ndarray, batch: int, seed: int = 0) -> list[int]:
    """The labeling order when no model exists yet. The first `batch` images are the medoids of `batch` k-means
    clusters of the images' ImageNet embeddings, largest cluster first: typical images that together cover the
    pool (farthest-first alone would start with the oddest images). The rest follow farthest-first from them."""
    from sklearn.cluster import KMeans

    n = len(embeddings)
    k = min(batch, n)
    if k == 0:
        return []
    km = KMeans(n_clusters=k, n_init=3, random_state=seed).fit(embeddings)
    medoids = []
    for c in np.argsort(-np.bincount(km.labels_, minlength=k), kind="stable"):
        members = np.flatnonzero(km.labels_ == c)
        if len(members):
            medoids.append(int(members[np.argmin(((embeddings[members] - km.cluster_centers_[c]) ** 2).sum(1))]))
    return rank_for_labeling(np.zeros(n), embeddings, first=medoids)
