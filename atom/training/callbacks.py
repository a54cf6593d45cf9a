"""Small Lightning callbacks the recipes use."""

from __future__ import annotations

import json
import math
import time
from pathlib import Path

import pytorch_lightning as pl
from pytorch_lightning.callbacks import WeightAveraging


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


class ShardRecord(pl.Callback):
    """In a distributed run, which training images each rank trained on in the first epoch, written to
    <run_dir>/ranks/rank<R>.json: the sharding can be checked after the fact (disjoint but for the few images the
    sampler repeats to make shards equal)."""

    def __init__(self, run_dir: Path):
        self.run_dir, self.seen = Path(run_dir), []

    def on_train_batch_start(self, trainer, module, batch, batch_idx):
        if trainer.current_epoch == 0 and trainer.world_size > 1:
            self.seen.extend(int(m["image_id"]) for m in batch[2])

    def on_train_epoch_end(self, trainer, module):
        if trainer.current_epoch == 0 and trainer.world_size > 1:
            folder = self.run_dir / "ranks"
            folder.mkdir(parents=True, exist_ok=True)
            (folder / f"rank{trainer.global_rank}.json").write_text(json.dumps(
                {"rank": trainer.global_rank, "world_size": trainer.world_size, "image_ids": self.seen}))


class RampedEMA(WeightAveraging):
    """Exponential moving average of the weights whose decay ramps up, decay * (1 - exp(-updates / ramp_steps)), as
    YOLOv5/8 do: a fixed decay from the first step would keep the random initial head in the average for hundreds of
    steps of a short run (at 0.995, val mAP50 was still 0.0 after 6 vehicles epochs). Validation, checkpoints and
    the final weights are the averaged ones (Lightning's WeightAveraging)."""

    def __init__(self, decay: float = 0.998, ramp_steps: int = 100):
        def avg_fn(averaged, current, updates):
            d = decay * (1 - math.exp(-float(updates) / ramp_steps))
            return averaged * d + current * (1 - d)

        super().__init__(avg_fn=avg_fn)
