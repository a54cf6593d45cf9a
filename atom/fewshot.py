"""Few-shot adaptation of a registered detector to a new scene's classes.

The pieces `recipes/adapt.py` composes:
- `plan`: every check on the request (classes, shots, base model vs config) before anything trains;
- `sample_shots`: K images per new class from the training pool, seeded, as in the few-shot detection literature;
- `base_recall`: the quick validation that decides what to transfer — does the base detector, whatever class it
  says, already put a box on the new objects of the K shots? If it does, its whole head transfers; if not, its
  domain is unrelated and a detector learnt from it is a worse start than the ImageNet backbone;
- `build`: the new detector. `generalized` keeps the base detector frozen and adds a head for the new classes
  beside the base head (the base classes' outputs do not change at all: no forgetting by construction);
  `novel` keeps only the new classes. New class weights start at the focal-loss prior: weight imprinting (from the
  shots' mean head feature) was measured and did worse (K=10 vehicles: nAP50 0.094 vs 0.150).
"""

from __future__ import annotations

import math
import random
from dataclasses import dataclass

import torch

from atom.data.version import DatasetVersion
from atom.errors import AtomError
from atom.models.detector import Detector, DetectorSpec

MODES = ("generalized", "novel")
TRANSFERS = ("auto", "detector", "features", "imagenet")


class AdaptationError(AtomError):
    pass


@dataclass(frozen=True)
class Plan:
    mode: str
    base_classes: list[str]
    new_classes: list[str]

    @property
    def classes(self) -> list[str]:
        return self.base_classes + self.new_classes if self.mode == "generalized" else self.new_classes


def plan(base: DetectorSpec, base_ref: str, version: DatasetVersion, mode: str, classes, model_cfg: dict) -> Plan:
    """Validate the request; `classes` None means the version's classes the base model does not have."""
    if mode not in MODES:
        raise AdaptationError(f"mode {mode!r}: choose one of {list(MODES)}")
    for key in ("backbone", "input_size", "mean", "std"):
        want = model_cfg.get(key)
        have = getattr(base, key)
        if want not in (None, [], have) and not _close(want, have):
            raise AdaptationError(f"base model {base_ref} has {key}={have}, but the config asks for {want}: "
                                  f"adapt a base model built for this config, or change model.{key}")
    if classes is None:
        new = [c for c in version.classes if c not in base.classes]
        if not new:
            raise AdaptationError(f"{version.root}: every class of the dataset ({version.classes}) is already a "
                                  f"class of base model {base_ref}; name the new classes with classes=[...]")
    else:
        new = list(classes)
        clash = [c for c in new if c in base.classes]
        if clash:
            raise AdaptationError(f"new class name(s) {clash} collide with base model {base_ref}'s classes "
                                  f"{base.classes}; rename them in the dataset or leave them out of classes")
        missing = [c for c in new if c not in version.classes]
        if missing:
            raise AdaptationError(f"{version.root}: class(es) {missing} are not in the dataset's classes "
                                  f"{version.classes}")
    if len(set(new)) != len(new):
        raise AdaptationError(f"classes {new} name a class twice")
    return Plan(mode, list(base.classes), new)


def _close(a, b) -> bool:
    if isinstance(a, (list, tuple)) and isinstance(b, (list, tuple)):
        return len(a) == len(b) and all(abs(float(x) - float(y)) < 1e-6 for x, y in zip(a, b))
    return a == b


def sample_shots(version: DatasetVersion, split: str, classes: list[str], k: int, seed: int) -> dict[str, list[int]]:
    """K image ids per class (images holding at least one box of it), drawn without overlap where possible."""
    if k < 1:
        raise AdaptationError(f"shots={k}: need at least one labeled image per class")
    coco = version.coco(split, classes)
    holding = {c: sorted({a["image_id"] for a in coco["annotations"] if a["category_id"] == i + 1})
               for i, c in enumerate(classes)}
    empty = [c for c, ids in holding.items() if not ids]
    if empty:
        raise AdaptationError(f"{version.annotations_file(split)}: no {split!r} image has a box of {empty}; "
                              f"label at least {k} image(s) of each class")
    short = {c: len(ids) for c, ids in holding.items() if len(ids) < k}
    if short:
        raise AdaptationError(f"{version.annotations_file(split)}: shots={k} but the {split!r} pool holds only "
                              f"{short} image(s) of those classes")
    rng = random.Random(seed)
    taken: set[int] = set()
    shots = {}
    for c in classes:  # fewest examples first would be fairer, but class order keeps seeds comparable across runs
        fresh = [i for i in holding[c] if i not in taken]
        pool = fresh if len(fresh) >= k else holding[c]
        shots[c] = sorted(rng.sample(pool, k))
        taken.update(shots[c])
    return shots


def shot_images(shots: dict[str, list[int]]) -> list[int]:
    return sorted({i for ids in shots.values() for i in ids})


@torch.no_grad()
def base_recall(base: Detector, loader, iou: float = 0.5) -> float:
    """Share of the shots' boxes that the base detector already covers with a detection of any class."""
    from torchvision.ops import box_iou

    base.eval()
    found = total = 0
    for images, targets, _ in loader:
        for det, t in zip(base.predict(images), targets):
            total += len(t["boxes"])
            if len(t["boxes"]) and len(det["boxes"]):
                found += int((box_iou(t["boxes"], det["boxes"]).max(1).values >= iou).sum())
    return found / max(total, 1)


def check_transfer(transfer: str, mode: str) -> None:
    if transfer not in TRANSFERS:
        raise AdaptationError(f"transfer {transfer!r}: choose one of {list(TRANSFERS)}")
    if mode == "generalized" and transfer == "imagenet":
        raise AdaptationError("transfer=imagenet drops the base detector, so it cannot keep the base classes: "
                              "use mode=novel")


def choose_transfer(transfer: str, mode: str, recall: float | None, threshold: float) -> str:
    check_transfer(transfer, mode)
    if transfer != "auto":
        return transfer
    if recall is not None and recall >= threshold:
        return "detector"
    return "features" if mode == "generalized" else "imagenet"


def build(base: Detector, p: Plan, transfer: str, unfreeze_backbone: bool = False) -> Detector:
    """The detector to train, with everything it must not change frozen. Trainable: the new head (generalized);
    neck and head (novel), plus the backbone's later stages with `unfreeze_backbone` (partial unfreezing; novel
    mode only, since in generalized mode the base head depends on the backbone)."""
    if unfreeze_backbone and p.mode == "generalized":
        raise AdaptationError("unfreeze_backbone would change the base classes' features: use mode=novel")
    if transfer == "imagenet":
        spec = DetectorSpec(**{**base.spec.to_dict(), "classes": p.classes, "class_groups": [], "pretrained": True})
        detector = Detector(spec)
        if not unfreeze_backbone:
            detector.freeze("backbone")
        return detector
    groups = list(base.spec.class_groups) + [len(p.new_classes)] if p.mode == "generalized" else []
    spec = DetectorSpec(**{**base.spec.to_dict(), "classes": p.classes, "class_groups": groups, "pretrained": False})
    detector = Detector(spec)
    state = {k: v for k, v in base.state_dict().items() if not k.startswith("heads.")}
    detector.load_state_dict(state, strict=False)
    new = detector.heads[-1]
    if p.mode == "generalized":
        for g, head in enumerate(base.heads):
            detector.heads[g].load_state_dict(head.state_dict())
        detector.freeze("backbone", "neck", *[f"heads.{g}" for g in range(len(base.heads))])
    elif not unfreeze_backbone:
        detector.freeze("backbone")
    if transfer == "detector":  # towers and box regression from the base head; the classifier stays new
        new.towers.load_state_dict(base.heads[0].towers.state_dict())
        new.reg.load_state_dict(base.heads[0].reg.state_dict())
    return detector


def steps_for(n_images: int, per_sqrt_image: float, min_steps: int, max_steps: int) -> int:
    """Training steps grow with the square root of the number of shot images: enough passes for K=1 to fit, not
    so many that K=30 overfits or runs long."""
    return int(min(max(round(per_sqrt_image * math.sqrt(n_images)), min_steps), max_steps))
