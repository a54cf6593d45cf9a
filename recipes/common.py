"""What the evaluate and export recipes share: a registered model version with its dataset version."""

from __future__ import annotations

from pathlib import Path

from omegaconf import DictConfig


def load_registered(cfg: DictConfig):
    """(ModelRef, Detector, DatasetVersion) for cfg.registered_model, using the dataset version recorded in its lineage."""
    import torch

    from atom import tracking
    from atom.data.version import DatasetError, open_version

    torch.set_num_threads(cfg.threads)
    tracking.configure(cfg.paths.output_dir)
    ref = tracking.resolve_model(cfg.registered_model)
    name, version_id = ref.tags.get("dataset.name"), ref.tags.get("dataset.version")
    if not name or not version_id:
        raise LookupError(f"model {ref.uri} has no dataset lineage tags (dataset.name, dataset.version)")
    try:
        version = open_version(Path(cfg.paths.datasets), name, version_id)
    except DatasetError as e:
        raise DatasetError(f"model {ref.uri} was trained on dataset {name}/{version_id}, "
                           f"which is not in {cfg.paths.datasets}: {e}") from None
    return ref, tracking.load_detector(ref), version
