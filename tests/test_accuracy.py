"""Accuracy guard: real training on ../shared/datasets/vehicles with a fixed seed and a small budget must reach a
floor derived from measured runs, and so must one few-shot adaptation (K=10) of a base detector trained the same
way. Accuracy only, never time. (A silent regression once halved vehicles mAP50 with every other test green.)

The runs are defined once, in benchmarks/guard.py, which also measures them over seeds and records them in
benchmarks/results/guard.jsonl; FLOORS there says how each floor was derived and at which commit.
"""

from __future__ import annotations

import os

import pytest

from benchmarks.guard import FLOORS, adapt_run, base_run, train_run

pytestmark = [pytest.mark.accuracy, pytest.mark.shared]


@pytest.fixture(scope="module")
def dirs(shared_datasets, tmp_path_factory):
    from atom.data.formats import read_source
    from atom.data.version import write_version

    os.environ.pop("MLFLOW_TRACKING_URI", None)
    root = tmp_path_factory.mktemp("accuracy")
    dirs = {"datasets": root / "datasets", "outputs": root / "outputs"}
    write_version(read_source("yolo", shared_datasets / "vehicles"), dirs["datasets"], "vehicles")
    return dirs


def _check(value: float, name: str) -> None:
    f = FLOORS[name]
    assert value >= f["floor"], (f"{name} {value:.4f} is below the accuracy guard's floor {f['floor']} "
                                 f"(measured {f['measured']} at {f['commit']}): accuracy regressed")


def test_training_on_vehicles_reaches_the_floor(dirs):
    result = train_run(dirs, seed=0)
    assert result["split"] == "test"
    _check(result["mAP50"], "train_test_mAP50")


def test_fewshot_adaptation_on_vehicles_reaches_the_floor(dirs):
    base = base_run(dirs, seed=0)
    result = adapt_run(dirs, base, seed=0)
    assert result["shots"] == 10 and result["split"] == "val+test"
    _check(result["nAP50"], "adapt_nAP50")
