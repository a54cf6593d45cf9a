"""FCOS training targets and loss: focal loss for classes, GIoU for boxes, BCE for centerness.

Assignment: a location is positive for a box when it lies in the box's centre region (radius x stride) and the
box's regression target fits the location's level (`size_ranges`); ties go to the smallest box.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torchvision.ops import generalized_box_iou_loss, sigmoid_focal_loss

CENTER_RADIUS = 1.5


def size_ranges(strides: torch.Tensor) -> torch.Tensor:
    """The longest box sides (of the regression target) each location's level is responsible for, FCOS-style: a
    level of stride s takes 4s..8s, the finest level everything smaller, the coarsest everything larger (strides
    8/16/32: 0-64, 64-128, 128+). Relative to the stride, so that it holds for a head whose input was upsampled
    (`DetectorSpec.feature_scales`: strides 4/8/16 at 2x); `strides` are one head's."""
    lo = torch.where(strides == strides.min(), torch.zeros_like(strides), 4 * strides)
    hi = torch.where(strides == strides.max(), torch.full_like(strides, float("inf")), 8 * strides)
    return torch.stack([lo, hi], -1)


def assign(points, strides, boxes: torch.Tensor):
    """Index of the assigned box per location (-1: background) and the ltrb regression targets."""
    n = points.shape[0]
    if boxes.numel() == 0:
        return torch.full((n,), -1, dtype=torch.long, device=points.device), points.new_zeros(n, 4)
    px, py = points[:, 0:1], points[:, 1:2]
    ltrb = torch.stack([px - boxes[:, 0], py - boxes[:, 1], boxes[:, 2] - px, boxes[:, 3] - py], -1)  # N,M,4
    cx, cy = (boxes[:, 0] + boxes[:, 2]) / 2, (boxes[:, 1] + boxes[:, 3]) / 2
    r = strides[:, None] * CENTER_RADIUS
    in_center = ((px - cx).abs() < r) & ((py - cy).abs() < r)
    in_box = ltrb.min(-1).values > 0
    ranges = size_ranges(strides)
    longest = ltrb.max(-1).values
    fits_level = (longest >= ranges[:, 0:1]) & (longest <= ranges[:, 1:2])
    area = ((boxes[:, 2] - boxes[:, 0]) * (boxes[:, 3] - boxes[:, 1]))[None].expand(n, -1).clone()
    area[~(in_center & in_box & fits_level)] = float("inf")
    best_area, idx = area.min(1)
    idx[torch.isinf(best_area)] = -1
    return idx, ltrb[torch.arange(n, device=points.device), idx.clamp(min=0)]


def centerness(ltrb: torch.Tensor) -> torch.Tensor:
    lr, tb = ltrb[:, [0, 2]], ltrb[:, [1, 3]]
    return torch.sqrt((lr.min(-1).values / lr.max(-1).values) * (tb.min(-1).values / tb.max(-1).values))


def fcos_loss(raw, targets: list[dict]) -> dict[str, torch.Tensor]:
    """raw: Detector.forward_raw output; targets: per image {'boxes': (M,4) xyxy input pixels, 'labels': (M,)}
    with labels 0..C-1, and optionally 'negatives': (K,4) boxes of objects known to be none of the classes. A target
    with 'negatives' is an image not labeled for these classes (few-shot adaptation's base data): its classification
    loss counts only at the locations those boxes are assigned to — where a detection of them would come from — so
    that an unlabeled object of a class elsewhere in the image, or a small one inside such a box, is not taught as
    background."""
    cls, reg, ctr, points, strides = raw
    cls_target = torch.zeros_like(cls)
    cls_weight = torch.ones_like(cls[..., :1])
    pos_reg, pos_target, pos_ctr = [], [], []
    for i, t in enumerate(targets):
        idx, ltrb = assign(points, strides, t["boxes"])
        pos = idx >= 0
        cls_target[i, pos, t["labels"][idx[pos]]] = 1.0
        if "negatives" in t:
            cls_weight[i, :, 0] = (pos | (assign(points, strides, t["negatives"])[0] >= 0)).to(cls_weight.dtype)
        pos_reg.append(reg[i, pos])
        pos_target.append(ltrb[pos])
        pos_ctr.append(ctr[i, pos])
    pos_reg, pos_target, pos_ctr = torch.cat(pos_reg), torch.cat(pos_target), torch.cat(pos_ctr)
    num_pos = max(pos_reg.shape[0], 1)
    loss_cls = (sigmoid_focal_loss(cls, cls_target, reduction="none") * cls_weight).sum() / num_pos
    if pos_reg.shape[0] == 0:
        zero = reg.sum() * 0 + ctr.sum() * 0
        return {"loss": loss_cls + zero, "loss_cls": loss_cls, "loss_box": zero, "loss_ctr": zero}
    ctr_target = centerness(pos_target)
    # ltrb distances -> boxes around the origin: GIoU only needs relative geometry.
    as_box = lambda d: torch.stack([-d[:, 0], -d[:, 1], d[:, 2], d[:, 3]], -1)  # noqa: E731
    giou = generalized_box_iou_loss(as_box(pos_reg), as_box(pos_target), reduction="none")
    loss_box = (giou * ctr_target).sum() / ctr_target.sum().clamp(min=1e-6)
    loss_ctr = F.binary_cross_entropy_with_logits(pos_ctr, ctr_target, reduction="mean")
    return {"loss": loss_cls + loss_box + loss_ctr, "loss_cls": loss_cls, "loss_box": loss_box, "loss_ctr": loss_ctr}
