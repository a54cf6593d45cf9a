"""LightningModule for the detector: FCOS loss, AdamW with warm-up + cosine schedule, per-epoch COCO val mAP (over
every rank's predictions when training is distributed)."""

from __future__ import annotations

import math

import pytorch_lightning as pl
import torch

from atom.evaluation import coco_evaluate, to_coco_results
from atom.fewshot import zoom_crops
from atom.models.detector import Detector, DetectorSpec
from atom.models.loss import fcos_loss


class DetectionModule(pl.LightningModule):
    """Trains a new detector from `spec`, or a given `detector` (few-shot adaptation) whose frozen parts stay
    frozen; `head` limits the loss to one head, whose targets are then numbered within its own classes. `crop`
    trains that head on crop x crop windows of the images upsampled by `zoom` (atom.fewshot.zoom_crops): a head
    at a larger scale than the input for the cost of crop x crop images."""

    def __init__(self, spec: dict | None = None, lr: float = 2e-3, weight_decay: float = 0.05,
                 warmup_steps: int = 50, backbone_lr_scale: float = 0.5,
                 val_gt: dict | None = None, detector: Detector | None = None, head: int | None = None,
                 zoom: float = 1.0, crop: int = 0):
        super().__init__()
        self.save_hyperparameters(ignore=["val_gt", "detector"])
        self.detector = detector if detector is not None else Detector(DetectorSpec(**spec))
        self.val_gt = val_gt
        self._val_results: dict[int, list[dict]] = {}  # image id -> its predictions (COCO results)

    def on_train_start(self):
        # Lightning 2.6 leaves module modes as they are; Detector.train applies its policy (frozen parts and, with
        # freeze_bn, the backbone's BatchNorm stay in eval mode).
        self.detector.train()

    def training_step(self, batch, _):
        images, targets, _ = batch
        crop = self.hparams.crop
        if crop:
            images, targets = zoom_crops(images, targets, self.hparams.zoom, crop)
        losses = fcos_loss(self.detector.forward_raw(images, self.hparams.head, at_scale=bool(crop)), targets)
        self.log_dict({f"train/{k}": v for k, v in losses.items()}, prog_bar=False, batch_size=len(images))
        self.log("loss", losses["loss"], prog_bar=True, logger=False, batch_size=len(images))
        return losses["loss"]

    def validation_step(self, batch, _):
        images, _, metas = batch
        dets = self.detector.predict(images, [m["scale"] for m in metas])
        for meta, det in zip(metas, dets):
            self._val_results[meta["image_id"]] = to_coco_results(meta["image_id"], det)

    def on_validation_epoch_end(self):
        if self.val_gt is None:
            return
        per_image = self._all_ranks(self._val_results)
        self._val_results = {}
        metrics, _ = coco_evaluate(self.val_gt, [r for results in per_image.values() for r in results])
        # Every rank computed the same numbers from the same gathered predictions: nothing to reduce.
        self.log("val/mAP50", metrics["mAP50"], prog_bar=True)
        self.log("val/mAP50_95", metrics["mAP50_95"], prog_bar=True)

    def _all_ranks(self, per_image: dict[int, list[dict]]) -> dict[int, list[dict]]:
        """Each DDP rank validated its shard of the split; mAP needs all of them. Lightning's sampler repeats a few
        images so that shards are equal: keyed by image, they count once."""
        if self.trainer.world_size == 1 or not torch.distributed.is_initialized():
            return per_image
        parts: list = [None] * self.trainer.world_size
        torch.distributed.all_gather_object(parts, per_image)
        return {image: results for part in parts for image, results in part.items()}

    def configure_optimizers(self):
        prefixes = tuple(f"{name}." for name, _ in self.detector.backbones())
        trainable = [(n, p) for n, p in self.detector.named_parameters() if p.requires_grad]
        backbone = [p for n, p in trainable if n.startswith(prefixes)]
        rest = [p for n, p in trainable if not n.startswith(prefixes)]
        lr = self.hparams.lr
        groups = [{"params": backbone, "lr": lr * self.hparams.backbone_lr_scale}, {"params": rest, "lr": lr}]
        optimizer = torch.optim.AdamW([g for g in groups if g["params"]], lr=lr,
                                      weight_decay=self.hparams.weight_decay)
        total = max(self._total_steps(), 1)
        warmup = min(self.hparams.warmup_steps, total // 3)

        def factor(step):  # linear warm-up, then cosine to 5% of the peak
            if step < warmup:
                return (step + 1) / warmup
            t = min((step - warmup) / max(total - warmup, 1), 1.0)
            return 0.05 + 0.95 * 0.5 * (1 + math.cos(math.pi * t))

        scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, factor)
        return {"optimizer": optimizer, "lr_scheduler": {"scheduler": scheduler, "interval": "step"}}

    def _total_steps(self) -> int:
        # A time-bounded run has no known step count: plan the schedule on max_epochs (the run may stop early).
        return int(self.trainer.estimated_stepping_batches)
