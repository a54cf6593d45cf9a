"""Few-shot adaptation of a registered detector to a new scene's classes.

The pieces `recipes/adapt.py` composes:
- `plan`: every check on the request (classes, shots, base model vs config) before anything trains;
- `sample_shots`: K images per new class from the training pool, seeded, as in the few-shot detection literature;
- `build`: the new detector. `generalized` keeps the base detector frozen and adds a head for the new classes
  beside the base head (the base classes' outputs do not change at all: no forgetting by construction);
  `novel` keeps only the new classes.
What the new classes read is not assumed to be the base detector's features: by default (`transfer=imagenet`)
their head reads ImageNet features through a backbone + FPN of its own, because the base detector's features were
trained to call exactly these objects background — on the K-shot benchmark (benchmarks/fewshot.py) reading them did
worse on both scenes although the base detector boxed 90-100 % of the vehicles shots' objects. What the base
detector learned about boxes does transfer: the new head's FPN, towers and box regression start as the base's
(`head_init=base`; vehicles K=10 nAP50 0.44 -> 0.49 over 10 seeds), only the classifier starts fresh.
New class weights start at the focal-loss prior: weight imprinting (from the shots' mean head feature) was measured
and did worse. What the K shots cannot teach is what the new classes are not: on vehicles most of the new head's lost
precision was boxes on cars, buses and trucks. So each training batch also holds images of the base model's training
data whose base-class boxes are known background for the new classes (`fewshot.negatives`,
`atom.data.loader.KnownNegatives`); only where those objects would be detected (their FCOS locations), since the
images are not labeled for the new classes.
TFA's cosine classifier (`classifier=cosine`) scored the same at K=10 and lower at K=1 on vehicles: selectable for
the benchmark, not the default.
"""

from __future__ import annotations

import math
import random
from dataclasses import dataclass

import torch
import torch.nn.functional as F

from atom.data.version import DatasetVersion
from atom.errors import AtomError
from atom.models.backbones import create_backbone
from atom.models.detector import Detector, DetectorSpec

MODES = ("generalized", "novel")
# Which features the new head reads. imagenet: an FPN on the ImageNet backbone (in generalized mode a backbone + FPN
# of the new head's own beside the frozen base); detector: the base detector's backbone and FPN (one backbone, half
# the inference cost, but features trained to call the new objects background: measured worse on both scenes).
TRANSFERS = ("imagenet", "detector")
# Where the new head (its trainable FPN, towers and box regression) starts. base: as the base detector's (what a box
# of an object looks like, learned from all its data; the new classifier starts fresh either way); fresh: random.
HEAD_INITS = ("base", "fresh")
# How the new head scores its classes: linear (a 1x1 conv, as the base head) or cosine (TFA's scaled cosine).
CLASSIFIERS = ("linear", "cosine")


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
    _check_choice("mode", mode, MODES)
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


def _check_choice(name: str, value: str, choices: tuple[str, ...]) -> None:
    if value not in choices:
        raise AdaptationError(f"{name} {value!r}: choose one of {list(choices)}")


def build(base: Detector, p: Plan, transfer: str, unfreeze_backbone: bool = False,
          classifier: str = "linear", head_init: str = "base", scale: float = 1.0) -> Detector:
    """The detector to train, with everything it must not change frozen. Trainable: the new head and the FPN it
    reads (generalized with `imagenet`: its own; novel: the detector's), plus the later stages of that backbone
    with `unfreeze_backbone` (partial unfreezing). In generalized mode every base part stays frozen. `head_init`
    (HEAD_INITS) says where the trainable FPN, towers and box regression start. `scale` is the resolution of the
    new classes relative to the base's input: novel mode letterboxes images to input_size x scale (real pixels);
    generalized mode keeps the base's input (its classes stay bit-identical) and upsamples it for the new head's
    own backbone (`DetectorSpec.feature_scales`)."""
    _check_choice("transfer", transfer, TRANSFERS)
    _check_choice("classifier", classifier, CLASSIFIERS)
    _check_choice("head_init", head_init, HEAD_INITS)
    generalized = p.mode == "generalized"
    if unfreeze_backbone and generalized and transfer == "detector":
        raise AdaptationError("unfreeze_backbone with transfer=detector would change the base classes' features: "
                              "use transfer=imagenet or mode=novel")
    if scale != 1.0 and generalized and transfer == "detector":
        raise AdaptationError(f"scale={scale} with transfer=detector: the new head reads the base's features at the "
                              "base's resolution; use transfer=imagenet or mode=novel")
    size = base.spec.input_size * scale
    if scale <= 0 or size % 32:
        raise AdaptationError(f"scale={scale}: input size {base.spec.input_size} x {scale} = {size:g} must be a "
                              "positive multiple of 32 (the coarsest stride)")
    new = len(base.heads) if generalized else 0
    spec = base.spec.to_dict() | {"classes": p.classes, "pretrained": False}
    cosine = (new,) if classifier == "cosine" else ()
    if generalized:
        spec |= {"class_groups": [*base.spec.class_groups, len(p.new_classes)],
                 "own_features": (*base.spec.own_features, *([new] if transfer == "imagenet" else [])),
                 "cosine_heads": (*base.spec.cosine_heads, *cosine),
                 "feature_scales": (*base.spec.feature_scales, scale)}
    else:
        spec |= {"class_groups": [], "own_features": (), "cosine_heads": cosine, "feature_scales": (),
                 "input_size": int(size)}
    detector = Detector(DetectorSpec(**spec))
    if generalized:  # every base module keeps its name, weights and outputs
        detector.load_state_dict(base.state_dict(), strict=False)
        detector.freeze("backbone", "neck", *[f"heads.{g}" for g in range(new)],
                        *[f"own_features.{g}" for g in base.spec.own_features])
    features = f"own_features.{new}." if generalized and transfer == "imagenet" else ""
    if transfer == "imagenet":
        weights = create_backbone(spec["backbone"], out_indices=(2, 3, 4), pretrained=True).state_dict()
        detector.get_submodule(f"{features}backbone").load_state_dict(weights)
        if head_init == "base":  # the base FPN over ImageNet features: a start to train from, not a fit
            detector.get_submodule(f"{features}neck").load_state_dict(base.neck.state_dict())
    elif not generalized:  # the base detector's backbone and FPN (in generalized mode: shared, frozen)
        detector.load_state_dict({k: v for k, v in base.state_dict().items() if not k.startswith("heads.")},
                                 strict=False)
    if head_init == "base":
        detector.heads[new].towers.load_state_dict(base.heads[0].towers.state_dict())
        detector.heads[new].reg.load_state_dict(base.heads[0].reg.state_dict())
    if not unfreeze_backbone:
        detector.freeze(f"{features}backbone")
    return detector


def steps_for(n_images: int, per_sqrt_image: float, min_steps: int, max_steps: int) -> int:
    """Training steps grow with the square root of the number of shot images: enough passes for K=1 to fit, not
    so many that K=30 overfits or runs long."""
    return int(min(max(round(per_sqrt_image * math.sqrt(n_images)), min_steps), max_steps))


def zoom_crops(images: torch.Tensor, targets: list[dict], zoom: float, size: int) -> tuple[torch.Tensor, list[dict]]:
    """What a head at `scale` trains on, for the cost of size x size images: each image upsampled by `zoom` as that
    head's own backbone sees it at inference (generalized mode; novel mode's images are letterboxed larger already,
    zoom 1), then cut to a size x size window around a random one of its boxes (else of its negatives), targets
    moved along. A box less than half inside the window is dropped (so it is neither an object nor background that
    the window's edge cut); the head sees the whole upsampled image at inference (fully convolutional)."""
    if zoom != 1.0:
        images = F.interpolate(images, scale_factor=zoom, mode="bilinear", align_corners=False)
    height, width = images.shape[-2:]
    margin = size // 8  # the chosen box's centre stays this far inside the window
    crops, moved = [], []
    for image, target in zip(images, targets):
        boxes = {k: v * zoom for k, v in target.items() if k in ("boxes", "negatives")}
        anchors = boxes["boxes"] if len(boxes["boxes"]) else boxes.get("negatives", boxes["boxes"])
        box = anchors[torch.randint(len(anchors), ()).item()] if len(anchors) else None
        origin = []
        for axis, extent in ((0, width), (1, height)):
            lo, hi = 0.0, float(extent - size)
            if box is not None:  # window origins that keep the box's centre `margin` inside
                centre = float(box[axis] + box[axis + 2]) / 2
                lo, hi = max(lo, centre - size + margin), min(hi, centre - margin)
            origin.append(int(min(max(lo + torch.rand(()).item() * max(hi - lo, 0.0), 0), extent - size)))
        x0, y0 = origin
        crops.append(image[:, y0:y0 + size, x0:x0 + size])
        shift = torch.tensor([x0, y0, x0, y0], dtype=images.dtype, device=images.device)
        out = dict(target)
        for key, b in boxes.items():
            inside = (b - shift).clamp(min=0, max=size)
            area = lambda t: (t[:, 2] - t[:, 0]).clamp(min=0) * (t[:, 3] - t[:, 1]).clamp(min=0)  # noqa: E731
            keep = area(inside) >= 0.5 * area(b).clamp(min=1e-6)
            out[key] = inside[keep]
            if key == "boxes":
                out["labels"] = target["labels"][keep]
        moved.append(out)
    return torch.stack(crops), moved
