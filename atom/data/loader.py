"""Torch datasets over a dataset version: augmented for training, letterboxed as-is for evaluation."""

from __future__ import annotations

import os
import random

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
        self._seeded_in: int | None = None  # the process whose torch seed the augmentation's random state follows

    def __len__(self):
        return len(self.images)

    def _seed_augmentation(self):
        """albumentations keeps a random state of its own, seeded from OS entropy unless told otherwise, so global
        seeds never reached it and two runs of one seed differed. Seed it from torch's seed of the process that
        reads the item: `seed_everything(workers=True)` makes that reproducible in the main process and in every
        DataLoader worker (each worker a different stream)."""
        if self.transform is not None and self._seeded_in != os.getpid():
            self.transform.set_random_seed(torch.initial_seed() % 2**32)
            self._seeded_in = os.getpid()

    def __getitem__(self, i):
        self._seed_augmentation()
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


class CopyPaste(Dataset):
    """With probability `p` an item also gets up to `objects` boxes cut from recently read augmented items of
    `dataset` (the box and a margin of context, at the scale their augmentation gave them) pasted at random free
    places: K shots hold few objects, and each step then shows the new classes more often, on other backgrounds.
    The sources are the last `RECENT` items this process read, so a paste costs no extra image read. A paste never
    covers more than a tenth of an existing or earlier pasted box, so every labeled object stays visible."""

    MARGIN = 0.1  # context around a cut box, as a share of its side: the edges cut through background, not object
    TRIES = 10  # random places tried per object before it is left out
    RECENT = 16

    def __init__(self, dataset: Dataset, p: float, objects: int = 3):
        self.dataset, self.p, self.objects = dataset, p, objects
        self.recent: list[tuple[torch.Tensor, torch.Tensor, torch.Tensor]] = []  # (image, boxes, labels)

    def __len__(self):
        return len(self.dataset)

    def __getitem__(self, i):
        image, target, meta = self.dataset[i]
        sources = [s for s in self.recent if len(s[1])]
        if len(target["boxes"]):
            self.recent = [*self.recent, (image, target["boxes"], target["labels"])][-self.RECENT:]
        if not sources or random.random() >= self.p:
            return image, target, meta
        image, boxes, labels = image.clone(), [target["boxes"]], [target["labels"]]
        height, width = image.shape[-2:]
        for source, their_boxes, their_labels in random.choices(sources, k=self.objects):
            k = random.randrange(len(their_boxes))
            x0, y0, x1, y1 = their_boxes[k].tolist()
            mx, my = (x1 - x0) * self.MARGIN, (y1 - y0) * self.MARGIN
            cx0, cy0 = int(max(x0 - mx, 0)), int(max(y0 - my, 0))
            patch = source[:, cy0:int(min(y1 + my, height)) + 1, cx0:int(min(x1 + mx, width)) + 1]
            ph, pw = patch.shape[-2:]
            if ph < 2 or pw < 2 or ph >= height or pw >= width:
                continue
            taken = torch.cat(boxes)
            for _ in range(self.TRIES):
                px, py = random.randrange(width - pw), random.randrange(height - ph)
                place = torch.tensor([px, py, px + pw, py + ph], dtype=torch.float32)
                if not len(taken) or _covered(taken, place).max() <= 0.1:
                    image[:, py:py + ph, px:px + pw] = patch
                    boxes.append(their_boxes[k:k + 1] + torch.tensor([px - cx0, py - cy0] * 2, dtype=torch.float32))
                    labels.append(their_labels[k:k + 1])
                    break
        return image, {**target, "boxes": torch.cat(boxes), "labels": torch.cat(labels)}, meta


def _covered(boxes: torch.Tensor, place: torch.Tensor) -> torch.Tensor:
    """The share of each box's area that `place` covers."""
    w = (torch.minimum(boxes[:, 2], place[2]) - torch.maximum(boxes[:, 0], place[0])).clamp(min=0)
    h = (torch.minimum(boxes[:, 3], place[3]) - torch.maximum(boxes[:, 1], place[1])).clamp(min=0)
    area = ((boxes[:, 2] - boxes[:, 0]) * (boxes[:, 3] - boxes[:, 1])).clamp(min=1e-6)
    return w * h / area


def collate(batch):
    images, targets, metas = zip(*batch)
    return torch.stack(images), list(targets), list(metas)
