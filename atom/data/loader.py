"""Torch datasets over a dataset version: augmented for training, letterboxed as-is for evaluation."""

from __future__ import annotations

import random

import cv2
import numpy as np
import torch
import torch.nn.functional as F
from torch.utils.data import Dataset, Sampler

from atom.data.augment import build_policy
from atom.data.version import DatasetVersion
from atom.models.preprocess import letterbox, read_rgb


class DetectionDataset(Dataset):
    """Items: (image float CHW 0..255, target {'boxes' xyxy input px, 'labels' 0-based}, meta {'image_id', 'scale'}).
    With `policy` None the image is only letterboxed (evaluation); otherwise the named augmentation applies.
    `classes` (default: the version's) fixes the label order; boxes of other classes are left out."""

    def __init__(self, version: DatasetVersion, split: str, input_size: int, policy: str | None = None,
                 image_ids: list[int] | None = None, classes: list[str] | None = None):
        self.version, self.input_size = version, input_size
        coco = version.coco(split, classes)
        keep = None if image_ids is None else set(image_ids)
        self.images = [im for im in coco["images"] if keep is None or im["id"] in keep]
        self.boxes = {im["id"]: [] for im in coco["images"]}
        for a in coco["annotations"]:
            x, y, w, h = a["bbox"]
            self.boxes[a["image_id"]].append((x, y, x + w, y + h, a["category_id"] - 1))
        self.transform = build_policy(policy, input_size) if policy else None

    def __len__(self):
        return len(self.images)

    def __getitem__(self, i):
        info = self.images[i]
        image = read_rgb(self.version.root / info["file_name"])
        rows = np.array(self.boxes[info["id"]], np.float32).reshape(-1, 5)
        if self.transform is None:
            image, scale = letterbox(image, self.input_size)
            boxes, labels = rows[:, :4] * scale, rows[:, 4]
        else:
            out = self.transform(image=image, bboxes=rows[:, :4], labels=rows[:, 4])
            image, boxes, labels, scale = out["image"], np.asarray(out["bboxes"]), np.asarray(out["labels"]), 1.0
        target = {"boxes": torch.as_tensor(boxes, dtype=torch.float32).reshape(-1, 4),
                  "labels": torch.as_tensor(labels, dtype=torch.long).reshape(-1)}
        return torch.from_numpy(image).permute(2, 0, 1).float(), target, {"image_id": info["id"], "scale": scale}


class KnownNegatives(Dataset):
    """The images of a split that hold boxes of `classes`, for training other classes they are not labeled for:
    each target carries those boxes as 'negatives' (known background, atom.models.loss) and no positives. Few-shot
    adaptation shows the new classes' head the base classes' boxes this way, so it learns that a car is not an
    ambulance, while an unlabeled ambulance elsewhere in the image is not taught as background."""

    def __init__(self, version: DatasetVersion, split: str, input_size: int, policy: str, classes: list[str]):
        self.dataset = DetectionDataset(version, split, input_size, policy, classes=classes)
        self.holding = [i for i, im in enumerate(self.dataset.images) if self.dataset.boxes[im["id"]]]

    def __len__(self):
        return len(self.holding)

    def __getitem__(self, i):
        image, target, meta = self.dataset[self.holding[i]]
        return image, {"boxes": target["boxes"][:0], "labels": target["labels"][:0], "negatives": target["boxes"]}, meta


class CopyPaste(Dataset):
    """Pastes the labeled objects of a few images (`shots`: the K shots' boxes, cut out with a feathered margin of
    context) onto the items of `dataset` (known negatives): with probability `p`, 1 to `most` of them, at random
    places, smaller than in their shot (SCALE), flipped at random. Ten photos show each new object in one
    context; pasted onto the base data it is seen beside the cars and buses it must not be confused with. A known
    negative box mostly covered by a paste is dropped (its locations would now teach the paste as background)."""

    MARGIN = 0.15      # context around the box, as a share of its sides, faded in linearly
    COVERED = 0.5      # a negative box with more of its area under pastes is dropped
    SCALE = (0.3, 1.0)  # pasted size / letterboxed size in its shot (capped to fit): smaller, so the base data's
                        # scene shows around it (the vehicles shots are mostly close-ups)

    def __init__(self, dataset: Dataset, shots: DetectionDataset, p: float, most: int = 3):
        self.dataset, self.p, self.most, self.input_size = dataset, p, most, shots.input_size
        self.objects = []  # (HxWx3 float crop, HxW alpha, box within the crop, label, letterbox scale)
        for info in shots.images:
            image = read_rgb(shots.version.root / info["file_name"])
            h, w = image.shape[:2]
            for x0, y0, x1, y1, label in shots.boxes[info["id"]]:
                mx, my = (x1 - x0) * self.MARGIN, (y1 - y0) * self.MARGIN
                cx0, cy0 = int(max(x0 - mx, 0)), int(max(y0 - my, 0))
                cx1, cy1 = int(min(np.ceil(x1 + mx), w)), int(min(np.ceil(y1 + my), h))
                if cx1 - cx0 < 2 or cy1 - cy0 < 2:
                    continue
                box = np.array([x0 - cx0, y0 - cy0, x1 - cx0, y1 - cy0], np.float32)
                self.objects.append((image[cy0:cy1, cx0:cx1], box, int(label), self.input_size / max(h, w)))

    def __len__(self):
        return len(self.dataset)

    def __getitem__(self, i):
        image, target, meta = self.dataset[i]
        if not self.objects or random.random() >= self.p:
            return image, target, meta
        canvas = image.permute(1, 2, 0).numpy().copy()
        filled = np.argwhere(canvas.max(-1) > 0)  # paste onto the picture, not the letterbox padding
        (top, left), (bottom, right) = (filled.min(0), filled.max(0) + 1) if len(filled) else ((0, 0), canvas.shape[:2])
        boxes, labels = [], []
        for crop, box, label, scale in random.choices(self.objects, k=random.randint(1, self.most)):
            f = min(scale * random.uniform(*self.SCALE), (bottom - top) / crop.shape[0], (right - left) / crop.shape[1])
            h, w = round(crop.shape[0] * f), round(crop.shape[1] * f)
            if min(h, w) < 4:
                continue
            piece = cv2.resize(crop, (w, h), interpolation=cv2.INTER_LINEAR).astype(np.float32)
            b = box * np.array([w / crop.shape[1], h / crop.shape[0]] * 2, np.float32)
            if random.random() < 0.5:
                piece, b = piece[:, ::-1], np.array([w - b[2], b[1], w - b[0], b[3]], np.float32)
            for _ in range(5):  # a place where it hides no earlier paste (whose box would be wrong)
                y, x = random.randint(top, bottom - h), random.randint(left, right - w)
                if not any(_overlap(b + np.array([x, y, x, y], np.float32), other) for other in boxes):
                    break
            else:
                continue
            alpha = self._feather(h, w, b)
            region = canvas[y:y + h, x:x + w]
            region[:] = alpha[..., None] * piece + (1 - alpha[..., None]) * region
            boxes.append(b + np.array([x, y, x, y], np.float32))
            labels.append(label)
        if not boxes:
            return image, target, meta
        pasted = torch.as_tensor(np.stack(boxes))
        negatives = target["negatives"]
        if len(negatives):
            covered = torch.zeros(len(negatives))
            for x0, y0, x1, y1 in pasted.tolist():  # pastes may overlap each other: an upper bound is enough
                w = (negatives[:, 2].clamp(max=x1) - negatives[:, 0].clamp(min=x0)).clamp(min=0)
                h = (negatives[:, 3].clamp(max=y1) - negatives[:, 1].clamp(min=y0)).clamp(min=0)
                covered += w * h
            area = (negatives[:, 2] - negatives[:, 0]) * (negatives[:, 3] - negatives[:, 1])
            negatives = negatives[covered <= self.COVERED * area]
        target = {"boxes": torch.cat([target["boxes"], pasted]),
                  "labels": torch.cat([target["labels"], torch.tensor(labels, dtype=torch.long)]),
                  "negatives": negatives}
        return torch.from_numpy(canvas).permute(2, 0, 1).contiguous(), target, meta

    @staticmethod
    def _feather(h: int, w: int, box: np.ndarray) -> np.ndarray:
        """1 inside the box, fading linearly to 0 at the crop's edge (no hard rectangle for the model to learn)."""
        def ramp(n, lo, hi):
            t = np.arange(n, dtype=np.float32) + 0.5
            return np.clip(np.minimum(t / max(lo, 1.0), (n - t) / max(n - hi, 1.0)), 0, 1)
        return np.outer(ramp(h, box[1], box[3]), ramp(w, box[0], box[2]))


def _overlap(a: np.ndarray, b: np.ndarray) -> bool:
    """Whether two xyxy boxes share more than a tenth of the smaller one's area."""
    w = min(a[2], b[2]) - max(a[0], b[0])
    h = min(a[3], b[3]) - max(a[1], b[1])
    smaller = min((a[2] - a[0]) * (a[3] - a[1]), (b[2] - b[0]) * (b[3] - b[1]))
    return w > 0 and h > 0 and w * h > 0.1 * smaller


class MixedBatches(Sampler):
    """`steps` batches of random items (with replacement), `sizes[j]` of them from the j-th of the datasets
    concatenated (torch ConcatDataset order) whose lengths are `lengths`."""

    def __init__(self, lengths: list[int], sizes: list[int], steps: int):
        self.lengths, self.sizes, self.steps = lengths, sizes, steps
        self.offsets = np.cumsum([0, *lengths[:-1]]).tolist()

    def __len__(self):
        return self.steps

    def __iter__(self):
        g = torch.Generator().manual_seed(int(torch.randint(2**62, ())))  # follows the global seed
        for _ in range(self.steps):
            yield [offset + int(j) for n, k, offset in zip(self.lengths, self.sizes, self.offsets)
                   for j in torch.randint(n, (k,), generator=g)]


class Mosaic(Dataset):
    """With probability `p` an item is four augmented items of `dataset` at half size in a 2x2 grid (YOLO-style
    mosaic): more objects, scales and context per step when there are only a few images (few-shot)."""

    MIN_SIDE = 2.0  # boxes smaller than this after halving are dropped (no location can learn them)

    def __init__(self, dataset: DetectionDataset, p: float):
        self.dataset, self.p = dataset, p

    def __len__(self):
        return len(self.dataset)

    def __getitem__(self, i):
        if random.random() >= self.p:
            return self.dataset[i]
        items = [self.dataset[j] for j in [i, *random.choices(range(len(self.dataset)), k=3)]]
        canvas = torch.zeros_like(items[0][0])
        boxes, labels = [], []
        for q, (image, target, _) in enumerate(items):
            half = F.interpolate(image[None], scale_factor=0.5, mode="bilinear", align_corners=False)[0]
            h, w = half.shape[-2:]
            oy, ox = (q // 2) * h, (q % 2) * w
            canvas[:, oy:oy + h, ox:ox + w] = half
            b = target["boxes"] * 0.5 + torch.tensor([ox, oy, ox, oy], dtype=torch.float32)
            keep = ((b[:, 2] - b[:, 0]) >= self.MIN_SIDE) & ((b[:, 3] - b[:, 1]) >= self.MIN_SIDE)
            boxes.append(b[keep])
            labels.append(target["labels"][keep])
        return canvas, {"boxes": torch.cat(boxes), "labels": torch.cat(labels)}, {"image_id": -1, "scale": 1.0}


def collate(batch):
    images, targets, metas = zip(*batch)
    return torch.stack(images), list(targets), list(metas)
