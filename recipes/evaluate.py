"""Evaluate a registered model version on a split of the dataset version it was trained on.

    atom evaluate model=atom-sample@candidate split=test
"""

from __future__ import annotations

import sys
from pathlib import Path

from omegaconf import DictConfig

from recipes import entry
from recipes.common import load_registered


def evaluate(cfg: DictConfig) -> dict:
    from atom.evaluation import evaluate_and_log

    ref, detector, version = load_registered(cfg)
    split = cfg.split if version.has_split(cfg.split) else "val"
    out = Path(cfg.output or Path(cfg.paths.output_dir) / "evaluations" / ref.name / f"v{ref.version}")
    metrics, _ = evaluate_and_log(detector, version, split, out, ref.run_id, f"eval/{split.replace('+', '_')}",
                                  f"evaluation/{split}", {"model": ref.uri})
    return {**metrics, "output": str(out)}


def main() -> None:
    """`python -m recipes.evaluate KEY=VALUE ...`, the same Hydra application as `atom evaluate`."""
    sys.exit(entry.run("evaluate", "evaluate", evaluate, sys.argv[1:]))


if __name__ == "__main__":
    main()
