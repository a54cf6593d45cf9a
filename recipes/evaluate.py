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
    from atom.evaluation import evaluate_and_log

    ref, detector, version = load_registered(cfg)
    split = cfg.split if version.has_split(cfg.split) else "val"
    out = Path(cfg.output or Path(cfg.paths.output_dir) / "evaluations" / ref.name / f"v{ref.version}")
    metrics, _ = evaluate_and_log(detector, version, split, out, ref.run_id, f"eval/{split.replace('+', '_')}",
                                  f"evaluation/{split}", {"model": ref.uri})
    return {**metrics, "output": str(out)}


@hydra.main(version_base="1.3", config_path="../conf", config_name="evaluate")
def main(cfg: DictConfig) -> None:
    print(json.dumps(evaluate(cfg), indent=1))


if __name__ == "__main__":
    main()
