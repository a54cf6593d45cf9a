"""The detector: timm backbone (features_only) -> light FPN -> anchor-free FCOS-style head.

One module serves training, evaluation, adaptation and export. Its preprocessing travels with it as data
(`DetectorSpec`): letterbox the RGB image to `input_size` (longest side, aspect kept, padded bottom/right with 0),
feed float pixels 0..255; the network normalises with the backbone's mean/std itself, so export and serving
never guess. `forward` returns decoded boxes (xyxy, input pixels) and per-class scores for every location;
`postprocess` applies score threshold, class-wise NMS and the detection cap.

Latency shaped the head: three FPN levels (strides 8/16/32) and per-level towers of depthwise-separable
convolutions with BatchNorm (folded away at export) instead of FCOS's 4-conv GroupNorm towers on five levels.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field

import torch
import torch.nn.functional as F
from torch import nn
from torchvision.ops import batched_nms

from atom.errors import ConfigError
from atom.models.backbones import create_backbone, normalization


@dataclass
class DetectorSpec:
    classes: list[str]
    backbone: str = "tf_efficientnet_lite0"
    pretrained: bool = True
    input_size: int = 320
    fpn_channels: int = 64
    head_channels: int = 96
    head_convs: int = 2
    class_groups: list[int] = field(default_factory=list)  # classes per head, in order; empty: one head for all
    # Heads that read a backbone + FPN of their own instead of the shared one: a head for new classes trained from
    # ImageNet beside a frozen base (few-shot). A tuple, so detectors pickled before it existed read () here.
    own_features: tuple[int, ...] = ()
    # Heads whose classifier scores the scaled cosine similarity of features and class weights (TFA's few-shot
    # classifier) instead of a linear 1x1 conv. A tuple for the same reason.
    cosine_heads: tuple[int, ...] = ()
    # Per head, the factor its input is upsampled by before its own backbone (empty: 1 for every head): a few-shot
    # head for small new objects sees them larger while the base head keeps its input, so base outputs stay
    # bit-identical. Only a head with features of its own can have a factor other than 1.
    feature_scales: tuple[float, ...] = ()
    freeze_stages: int = 2  # backbone stages (after the stem) kept frozen; -1 freezes nothing
    freeze_bn: bool = False  # keep backbone BatchNorm in eval mode (conf/model/lite0.yaml: measured worse)
    score_thresh: float = 0.05
    nms_iou: float = 0.6
    max_detections: int = 100
    mean: list[float] = field(default_factory=list)  # 0..1 scale; filled from the backbone when empty
    std: list[float] = field(default_factory=list)

    def __post_init__(self):
        if not self.mean or not self.std:
            mean, std = normalization(self.backbone)
            self.mean, self.std = list(mean), list(std)
        if not self.classes:
            raise ConfigError("a detector needs at least one class")
        if self.input_size % 32:
            raise ConfigError(f"input_size {self.input_size} must be a multiple of 32 (the coarsest stride)")
        self.class_groups = list(self.class_groups) or [len(self.classes)]
        if sum(self.class_groups) != len(self.classes) or min(self.class_groups) < 1:
            raise ConfigError(f"class_groups {self.class_groups} must split the {len(self.classes)} classes")
        for name in ("own_features", "cosine_heads"):
            heads = tuple(getattr(self, name))
            if any(not 0 <= g < len(self.class_groups) for g in heads):
                raise ConfigError(f"{name} {heads}: no such head ({len(self.class_groups)} heads)")
            setattr(self, name, heads)
        self.feature_scales = tuple(float(f) for f in self.feature_scales) or (1.0,) * len(self.class_groups)
        if len(self.feature_scales) != len(self.class_groups):
            raise ConfigError(f"feature_scales {self.feature_scales}: one per head ({len(self.class_groups)} heads)")
        for g, f in enumerate(self.feature_scales):
            if f != 1.0 and (g not in self.own_features or f <= 0 or (self.input_size * f) % 32):
                raise ConfigError(f"feature_scales[{g}] = {f}: only a head with features of its own can be scaled, "
                                  f"and input_size x scale ({self.input_size} x {f}) must be a multiple of 32")

    def to_dict(self) -> dict:
        return asdict(self)


STRIDES = (8, 16, 32)
PRE_NMS_TOP_K = 1000  # bounds NMS work on a poorly trained model
NO_CLASS_LOGIT = -1e4  # another head's classes at a head's locations: score exactly 0 after the sigmoid


def _sep_conv(cin: int, cout: int) -> nn.Sequential:
    return nn.Sequential(
        nn.Conv2d(cin, cin, 3, padding=1, groups=cin, bias=False), nn.BatchNorm2d(cin), nn.ReLU(inplace=True),
        nn.Conv2d(cin, cout, 1, bias=False), nn.BatchNorm2d(cout), nn.ReLU(inplace=True))


class LightFPN(nn.Module):
    def __init__(self, in_channels: list[int], channels: int):
        super().__init__()
        self.lateral = nn.ModuleList(nn.Conv2d(c, channels, 1) for c in in_channels)
        self.smooth = nn.ModuleList(_sep_conv(channels, channels) for _ in in_channels)

    def forward(self, feats: list[torch.Tensor]) -> list[torch.Tensor]:
        lat = [conv(f) for conv, f in zip(self.lateral, feats)]
        for i in range(len(lat) - 2, -1, -1):  # a fixed factor, not the shape: no shape operations in the graph
            lat[i] = lat[i] + F.interpolate(lat[i + 1], scale_factor=2.0, mode="nearest")
        return [conv(x) for conv, x in zip(self.smooth, lat)]


class CosineClassifier(nn.Module):
    """Per location: scale * cos(feature, class weight) + bias. Bounded logits make a class's score depend on the
    direction of the feature, not its magnitude, which few-shot detection found steadier on few examples (TFA)."""

    SCALE = 20.0  # TFA's temperature

    def __init__(self, channels: int, num_classes: int):
        super().__init__()
        self.weight = nn.Parameter(torch.empty(num_classes, channels, 1, 1))
        self.bias = nn.Parameter(torch.zeros(num_classes))

    def forward(self, x):
        return F.conv2d(F.normalize(x, dim=1), F.normalize(self.weight, dim=1)) * self.SCALE \
            + self.bias.view(1, -1, 1, 1)


class Head(nn.Module):
    """Per level: a tower of depthwise-separable convs shared by classification, box and centerness outputs."""

    def __init__(self, in_channels: int, channels: int, num_convs: int, num_classes: int, levels: int,
                 cosine: bool = False):
        super().__init__()
        self.towers = nn.ModuleList(
            nn.Sequential(*[_sep_conv(in_channels if i == 0 else channels, channels) for i in range(num_convs)])
            for _ in range(levels))
        out = channels if num_convs else in_channels
        classifier = CosineClassifier if cosine else lambda c, n: nn.Conv2d(c, n, 1)
        self.cls = nn.ModuleList(classifier(out, num_classes) for _ in range(levels))
        self.reg = nn.ModuleList(nn.Conv2d(out, 5, 1) for _ in range(levels))  # l, t, r, b, centerness
        prior = 0.01  # focal-loss prior: start with few confident background scores
        for conv in self.cls:
            nn.init.constant_(conv.bias, -torch.log(torch.tensor((1 - prior) / prior)).item())
            nn.init.normal_(conv.weight, std=0.01)

    def forward(self, feats):
        towers = [tower(f) for tower, f in zip(self.towers, feats)]
        return [(cls(t), reg(t)) for cls, reg, t in zip(self.cls, self.reg, towers)]


class FeaturePyramid(nn.Module):
    """A backbone + FPN of a head's own (`DetectorSpec.own_features`)."""

    def __init__(self, spec: DetectorSpec):
        super().__init__()
        self.backbone = create_backbone(spec.backbone, out_indices=(2, 3, 4), pretrained=spec.pretrained)
        self.neck = LightFPN(self.backbone.feature_info.channels(), spec.fpn_channels)

    def forward(self, x):
        return self.neck(self.backbone(x))


class Detector(nn.Module):
    """One head per class group: a trained detector has one; generalized few-shot adaptation adds a head for the
    new classes beside the frozen base head (reading the shared features or its own), so the base classes' outputs
    stay bit-identical."""

    def __init__(self, spec: DetectorSpec):
        super().__init__()
        self.spec = spec
        self.backbone = create_backbone(spec.backbone, out_indices=(2, 3, 4), pretrained=spec.pretrained)
        self.neck = LightFPN(self.backbone.feature_info.channels(), spec.fpn_channels)
        self.heads = nn.ModuleList(Head(spec.fpn_channels, spec.head_channels, spec.head_convs, n, len(STRIDES),
                                        cosine=g in spec.cosine_heads) for g, n in enumerate(spec.class_groups))
        self.own_features = nn.ModuleDict({str(g): FeaturePyramid(spec) for g in spec.own_features})
        self.register_buffer("mean", torch.tensor(spec.mean).view(1, 3, 1, 1) * 255, persistent=False)
        self.register_buffer("std", torch.tensor(spec.std).view(1, 3, 1, 1) * 255, persistent=False)
        self.frozen: list[str] = []
        if spec.freeze_stages >= 0:
            for prefix, backbone in self.backbones():
                stem = [n for n, _ in backbone.named_children() if n in ("conv_stem", "bn1")]
                self.freeze(*[f"{prefix}.{n}" for n in stem],
                            *[f"{prefix}.blocks.{i}" for i in range(spec.freeze_stages)])

    def __setstate__(self, state):  # detectors pickled before heads could have features or scales of their own
        super().__setstate__(state)
        self._modules.setdefault("own_features", nn.ModuleDict())
        if not self.spec.feature_scales:
            self.spec.feature_scales = (1.0,) * len(self.spec.class_groups)

    def backbones(self) -> list[tuple[str, nn.Module]]:
        """(name, module) of the shared backbone and of every head's own."""
        return [("backbone", self.backbone)] + [(f"own_features.{g}.backbone", f.backbone)
                                                 for g, f in self.own_features.items()]

    # -- training-time helpers
    def freeze(self, *names: str):
        """Freeze submodules by name ('backbone', 'neck', 'heads.0', ...): no gradients, and in train mode they stay
        in eval mode, so their BatchNorm statistics do not drift either."""
        for name in names:  # eval() now too: Lightning restores recorded submodule modes without calling train()
            self.get_submodule(name).requires_grad_(False).eval()
            if name not in self.frozen:
                self.frozen.append(name)

    def train(self, mode: bool = True):
        super().train(mode)
        if mode:
            for name in self.frozen:
                self.get_submodule(name).eval()
            if self.spec.freeze_bn:
                for _, backbone in self.backbones():
                    for m in backbone.modules():
                        if isinstance(m, nn.modules.batchnorm._BatchNorm):
                            m.eval()
        return self

    # -- network
    def _head_levels(self, x: torch.Tensor, g: int, shared: list, scale: float):
        """Head g's raw outputs per level on normalised images x (upsampled by `scale` for a head with features of
        its own); `shared` caches the shared FPN levels."""
        if str(g) in self.own_features:
            if scale != 1.0:
                x = F.interpolate(x, scale_factor=scale, mode="bilinear", align_corners=False)
            return self.heads[g](self.own_features[str(g)](x))
        if not shared:
            shared.append(self.neck(self.backbone(x)))
        return self.heads[g](shared[0])

    def forward_raw(self, images: torch.Tensor, head: int | None = None, at_scale: bool = False):
        """images: B x 3 x H x W float RGB 0..255. Per-location cls logits (B,N,C), ltrb distances in pixels (B,N,4),
        centerness logits (B,N), and the locations (N,2) with their strides (N,). With several heads the locations
        of each head follow one another and a head's locations score only its own classes; `head` selects one head
        (C = its classes only; only the features it reads are computed). `at_scale`: the images are already at the
        heads' feature scales (training crops, atom.fewshot.zoom_crops): none is upsampled, pixels are theirs."""
        outs = self._raw_per_head(images, [head] if head is not None else range(len(self.heads)), at_scale)
        if len(outs) == 1:
            return outs[0]
        cls = [F.pad(o[0], self._others(g), value=NO_CLASS_LOGIT) for g, o in enumerate(outs)]
        return (torch.cat(cls, 1), torch.cat([o[1] for o in outs], 1), torch.cat([o[2] for o in outs], 1),
                torch.cat([o[3] for o in outs]), torch.cat([o[4] for o in outs]))

    def _raw_per_head(self, images: torch.Tensor, heads, at_scale: bool = False) -> list[tuple]:
        # Channels-last: oneDNN CPU convolutions ran 1.4-2x faster so (training and inference); ONNX ignores it.
        x, shared = ((images - self.mean) / self.std).contiguous(memory_format=torch.channels_last), []
        scales = (1.0,) * len(self.heads) if at_scale else self.spec.feature_scales
        return [self._decode(self._head_levels(x, g, shared, scales[g]), scales[g]) for g in heads]

    def _others(self, g: int) -> tuple[int, int]:
        """How many classes of other heads come before and after head g's (padding of its class dimension)."""
        groups = self.spec.class_groups
        return sum(groups[:g]), sum(groups[g + 1:])

    @staticmethod
    def _decode(levels, scale: float = 1.0):
        """Per location: logits, ltrb distances, centerness, location and stride, in input pixels (a head whose
        input was upsampled by `scale` has strides STRIDES / scale)."""
        cls, reg, ctr, points, strides = [], [], [], [], []
        for (c, r), stride in zip(levels, [s / scale if scale != 1.0 else s for s in STRIDES]):
            # Python ints: an exported graph holds the locations as constants (only the batch size varies).
            h, w = int(c.shape[-2]), int(c.shape[-1])
            cls.append(c.flatten(2).transpose(1, 2))
            r = r.flatten(2).transpose(1, 2)
            reg.append(F.softplus(r[..., :4]) * stride)
            ctr.append(r[..., 4])
            ys, xs = torch.meshgrid(torch.arange(h, device=c.device), torch.arange(w, device=c.device), indexing="ij")
            points.append(torch.stack([xs, ys], -1).reshape(-1, 2).float() * stride + stride / 2)
            strides.append(torch.full((h * w,), float(stride), device=c.device))
        return torch.cat(cls, 1), torch.cat(reg, 1), torch.cat(ctr, 1), torch.cat(points), torch.cat(strides)

    def forward(self, images: torch.Tensor):
        """Decoded outputs for every location: boxes (B,N,4) xyxy in input pixels, scores (B,N,C) in 0..1 (0 for
        another head's classes). Scores are computed per head, on tensors shaped as in a detector of that head alone:
        element-wise kernels round the last bit by memory layout, so a base head's scores inside a few-shot detector
        would otherwise differ from the base detector's in the 8th digit."""
        outs = self._raw_per_head(images, range(len(self.heads)))
        boxes, scores = [], []
        for g, (cls, reg, ctr, points, _) in enumerate(outs):
            boxes.append(torch.cat([points - reg[..., :2], points + reg[..., 2:]], -1))
            s = torch.sqrt(torch.sigmoid(cls) * torch.sigmoid(ctr).unsqueeze(-1))
            scores.append(F.pad(s, self._others(g)) if len(outs) > 1 else s)
        return torch.cat(boxes, 1), torch.cat(scores, 1)

    # -- inference
    def postprocess(self, boxes: torch.Tensor, scores: torch.Tensor, scales=None) -> list[dict]:
        return postprocess(boxes, scores, self.spec, scales)

    @torch.no_grad()
    def predict(self, images: torch.Tensor, scales=None) -> list[dict]:
        return self.postprocess(*self(images), scales)


def postprocess(boxes, scores, spec: DetectorSpec, scales=None) -> list[dict]:
    """Per image and class group (one per head): keep (location, class) pairs over score_thresh, the top
    PRE_NMS_TOP_K, class-wise NMS, the top max_detections. Caps per group keep a new head's detections from
    displacing the base classes'. `scales` (one per image) maps letterboxed coordinates back (divide)."""
    results = []
    starts = [sum(spec.class_groups[:g]) for g in range(len(spec.class_groups) + 1)]
    for i in range(boxes.shape[0]):
        parts = []
        for lo, hi in zip(starts[:-1], starts[1:]):
            s = scores[i, :, lo:hi]
            loc, cls = (s > spec.score_thresh).nonzero(as_tuple=True)
            b, sc, cls = boxes[i][loc], s[loc, cls], cls + lo
            if sc.numel() > PRE_NMS_TOP_K:
                top = sc.topk(PRE_NMS_TOP_K).indices
                b, sc, cls = b[top], sc[top], cls[top]
            keep = batched_nms(b, sc, cls, spec.nms_iou)[: spec.max_detections]
            parts.append((b[keep], sc[keep], cls[keep]))
        b, sc, cls = (torch.cat(t) for t in zip(*parts))
        b = b / (scales[i] if scales is not None else 1.0)
        results.append({"boxes": b, "scores": sc, "labels": cls})
    return results
