"""Export verification (exporters/bundle.py verify): what the exported graph computes is compared with PyTorch
element-wise on real images, then mAP on the split; a deliberately broken graph is refused."""

from __future__ import annotations

import onnx
import pytest
import torch
from onnx import numpy_helper

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def exported(trained, project, tmp_path_factory):
    from atom import tracking
    from exporters import onnx as onnx_export

    tracking.configure(project["outputs"])
    detector = tracking.load_detector(tracking.resolve_model(f"{trained['result']['model_name']}@candidate"))
    size = detector.spec.input_size
    path = onnx_export.export(detector, torch.zeros(1, 3, size, size), tmp_path_factory.mktemp("onnx"))
    return detector, path


def _verify(detector, path, version):
    from exporters import onnx as onnx_export
    from exporters.bundle import verify

    return verify(detector, onnx_export.runner(path), version, "val", box_rtol=1e-4, score_atol=1e-4, map_tol=1e-3)


def test_a_faithful_export_passes_on_raw_outputs_and_map(exported, project):
    detector, path = exported
    report = _verify(detector, path, project["version"])
    assert report["passed"], report["failures"]
    assert report["raw_images"] > 0 and report["max_box_error_relative"] < 1e-5 and report["max_score_error"] < 1e-5


def test_a_perturbed_weight_in_the_onnx_file_is_refused(exported, project, tmp_path):
    detector, path = exported
    model = onnx.load(str(path))
    bias = next(t for t in model.graph.initializer if t.name == "heads.0.cls.0.bias")  # level 0's class logits
    bias.CopyFrom(numpy_helper.from_array(numpy_helper.to_array(bias) + 0.1, bias.name))  # a small, real change
    broken = tmp_path / "broken.onnx"
    onnx.save(model, str(broken))
    report = _verify(detector, broken, project["version"])
    assert not report["passed"] and any(f.startswith("raw scores") for f in report["failures"])


def test_the_verification_split_falls_back_where_there_is_no_val(project):
    from exporters.bundle import verification_split

    version = project["version"]
    assert verification_split(version, "val") == "val"
    assert verification_split(version, "nope") == "val"  # then val, test, train: the first the version has


def test_a_version_without_val_is_verified_on_test(sample_export, tmp_path):
    from atom.data.formats import read_source
    from atom.data.version import write_version
    from exporters.bundle import verification_split

    version, _ = write_version(read_source("labelstudio", sample_export), tmp_path, "no-val", split_ratios=(0.8, 0, 0.2))
    assert not version.has_split("val") and verification_split(version, "val") == "test"
