"""Evaluate a registered model version on a split of the dataset version it was trained on.

    atom evaluate model=atom-sample@candidate split=test
"""

from __future__ import annotations

import json
from pathlib import Path

import hydra
from omegaconf import DictConfig

import recipes  # noqa: F401  (registers the config resolvers)
from recipes.common import load_registered


def evaluate(cfg: DictConfig) -> dict:
    from mlflow import MlflowClient

    from atom.evaluation import evaluate as coco_eval
    from atom.evaluation import plot_pr_curves, prediction_grid

    ref, detector, version = load_registered(cfg)
    split = cfg.split if version.has_split(cfg.split) else "val"
    metrics, results, ev = coco_eval(detector, detector.spec, version, split)
    out = Path(cfg.output or Path(cfg.paths.output_dir) / "evaluations" / ref.name / f"v{ref.version}")
    out.mkdir(parents=True, exist_ok=True)
    metrics = {"model": ref.uri, "split": split, **metrics, "dataset_fingerprint": version.fingerprint}
    (out / "metrics.json").write_text(json.dumps(metrics, indent=1))
    plot_pr_curves(ev, version.classes, out / "pr_curves.png")
    prediction_grid(version, split, results, version.classes, out / "predictions.jpg")
    client = MlflowClient()
    client.log_metric(ref.run_id, f"eval/{split}/mAP50", metrics["mAP50"])
    client.log_metric(ref.run_id, f"eval/{split}/mAP50_95", metrics["mAP50_95"])
    client.log_artifacts(ref.run_id, str(out), f"evaluation/{split}")
    return {**metrics, "output": str(out)}


@hydra.main(version_base="1.3", config_path="../conf", config_name="evaluate")
def main(cfg: DictConfig) -> None:
    print(json.dumps(evaluate(cfg), indent=1))


if __name__ == "__main__":
    main()
