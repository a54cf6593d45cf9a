"""Export a registered model version to a verified bundle and attach it to the version in MLflow.

    atom export model=atom-sample@candidate                  (ONNX, verified against PyTorch on val images)
    atom export model=atom-sample@candidate export=onnx-int8 export.args.calibration_method=entropy
    atom export model=atom-sample/3 export=FORMAT     (FORMAT: onnx, onnx-fp16, onnx-int8, openvino, tensorrt;
                                                       exporters/__init__.py FORMATS lists their arguments)
"""

from __future__ import annotations

import sys
from pathlib import Path

from omegaconf import DictConfig, OmegaConf

from recipes import entry
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
                                 tracking.tracking_uri(cfg.paths.output_dir),
                                 calibration_split=tracking.training_split(ref))
    artifact = log_bundle(ref, bundle, cfg.export.format)
    return {"model": ref.uri, "bundle": str(bundle), "mlflow_artifacts": artifact, **report}


def main() -> None:
    """`python -m recipes.export KEY=VALUE ...`, the same Hydra application as `atom export`."""
    sys.exit(entry.run("export", "export", export, sys.argv[1:]))


if __name__ == "__main__":
    main()
