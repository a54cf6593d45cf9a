"""Training augmentation policies by name (bbox-safe albumentations pipelines). Every policy ends in the
detector's letterbox (longest side to `size`, pad bottom/right), so train and inference geometry agree."""

from __future__ import annotations

import albumentations as A
import cv2

from atom.errors import ConfigError


def _letterbox(size: int) -> list:
    return [A.LongestMaxSize(max_size=size, interpolation=cv2.INTER_LINEAR),
            A.PadIfNeeded(size, size, position="top_left", border_mode=cv2.BORDER_CONSTANT, fill=0)]


def _photometric() -> list:
    return [A.RandomBrightnessContrast(0.2, 0.2, p=0.5), A.HueSaturationValue(10, 20, 15, p=0.5)]


def _none(size):
    return _letterbox(size)


def _flip(size):
    return [A.HorizontalFlip(p=0.5), *_letterbox(size)]


def _light(size):
    return [A.HorizontalFlip(p=0.5), *_photometric(),
            A.Affine(scale=(0.75, 1.25), translate_percent=(-0.1, 0.1), border_mode=cv2.BORDER_CONSTANT, p=0.5),
            *_letterbox(size)]


def _strong(size):
    return [A.HorizontalFlip(p=0.5), *_photometric(),
            A.RandomSizedBBoxSafeCrop(size, size, erosion_rate=0.0, p=0.3),
            A.Affine(scale=(0.5, 1.5), translate_percent=(-0.2, 0.2), border_mode=cv2.BORDER_CONSTANT, p=0.7),
            A.OneOf([A.MotionBlur(blur_limit=5), A.GaussianBlur(blur_limit=(3, 5)), A.GaussNoise()], p=0.2),
            *_letterbox(size)]


POLICIES = {"none": _none, "flip": _flip, "light": _light, "strong": _strong}


def build_policy(name: str, size: int) -> A.Compose:
    if name not in POLICIES:
        raise ConfigError(f"unknown augmentation policy {name!r}; choose one of {sorted(POLICIES)}")
    return A.Compose(POLICIES[name](size), bbox_params=A.BboxParams(
        format="pascal_voc", label_fields=["labels"], min_visibility=0.3, min_width=2, min_height=2, clip=True))
