"""Evaluate a registered model version on a split of the dataset version it was trained on: in PyTorch, or
through the serving bundle that `atom export` made for it (`runtime=FORMAT`: atom.runtime, what serving runs).

    atom evaluate model=atom-sample@candidate split=test
    atom evaluate model=outputs/runs/sample/model_version.json runtime=onnx
"""

from __future__ import annotations

import sys
from pathlib import Path

from omegaconf import DictConfig

from recipes import entry
from recipes.common import load_registered


def evaluate(cfg: DictConfig) -> dict:
    from atom.evaluation import evaluate_and_log

    ref, detector, version = load_registered(cfg, detector=not cfg.runtime)
    split = cfg.split if version.has_split(cfg.split) else "val"
    name = f"v{ref.version}" + (f"-{cfg.runtime}" if cfg.runtime else "")
    out = Path(cfg.output or Path(cfg.paths.output_dir) / "evaluations" / ref.name / name)
    if cfg.runtime:  # the bundle alone, as serving runs it: the PyTorch detector is not loaded
        detector = serving_bundle(Path(cfg.paths.bundles), ref, cfg.runtime, cfg.threads)
    prefix = f"eval/{split.replace('+', '_')}" + (f"/{cfg.runtime}" if cfg.runtime else "")
    metrics, _ = evaluate_and_log(detector, version, split, out, ref.run_id, prefix,
                                  f"evaluation/{split}" + (f"-{cfg.runtime}" if cfg.runtime else ""),
                                  {"model": ref.uri, "runtime": cfg.runtime or "pytorch"})
    return {**metrics, "output": str(out)}


def serving_bundle(bundles: Path, ref, fmt: str, threads: int):
    """The bundle `atom export` wrote for the version in this format, loaded by the torch-free runtime."""
    from atom.errors import RegistryError
    from atom.runtime import Bundle

    root = bundles / ref.name / f"v{ref.version}" / fmt
    if not (root / "manifest.json").exists():
        raise RegistryError(f"{root}: no {fmt} bundle of {ref.uri} here; make it with "
                            f"`atom export model={ref.name}/{ref.version} export={fmt}` (or `atom models pull`)")
    return Bundle(root, threads=threads)


def main() -> None:
    """`python -m recipes.evaluate KEY=VALUE ...`, the same Hydra application as `atom evaluate`."""
    sys.exit(entry.run("evaluate", "evaluate", evaluate, sys.argv[1:]))


if __name__ == "__main__":
    main()
