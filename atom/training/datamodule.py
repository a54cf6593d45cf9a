"""LightningDataModule over a dataset version."""

from __future__ import annotations

import pytorch_lightning as pl
from torch.utils.data import DataLoader

from atom.data.loader import DetectionDataset, collate
from atom.data.version import DatasetVersion


class DetectionDataModule(pl.LightningDataModule):
    def __init__(self, version: DatasetVersion, input_size: int, batch_size: int = 8, num_workers: int = 0,
                 policy: str = "flip", train_split: str = "train", val_split: str = "val",
                 train_image_ids: list[int] | None = None, classes: list[str] | None = None):
        super().__init__()
        self.version, self.input_size, self.batch_size = version, input_size, batch_size
        self.num_workers, self.policy = num_workers, policy
        self.train_split, self.val_split, self.train_image_ids = train_split, val_split, train_image_ids
        self.classes = classes

    def train_dataloader(self):
        ds = DetectionDataset(self.version, self.train_split, self.input_size, self.policy, self.train_image_ids,
                                self.classes)
        return DataLoader(ds, batch_size=self.batch_size, shuffle=True, drop_last=len(ds) > self.batch_size,
                          num_workers=self.num_workers, collate_fn=collate,
                          persistent_workers=self.num_workers > 0)

    def val_dataloader(self):
        ds = DetectionDataset(self.version, self.val_split, self.input_size, classes=self.classes)
        return DataLoader(ds, batch_size=self.batch_size, num_workers=self.num_workers, collate_fn=collate,
                          persistent_workers=self.num_workers > 0)
