"""Small Lightning callbacks the recipes use."""

from __future__ import annotations

import time

import pytorch_lightning as pl


class TrainThroughput(pl.Callback):
    """Training images per second, counting only time spent in training batches (not validation)."""

    def __init__(self):
        self.images, self.seconds, self._start = 0, 0.0, None

    def on_train_batch_start(self, trainer, module, batch, batch_idx):
        self._start = time.perf_counter()

    def on_train_batch_end(self, trainer, module, outputs, batch, batch_idx):
        self.seconds += time.perf_counter() - self._start
        self.images += len(batch[0])

    def on_train_epoch_end(self, trainer, module):
        module.log("train/images_per_s", self.images_per_s)

    @property
    def images_per_s(self) -> float:
        return self.images / self.seconds if self.seconds else 0.0
