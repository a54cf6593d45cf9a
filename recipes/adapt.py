"""Adapt a registered detector to a new scene from K labeled images per new class; register and export it.

    atom adapt model=atom-vehicles-base@candidate data=vehicles shots=10            (generalized: base + new)
    atom adapt model=... data=my-scene shots=5 mode=novel                          (new classes only)
    atom adapt model=... data=my-scene "~export"                                   (no bundle, e.g. in a sweep)
"""

from __future__ import annotations

import json
import logging
import os
import sys
from pathlib import Path

from omegaconf import DictConfig, OmegaConf

from recipes import entry
from recipes.common import lineage_version, mlflow_logger, write_model_version

log = logging.getLogger(__name__)


def adapt(cfg: DictConfig) -> dict:
    """Returns the evaluation (overall, new-class nAP50 and base-class bAP50) and the registered model version."""
    os.environ.setdefault("NO_ALBUMENTATIONS_UPDATE", "1")
    import pytorch_lightning as pl
    import torch
    from torch.utils.data import ConcatDataset, DataLoader

    from atom import fewshot, tracking
    from atom.data.loader import CopyPaste, DetectionDataset, KnownNegatives, MixedBatches, Mosaic, collate
    from atom.data.version import open_version
    from atom.training.callbacks import TrainThroughput
    from atom.training.module import DetectionModule
    from exporters import resolve_format

    pl.seed_everything(cfg.seed, workers=True)
    torch.set_num_threads(cfg.threads)
    fs = cfg.fewshot
    export_args = OmegaConf.to_container(cfg.export.args) if cfg.get("export") else None
    if export_args is not None:
        resolve_format(cfg.export.format, export_args)  # a bad format fails before anything trains

    # Everything that can be wrong with the request fails here, before training.
    tracking.configure(cfg.paths.output_dir)
    base_ref = tracking.resolve_model(cfg.model)
    base = tracking.load_detector(base_ref)
    version = open_version(Path(cfg.paths.datasets), cfg.data.name, cfg.data.version)
    plan = fewshot.plan(base.spec, cfg.model, version, cfg.mode, cfg.classes, OmegaConf.to_container(cfg.detector))
    shots = fewshot.sample_shots(version, cfg.data.train_split, plan.new_classes, cfg.shots, cfg.seed)
    images = fewshot.shot_images(shots)
    detector = fewshot.build(base, plan, fs.transfer, fs.unfreeze_backbone, fs.classifier, fs.head_init, fs.scale)
    size = detector.spec.input_size  # the base's, but novel mode with fewshot.scale letterboxes larger
    negatives = None
    if fs.negatives:  # the base classes' boxes in the base model's training data: known background for the new head
        base_data = lineage_version(base_ref, cfg.paths.datasets, "; or adapt without them: fewshot.negatives=0")
        negatives = KnownNegatives(base_data, tracking.training_split(base_ref), size, fs.policy, base.spec.classes)
        if not len(negatives):
            raise fewshot.AdaptationError(f"{base_data.root}: no box of base model {base_ref.uri}'s classes "
                                          f"{base.spec.classes} to learn from; set fewshot.negatives=0")
    steps = fewshot.steps_for(len(images), fs.steps_per_sqrt_image, fs.min_steps, fs.max_steps)
    log.info("adapting %s to %s (%s, transfer %s, head from %s, scale %g, %d shot images, %d steps)", base_ref.uri,
             plan.new_classes, cfg.mode, fs.transfer, fs.head_init, fs.scale, len(images), steps)

    run_dir = Path(cfg.paths.run_dir)
    run_dir.mkdir(parents=True, exist_ok=True)
    logger, _ = mlflow_logger(cfg, version, run_dir)
    train_set = DetectionDataset(version, cfg.data.train_split, size, fs.policy, images, plan.new_classes)
    if fs.mosaic > 0:
        train_set = Mosaic(train_set, fs.mosaic)
    if fs.copy_paste > 0:
        train_set = CopyPaste(train_set, fs.copy_paste)
    parts = [(train_set, fs.batch_size)] + ([(negatives, fs.negatives)] if negatives is not None else [])
    batches = MixedBatches([len(d) for d, _ in parts], [n for _, n in parts], steps)
    loader = DataLoader(ConcatDataset([d for d, _ in parts]), batch_sampler=batches, collate_fn=collate,
                        num_workers=fs.num_workers, persistent_workers=fs.num_workers > 0)
    # A new head at another scale than the input trains on windows of the input's size, at its scale: the same
    # cost per step as scale 1 (generalized: the input upsampled as at inference; novel: letterboxed larger).
    module = DetectionModule(detector=detector, head=len(detector.heads) - 1, **fs.optim,
                             zoom=fs.scale if cfg.mode == "generalized" else 1.0,
                             crop=base.spec.input_size if fs.scale != 1.0 else 0)
    throughput = TrainThroughput()
    # Where it runs comes from the trainer group (as for `atom train`); how long, from the few-shot plan.
    where = {k: cfg.trainer[k] for k in ("accelerator", "devices", "precision", "deterministic")}
    callbacks = [throughput]
    if cfg.progress:
        from pytorch_lightning.callbacks import RichProgressBar

        callbacks.append(RichProgressBar())
    trainer = pl.Trainer(logger=logger, callbacks=callbacks, max_steps=steps, max_epochs=1,
                         limit_val_batches=0, enable_checkpointing=False, enable_progress_bar=cfg.progress,
                         log_every_n_steps=10, enable_model_summary=False, default_root_dir=run_dir, **where)
    trainer.fit(module, train_dataloaders=loader)
    detector = module.detector.eval()

    extra = {"shots": cfg.shots, "seed": cfg.seed, "mode": cfg.mode, "transfer": fs.transfer,
             "head_init": fs.head_init, "scale": fs.scale, "shot_images": len(images),
             "negative_pool": len(negatives) if negatives is not None else 0, "steps": steps,
             "train_images_per_s": round(throughput.images_per_s, 2)}
    metrics, predictions = {}, None
    if version.has_split(cfg.eval_split):
        from atom.evaluation import evaluate_and_log

        metrics, predictions = evaluate_and_log(detector, version, cfg.eval_split, run_dir, logger.run_id,
                                                extra=extra)
        metrics.update(group_ap50(metrics, plan))
    files = {im["id"]: im["file_name"] for im in version.coco(cfg.data.train_split)["images"]}
    (run_dir / "shots.json").write_text(json.dumps({c: [files[i] for i in ids] for c, ids in shots.items()}, indent=1))
    logger.experiment.log_artifact(logger.run_id, str(run_dir / "shots.json"))

    tags = {**tracking.lineage_tags(version), "base.model": base_ref.uri, "fewshot.mode": cfg.mode,
            "fewshot.shots": str(cfg.shots), "fewshot.seed": str(cfg.seed), "fewshot.transfer": fs.transfer,
            "fewshot.head_init": fs.head_init, "fewshot.scale": str(fs.scale),
            "fewshot.shot_image_ids": json.dumps(shots, separators=(",", ":")), "fewshot.split": cfg.data.train_split}
    if metrics:
        key = cfg.eval_split.replace("+", "_")  # MLflow names allow no "+"
        tags.update({f"{key}.{k}": f"{metrics[k]:.4f}" for k in ("mAP50", "nAP50", "bAP50") if k in metrics})
    ref = tracking.register_detector(detector, logger.run_id, cfg.tracking.model_name, tags, cfg.tracking.alias)
    write_model_version(run_dir, ref, logger.run_id)
    summary = {**extra, **metrics, "model_name": ref.name, "model_version": ref.version, "run_id": logger.run_id}
    if export_args is not None:
        summary["bundle"] = _export(cfg, ref, detector, version, export_args, predictions)
    log.info("registered %s version %s", ref.name, ref.version)
    return summary


def group_ap50(metrics: dict, plan) -> dict:
    """nAP50 over the new classes and, in generalized mode, bAP50 over the base classes."""
    ap = {c: v["AP50"] for c, v in metrics["per_class"].items()}
    out = {"nAP50": sum(ap[c] for c in plan.new_classes) / len(plan.new_classes)}
    if plan.mode == "generalized":
        out["bAP50"] = sum(ap[c] for c in plan.base_classes) / len(plan.base_classes)
    return out


def _export(cfg: DictConfig, ref, detector, version, args: dict, predictions: list | None) -> str:
    """Export and verify on the evaluation split, reusing the evaluation's PyTorch predictions (`predictions`; None
    where the dataset has no such split: then on the shots' split)."""
    from atom import tracking
    from exporters.bundle import log_bundle, make_bundle

    verify = OmegaConf.to_container(cfg.export.verify)
    verify["split"] = cfg.eval_split if predictions is not None else cfg.data.train_split
    bundle, _ = make_bundle(ref, detector, version, cfg.export.format, args, verify, Path(cfg.paths.bundles),
                            tracking.tracking_uri(cfg.paths.output_dir), reference=predictions,
                            calibration_split=cfg.data.train_split)
    log_bundle(ref, bundle, cfg.export.format)
    return str(bundle)


def main() -> None:
    """`python -m recipes.adapt KEY=VALUE ...`, the same Hydra application as `atom adapt`."""
    sys.exit(entry.run("adapt", "adapt", adapt, sys.argv[1:]))


if __name__ == "__main__":
    main()
