"""Structured configs (Hydra's ConfigStore) for the groups whose values are easy to get wrong: the detector spec
and the few-shot recipe. A mistyped key, a string where a number goes or an unknown choice fails at composition
with Hydra's one-line message, before anything loads or trains. Registered as root-level
`detector_schema` and `fewshot_schema`; the groups' options list theirs first in their defaults
(`/detector_schema@_here_`). The choices mirror atom/fewshot.py and atom/data/augment.py (a test
checks that they agree).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from enum import StrEnum

from hydra.core.config_store import ConfigStore


class Transfer(StrEnum):
    imagenet = "imagenet"
    detector = "detector"


class HeadInit(StrEnum):
    base = "base"
    fresh = "fresh"


class Classifier(StrEnum):
    linear = "linear"
    cosine = "cosine"


class Policy(StrEnum):
    none = "none"
    flip = "flip"
    light = "light"
    strong = "strong"


@dataclass
class DetectorConfig:
    """atom.models.detector.DetectorSpec's configurable fields (classes come from the dataset version)."""

    backbone: str = "tf_efficientnet_lite0"
    pretrained: bool = True
    input_size: int = 320
    fpn_channels: int = 64
    head_channels: int = 96
    head_convs: int = 2
    freeze_stages: int = 2
    freeze_bn: bool = False
    score_thresh: float = 0.05
    nms_iou: float = 0.6
    max_detections: int = 100


@dataclass
class FewShotOptim:
    lr: float = 1.0e-2
    weight_decay: float = 0.05
    warmup_steps: int = 20
    backbone_lr_scale: float = 0.1


@dataclass
class FewShotConfig:
    transfer: Transfer = Transfer.imagenet
    head_init: HeadInit = HeadInit.base
    classifier: Classifier = Classifier.linear
    unfreeze_backbone: bool = False
    scale: float = 1.0
    policy: Policy = Policy.strong
    mosaic: float = 0.0
    copy_paste: float = 0.0
    batch_size: int = 8
    negatives: int = 4
    num_workers: int = 1
    steps_per_sqrt_image: float = 27
    min_steps: int = 100
    max_steps: int = 500
    optim: FewShotOptim = field(default_factory=FewShotOptim)


def register() -> None:
    cs = ConfigStore.instance()
    # Root-level nodes, not options of the groups: `--help` lists a group's options, and a schema is none.
    cs.store(name="detector_schema", node=DetectorConfig)
    cs.store(name="fewshot_schema", node=FewShotConfig)
