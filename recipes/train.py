"""Train a detector on a dataset version, evaluate it on the held-out split, register it in MLflow.

    python -m recipes.train experiment=vehicles      (or: atom train experiment=vehicles)
    torchrun --nproc_per_node 2 -m recipes.train experiment=vehicles trainer=ddp trainer.devices=2
    atom train -m experiment=vehicles hparams_search=optuna sweep.register=best      (recipes/sweep.py)
"""

from __future__ import annotations

import logging
import os
import sys
from pathlib import Path

from omegaconf import DictConfig, OmegaConf

from recipes import entry
from recipes.common import mlflow_logger, write_model_version
from recipes.sweep import PARENT_RUN_ENV, record_trial, trial_tags

log = logging.getLogger(__name__)


def train(cfg: DictConfig) -> dict:
    """Returns the held-out metrics plus the registered model's name and version."""
    os.environ.setdefault("NO_ALBUMENTATIONS_UPDATE", "1")
    import pytorch_lightning as pl
    import torch
    from pytorch_lightning.callbacks import LearningRateMonitor, ModelCheckpoint, RichProgressBar

    from atom import tracking
    from atom.data.version import DatasetError, open_version
    from atom.training.callbacks import RampedEMA, ShardRecord, TrainThroughput
    from atom.training.datamodule import DetectionDataModule
    from atom.training.module import DetectionModule

    pl.seed_everything(cfg.seed, workers=True)
    torch.set_num_threads(cfg.threads)
    version = open_version(Path(cfg.paths.datasets), cfg.data.name, cfg.data.version)
    model_cfg = OmegaConf.to_container(cfg.detector)
    spec = {**model_cfg, "classes": select_classes(version, cfg.data.get("classes"))}
    for split in (cfg.data.train_split, cfg.data.val_split):
        if not version.has_split(split):
            raise DatasetError(f"{version.root}: dataset version has no {split!r} images; re-import it with a "
                               f"split (sources without splits are split by `--split`)")
    test_split = cfg.data.test_split if version.has_split(cfg.data.test_split) else cfg.data.val_split
    parent = initial_detector(cfg.init, spec) if cfg.get("init") else None  # checked before any run is made
    in_sweep = PARENT_RUN_ENV in os.environ  # a trial of `atom train -m` (recipes/sweep.py)
    run_dir = Path(cfg.paths.run_dir)
    if in_sweep:  # the trials of a sweep share run_name: each keeps its own folder
        from hydra.core.hydra_config import HydraConfig

        run_dir = run_dir / f"trial{HydraConfig.get().job.num}"
    run_dir.mkdir(parents=True, exist_ok=True)

    logger, resuming = mlflow_logger(cfg, version, run_dir, trial_tags(cfg) if in_sweep else None)
    resume_ckpt = run_dir / "checkpoints" / "last.ckpt"

    val_gt = version.coco(cfg.data.val_split, spec["classes"])
    module = DetectionModule(spec, val_gt=val_gt, detector=parent[0] if parent else None, **cfg.optim)
    datamodule = DetectionDataModule(version, spec["input_size"], cfg.data.batch_size, cfg.data.num_workers,
                                     cfg.data.policy, cfg.data.train_split, cfg.data.val_split,
                                     classes=spec["classes"])
    checkpoint = ModelCheckpoint(dirpath=run_dir / "checkpoints", filename="best", **cfg.callbacks.checkpoint)
    throughput = TrainThroughput()
    callbacks = [checkpoint, throughput, ShardRecord(run_dir)]
    if cfg.callbacks.rich_progress:
        callbacks.append(RichProgressBar())
    if cfg.callbacks.lr_monitor:
        callbacks.append(LearningRateMonitor(logging_interval="epoch"))
    if cfg.callbacks.get("ema"):  # validation, checkpoints and the registered detector then hold the averaged weights
        callbacks.append(RampedEMA(**cfg.callbacks.ema))
    trainer = pl.Trainer(logger=logger, callbacks=callbacks, default_root_dir=run_dir,
                         **OmegaConf.to_container(cfg.trainer))
    trainer.fit(module, datamodule=datamodule, ckpt_path=str(resume_ckpt) if resuming else None)
    if not trainer.is_global_zero:  # distributed: rank 0 evaluates, registers and writes the run's files
        return {"rank": trainer.global_rank}
    run_id = logger.run_id

    if checkpoint.best_model_path:  # evaluate the best epoch, not merely the last
        best = torch.load(checkpoint.best_model_path, map_location="cpu", weights_only=False)
        module.load_state_dict(best["state_dict"])
    # Evaluation, registration and export work on CPU in the standard memory layout, wherever training ran.
    detector = module.detector.cpu().to(memory_format=torch.contiguous_format).eval()

    best_val = checkpoint.best_model_score
    from atom.evaluation import evaluate_and_log

    metrics, _ = evaluate_and_log(detector, version, test_split, run_dir, logger.run_id, extra={
        "epochs": trainer.current_epoch, "train_images_per_s": round(throughput.images_per_s, 2),
        "best_val_mAP50": float(best_val) if best_val is not None else None,
        "parameters_M": round(sum(p.numel() for p in detector.parameters()) / 1e6, 3)})

    tags = {**tracking.lineage_tags(version), f"{test_split}.mAP50": f"{metrics['mAP50']:.4f}",
            f"{test_split}.mAP50_95": f"{metrics['mAP50_95']:.4f}", **({"init.model": parent[1]} if parent else {})}
    model_uri = tracking.log_detector(detector, run_id)
    summary = {**metrics, "objective": metrics.get(cfg.sweep.metric), "model_uri": model_uri, "run_id": run_id}
    if in_sweep:
        record_trial(run_id, summary["objective"], model_uri,
                     {"name": cfg.tracking.model_name, "tags": tags, "alias": cfg.tracking.alias})
        if cfg.sweep.register != "all":
            return summary
    ref = tracking.register_logged(model_uri, run_id, cfg.tracking.model_name, tags, cfg.tracking.alias)
    summary.update(model_name=ref.name, model_version=ref.version)
    write_model_version(run_dir, ref, run_id)
    log.info("registered %s version %s (%s mAP50 %.3f)", ref.name, ref.version, test_split, metrics["mAP50"])
    return summary


def initial_detector(ref_text: str, spec: dict):
    """(a detector of this run's spec holding the weights of registered model `ref_text`, its models:/ URI). The
    classes must be the same and the architecture too (the weights must mean the same thing); the run's own
    settings (frozen stages, thresholds) apply."""
    from atom import tracking
    from atom.errors import ConfigError
    from atom.models.detector import Detector, DetectorSpec

    ref = tracking.resolve_model(ref_text)
    parent = tracking.load_detector(ref)
    if list(parent.spec.classes) != list(spec["classes"]):
        raise ConfigError(f"init={ref_text}: {ref.uri} detects {parent.spec.classes}, this run trains "
                          f"{spec['classes']}; train from a model of the same classes, in the same order")
    detector = Detector(DetectorSpec(**spec))
    try:
        detector.load_state_dict(parent.state_dict())
    except RuntimeError as e:
        raise ConfigError(f"init={ref_text}: {ref.uri}'s architecture differs from this run's detector "
                          f"(backbone {parent.spec.backbone}, here {spec['backbone']}): {str(e).splitlines()[0]}")
    return detector, ref.uri


def select_classes(version, classes) -> list[str]:
    """The classes to train: all of the version's (None), or a subset; the others' boxes become background."""
    from atom.data.version import DatasetError

    if classes is None:
        return version.classes
    unknown = [c for c in classes if c not in version.classes]
    if unknown or not classes:
        raise DatasetError(f"{version.root}: data.classes {list(classes)} must be a non-empty subset of the "
                           f"version's classes {version.classes}")
    return list(classes)


def main() -> None:
    """`python -m recipes.train KEY=VALUE ...`, the same Hydra application as `atom train`."""
    sys.exit(entry.run("train", "train", train, sys.argv[1:]))


if __name__ == "__main__":
    main()
