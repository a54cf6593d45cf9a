"""The DVC pipeline (dvc.yaml), run by DVC in a copy of the project: every stage runs from params.yaml, which is
DVC's Hydra composition of conf/pipeline.yaml; adapt teaches train's base model the scene's new class; a second run
skips everything; an export parameter reruns export and evaluate only; evaluate measures the bundle that export
wrote for the version that adapt pinned."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from atom import PROJECT_ROOT

# What DVC needs of the project: the pipeline, its configs, and the code it hashes as dependencies (the code that
# runs is the installed package's).
PROJECT_FILES = ["dvc.yaml", "params.yaml", ".dvc/config", ".dvcignore", ".gitignore", "conf", "atom", "recipes",
                 "exporters"]
TINY = ["synthetic.images=40", "detector.input_size=128", "trainer.max_epochs=1", "trainer.limit_train_batches=2",
        "trainer.limit_val_batches=2", "data.batch_size=4", "callbacks.rich_progress=false",
        "detector.score_thresh=0.01", "adapt.shots=2", "adapt.min_steps=2", "adapt.max_steps=2"]


def test_committed_params_yaml_is_the_composition_of_conf_pipeline(tmp_path):
    """`dvc repro` runs the committed params.yaml: it must be what `dvc exp run` would compose, not a stale copy."""
    from dvc.utils.hydra import compose_and_dump

    compose_and_dump(tmp_path / "params.yaml", str(PROJECT_ROOT / "conf"), None, "pipeline",
                     str(PROJECT_ROOT / "recipes"), [])
    assert (tmp_path / "params.yaml").read_text() == (PROJECT_ROOT / "params.yaml").read_text()


def test_every_stage_dependency_exists_and_nothing_runs_on_an_alias():
    stages = yaml.safe_load((PROJECT_ROOT / "dvc.yaml").read_text())["stages"]
    assert list(stages) == ["sample", "prepare", "train", "adapt", "export", "evaluate"]
    for name, stage in stages.items():
        assert "@" not in stage["cmd"], f"stage {name} names a model by alias"
        for dep in stage.get("deps", []):
            if "${" not in dep:
                assert (PROJECT_ROOT / dep).exists(), f"stage {name}: dependency {dep} does not exist"


def _dvc(repo: Path, *args: str) -> str:
    env = {**os.environ, "DVC_NO_ANALYTICS": "1",
           "PATH": str(Path(sys.executable).parent) + os.pathsep + os.environ.get("PATH", "")}
    env.pop("MLFLOW_TRACKING_URI", None)
    done = subprocess.run([sys.executable, "-m", "dvc", *args], cwd=repo, env=env, capture_output=True, text=True)
    assert done.returncode == 0, f"dvc {' '.join(args)} failed:\n{done.stdout[-3000:]}\n{done.stderr[-3000:]}"
    return done.stdout + done.stderr


@pytest.mark.slow
def test_pipeline_runs_then_skips_then_reruns_only_what_a_parameter_touches(tmp_path):
    repo = tmp_path / "project"
    repo.mkdir()
    for name in PROJECT_FILES:
        src, dst = PROJECT_ROOT / name, repo / name
        dst.parent.mkdir(parents=True, exist_ok=True)
        if src.is_dir():
            shutil.copytree(src, dst, ignore=shutil.ignore_patterns("__pycache__"))
        else:
            shutil.copy(src, dst)
    subprocess.run(["git", "init", "-q"], cwd=repo, check=True)
    subprocess.run(["git", "add", "-A"], cwd=repo, check=True)
    subprocess.run(["git", "-c", "user.email=tests@atom", "-c", "user.name=tests", "commit", "-qm", "project"],
                   cwd=repo, check=True)
    tiny = [a for o in TINY for a in ("-S", o)]

    first = _dvc(repo, "exp", "run", *tiny)
    for stage in ("sample", "prepare", "train", "adapt", "export", "evaluate"):
        assert f"Running stage '{stage}'" in first
    params = yaml.safe_load((repo / "params.yaml").read_text())
    assert params["detector"]["input_size"] == 128 and params["paths"]["root"] == "."
    base = json.loads((repo / "outputs/runs/sample-base/model_version.json").read_text())
    pinned = json.loads((repo / "outputs/runs/adapt-sample-k2-s0/model_version.json").read_text())
    adapted = json.loads((repo / "outputs/runs/adapt-sample-k2-s0/metrics.json").read_text())
    assert base["name"] == "atom-sample-base" and pinned["name"] == "atom-sample-fewshot"
    assert sorted(adapted["per_class"]) == ["bus", "car", "pedestrian"]  # the base's classes + the scene's new one
    served = json.loads((repo / "outputs/pipeline/evaluation/metrics.json").read_text())
    assert served["runtime"] == "onnx" and served["model"] == pinned["uri"]  # the adapted version, pinned
    bundle = repo / "outputs/pipeline/bundles" / pinned["name"] / f"v{pinned['version']}" / "onnx" / "manifest.json"
    assert bundle.exists()

    second = _dvc(repo, "exp", "run", *tiny)
    assert "Running stage" not in second

    third = _dvc(repo, "exp", "run", *tiny, "-S", "export.args.simplify=false")
    assert "Running stage 'export'" in third and "Running stage 'evaluate'" in third
    assert "Running stage 'train'" not in third and "Running stage 'prepare'" not in third
    assert "Running stage 'adapt'" not in third

    metrics = json.loads(_dvc(repo, "metrics", "show", "--json"))
    assert "mAP50" in json.dumps(metrics)
