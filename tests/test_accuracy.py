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


@pytest.fixture(scope="module")
def vehicles_model(dirs):
    return train_run(dirs, seed=0)


def test_training_on_vehicles_reaches_the_floor(vehicles_model):
    assert vehicles_model["split"] == "test"
    _check(vehicles_model["mAP50"], "train_test_mAP50")


def test_the_exported_bundle_alone_reproduces_the_test_map(dirs, vehicles_model):
    """The serving property: the bundle's manifest + ONNX Runtime + numpy (atom.runtime, no PyTorch code path)
    give the test mAP that PyTorch measured (an independent evaluator once reproduced it within 0.003)."""
    from atom.data.version import open_version
    from atom.evaluation import coco_evaluate, to_coco_results
    from atom.runtime import Bundle
    from recipes import compose
    from recipes.export import export

    name = f"{vehicles_model['model_name']}/{vehicles_model['model_version']}"
    out = export(compose("export", [f"model={name}", f"paths.datasets={dirs['datasets']}",
                                    f"paths.output_dir={dirs['outputs']}"]))
    bundle, version = Bundle(out["bundle"]), open_version(dirs["datasets"], "vehicles", "latest")
    gt = version.coco("test", bundle.classes)
    detections = bundle.detect_files([version.root / im["file_name"] for im in gt["images"]])
    results = [r for im, det in zip(gt["images"], detections) for r in to_coco_results(im["id"], vars(det))]
    assert abs(coco_evaluate(gt, results)[0]["mAP50"] - vehicles_model["mAP50"]) <= 0.003


def test_fewshot_adaptation_on_vehicles_reaches_the_floor(dirs):
    base = base_run(dirs, seed=0)
    result = adapt_run(dirs, base, seed=0)
    assert result["shots"] == 10 and result["split"] == "val+test"
    _check(result["nAP50"], "adapt_nAP50")
