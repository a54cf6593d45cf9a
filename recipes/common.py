"""What the recipes share: a registered model version with its dataset version; the MLflow run of a training
(train, adapt)."""

from __future__ import annotations

import logging
from pathlib import Path

from omegaconf import DictConfig, OmegaConf

from atom.errors import RegistryError

log = logging.getLogger(__name__)


def load_registered(cfg: DictConfig, detector: bool = True):
    """(ModelRef, Detector, DatasetVersion) of the registered model cfg.model, with the dataset version of its
    lineage; the Detector is None with detector=False (a caller that runs the version's bundle instead)."""
    import torch

    from atom import tracking

    torch.set_num_threads(cfg.threads)
    tracking.configure(cfg.paths.output_dir)
    ref = tracking.resolve_model(cfg.model)
    version = lineage_version(ref, cfg.paths.datasets)
    return ref, tracking.load_detector(ref) if detector else None, version


def lineage_version(ref, datasets_dir, remedy: str = ""):
    """The dataset version a registered model (ModelRef) was trained on, from its lineage tags."""
    from atom.data.version import DatasetError, open_version

    name, version_id = ref.tags.get("dataset.name"), ref.tags.get("dataset.version")
    if not name or not version_id:
        raise RegistryError(f"model {ref.uri} has no dataset lineage tags (dataset.name, dataset.version){remedy}")
    try:
        return open_version(Path(datasets_dir), name, version_id)
    except DatasetError as e:
        raise DatasetError(f"model {ref.uri} was trained on dataset {name}/{version_id}, "
                           f"which is not in {datasets_dir}: {e}{remedy}") from None


def mlflow_logger(cfg: DictConfig, version, run_dir: Path, extra_tags: dict | None = None):
    """The run's MLFlowLogger: a new run, or the interrupted one when resuming. Returns (logger, resuming). In a
    distributed run only rank 0 talks to MLflow (an MLflow client on another rank would race rank 0 creating the
    embedded store); the others get a placeholder logger, which Lightning keeps silent off rank 0."""
    from pytorch_lightning.loggers import CSVLogger, MLFlowLogger
    from pytorch_lightning.utilities import rank_zero_only

    from atom import tracking

    if rank_zero_only.rank != 0:
        return CSVLogger(run_dir / "ranks"), False
    uri = tracking.configure(cfg.paths.output_dir)
    tracking.ensure_experiment(cfg.tracking.experiment, cfg.paths.output_dir)
    run_id_file = run_dir / "mlflow_run_id"
    resuming = bool(cfg.get("resume")) and (run_dir / "checkpoints" / "last.ckpt").exists() and run_id_file.exists()
    if cfg.get("resume") and not resuming:
        log.warning("resume requested but %s has no interrupted run; starting a new run", run_dir)
    logger = MLFlowLogger(
        experiment_name=cfg.tracking.experiment, run_name=cfg.run_name, tracking_uri=uri,
        artifact_location=tracking.artifact_location(cfg.paths.output_dir, uri),
        run_id=run_id_file.read_text().strip() if resuming else None,
        tags={**tracking.lineage_tags(version), **(extra_tags or {})})
    run_id_file.write_text(logger.run_id)
    if resuming:  # MLflow params are immutable: the resumed run keeps its first config; the new one is an artifact
        logger.experiment.set_tag(logger.run_id, "resumed", "true")
    else:
        logger.log_hyperparams(flat(OmegaConf.to_container(cfg, resolve=True)))
    config_file = run_dir / ("config-resumed.yaml" if resuming else "config.yaml")
    config_file.write_text(OmegaConf.to_yaml(cfg, resolve=True))
    logger.experiment.log_artifact(logger.run_id, str(config_file))
    return logger, resuming


def write_model_version(run_dir: Path, ref, run_id: str) -> None:
    """run_dir/model_version.json: the registered version this run made, the pin that later stages (dvc.yaml) and
    `model=<path>.json` resolve instead of an alias that a later run moves."""
    import json

    (Path(run_dir) / "model_version.json").write_text(json.dumps(
        {"name": ref.name, "version": ref.version, "run_id": run_id, "uri": ref.uri}, indent=1))


def flat(d: dict, prefix: str = "") -> dict:
    out = {}
    for k, v in d.items():
        if isinstance(v, dict):
            out.update(flat(v, f"{prefix}{k}."))
        else:
            out[f"{prefix}{k}"] = v
    return out
