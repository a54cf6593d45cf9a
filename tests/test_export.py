"""Export verification's matching of PyTorch and exported detections (exporters/bundle.py), on hand-made sets."""

import torch

from atom.models.detector import DetectorSpec
from exporters.bundle import _match

SPEC = DetectorSpec(classes=["car", "bus"], score_thresh=0.05)


def detections(boxes, scores, labels):
    return {"boxes": torch.tensor(boxes, dtype=torch.float32), "scores": torch.tensor(scores),
            "labels": torch.tensor(labels)}


A = detections([[0, 0, 10, 10], [20, 20, 40, 40], [0, 0, 10, 10]], [0.9, 0.5, 0.3], [0, 0, 1])


def test_identical_sets_match_exactly():
    assert _match(A, A, SPEC, 100.0) == (3, 0, 0.0, None)


def test_box_error_is_relative_to_the_image_side():
    b = detections([[0, 0, 10, 12], [20, 20, 40, 40], [0, 0, 10, 10]], [0.9, 0.5, 0.3], [0, 0, 1])
    matched, borderline, worst, problem = _match(A, b, SPEC, 100.0)
    assert (matched, borderline, problem) == (3, 0, None)
    assert abs(worst - 0.02) < 1e-6


def test_a_class_never_matches_another_class():
    b = detections([[0, 0, 10, 10], [20, 20, 40, 40], [0, 0, 10, 10]], [0.9, 0.5, 0.3], [1, 0, 1])
    matched, _, _, problem = _match(A, b, SPEC, 100.0)
    assert matched == 2 and "found by only one model" in problem


def test_a_missing_confident_detection_is_a_problem_but_one_at_the_cap_is_borderline():
    missing_confident = detections([[20, 20, 40, 40], [0, 0, 10, 10]], [0.5, 0.3], [0, 1])
    assert "1 detections found by only one model" in _match(A, missing_confident, SPEC, 100.0)[3]
    missing_lowest = detections([[0, 0, 10, 10], [0, 0, 10, 10]], [0.9, 0.3], [0, 1])
    a = detections([[0, 0, 10, 10], [20, 20, 40, 40], [0, 0, 10, 10]], [0.9, 0.3, 0.3], [0, 0, 1])
    assert _match(a, missing_lowest, SPEC, 100.0) == (2, 1, 0.0, None)
