"""Export a registered model version to a verified bundle and attach it to the version in MLflow.

    atom export model=atom-sample@candidate                  (ONNX, verified against PyTorch on val images)
    atom export model=atom-sample/3 export=tensorrt   (needs TensorRT; reported as unavailable otherwise)
"""

from __future__ import annotations

import json
from pathlib import Path

import hydra
from omegaconf import DictConfig, OmegaConf

import recipes  # noqa: F401  (registers the config resolvers)
from recipes.common import load_registered


def export(cfg: DictConfig) -> dict:
    from atom import tracking
    from exporters import resolve_format
    from exporters.bundle import log_bundle, make_bundle

    args = OmegaConf.to_container(cfg.export.args)
    resolve_format(cfg.export.format, args)  # bad format or arguments fail before anything loads
    ref, detector, version = load_registered(cfg)
    bundle, report = make_bundle(ref, detector, version, cfg.export.format, args,
                                 OmegaConf.to_container(cfg.export.verify), Path(cfg.paths.bundles),
                                 tracking.tracking_uri(cfg.paths.output_dir))
    artifact = log_bundle(ref, bundle, cfg.export.format)
    return {"model": ref.uri, "bundle": str(bundle), "mlflow_artifacts": artifact, **report}


@hydra.main(version_base="1.3", config_path="../conf", config_name="export")
def main(cfg: DictConfig) -> None:
    print(json.dumps(export(cfg), indent=1))


if __name__ == "__main__":
    main()
