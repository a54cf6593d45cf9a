"""The embedded sample: a small, deterministic, synthetic street-scene dataset drawn by code.

It is written as a Label Studio JSON export (percent coordinates, original_width/height) so that the demo goes
through the real import path. Nothing here is a photograph; it only exercises the pipeline end to end.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw, ImageFilter

CLASSES = ["car", "bus", "pedestrian"]
SIZE = (320, 240)


def _draw_car(d: ImageDraw.ImageDraw, rng, x, y, s):
    w, h = int(60 * s), int(28 * s)
    body = tuple(int(c) for c in rng.integers(30, 230, 3))
    d.rounded_rectangle([x, y + h * 0.35, x + w, y + h], radius=max(2, int(5 * s)), fill=body)
    d.polygon([(x + w * 0.2, y + h * 0.35), (x + w * 0.32, y), (x + w * 0.7, y), (x + w * 0.82, y + h * 0.35)], fill=body)
    d.polygon([(x + w * 0.28, y + h * 0.33), (x + w * 0.36, y + h * 0.08), (x + w * 0.66, y + h * 0.08),
               (x + w * 0.74, y + h * 0.33)], fill=(170, 210, 235))
    r = max(3, int(7 * s))
    for cx in (x + w * 0.22, x + w * 0.78):
        d.ellipse([cx - r, y + h - r, cx + r, y + h + r], fill=(20, 20, 20))
    return [x, y, x + w, y + h + r]


def _draw_bus(d, rng, x, y, s):
    w, h = int(110 * s), int(45 * s)
    body = [(230, 180, 20), (200, 40, 40), (40, 90, 190)][int(rng.integers(3))]
    d.rectangle([x, y, x + w, y + h], fill=body)
    for i in range(5):
        wx = x + w * (0.06 + i * 0.18)
        d.rectangle([wx, y + h * 0.12, wx + w * 0.13, y + h * 0.5], fill=(150, 200, 230))
    r = max(3, int(8 * s))
    for cx in (x + w * 0.15, x + w * 0.85):
        d.ellipse([cx - r, y + h - r, cx + r, y + h + r], fill=(20, 20, 20))
    return [x, y, x + w, y + h + r]


def _draw_pedestrian(d, rng, x, y, s):
    w, h = int(14 * s), int(44 * s)
    shirt = tuple(int(c) for c in rng.integers(30, 230, 3))
    hr = w * 0.35
    d.ellipse([x + w / 2 - hr, y, x + w / 2 + hr, y + 2 * hr], fill=(224, 180, 140))
    d.rectangle([x, y + 2 * hr, x + w, y + h * 0.6], fill=shirt)
    d.rectangle([x + w * 0.1, y + h * 0.6, x + w * 0.45, y + h], fill=(40, 40, 70))
    d.rectangle([x + w * 0.55, y + h * 0.6, x + w * 0.9, y + h], fill=(40, 40, 70))
    return [x, y, x + w, y + h]


DRAW = {"car": _draw_car, "bus": _draw_bus, "pedestrian": _draw_pedestrian}


def _scene(rng) -> tuple[Image.Image, list[tuple[str, list[float]]]]:
    W, H = SIZE
    horizon = int(rng.integers(70, 110))
    arr = np.zeros((H, W, 3), np.float32)
    sky = np.array(rng.integers(120, 220, 3), np.float32)
    arr[:horizon] = sky * np.linspace(0.8, 1.1, horizon)[:, None, None]
    arr[horizon:] = np.array(rng.integers(70, 120)) + rng.normal(0, 6, (H - horizon, W, 1))
    img = Image.fromarray(arr.clip(0, 255).astype(np.uint8))
    d = ImageDraw.Draw(img)
    for k in range(0, W, 40):  # lane markings
        d.rectangle([k + 10, H - 50, k + 30, H - 46], fill=(235, 235, 235))
    objects = []
    for _ in range(int(rng.integers(1, 5))):
        label = CLASSES[int(rng.choice(3, p=[0.5, 0.2, 0.3]))]
        s = float(rng.uniform(0.6, 1.5))
        x = int(rng.integers(0, W - 40))
        y = int(rng.integers(horizon - 30, H - 50))
        box = DRAW[label](d, rng, x, y, s)
        objects.append((label, box))
    img = img.filter(ImageFilter.GaussianBlur(0.6))
    return img, objects


def make_sample(out_dir: Path, n_images: int = 240, seed: int = 0) -> Path:
    """Write images/ and a Label Studio JSON export (tasks.json) to out_dir; returns the export's path."""
    out_dir = Path(out_dir)
    (out_dir / "images").mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    W, H = SIZE
    tasks = []
    for i in range(n_images):
        img, objects = _scene(rng)
        name = f"scene_{i:04d}.jpg"
        img.save(out_dir / "images" / name, quality=90)
        result = []
        for j, (label, (x0, y0, x1, y1)) in enumerate(objects):
            x0, y0, x1, y1 = max(x0, 0), max(y0, 0), min(x1, W), min(y1, H)
            if x1 - x0 < 2 or y1 - y0 < 2:
                continue
            result.append({
                "id": f"r{i}_{j}", "type": "rectanglelabels", "from_name": "label", "to_name": "image",
                "original_width": W, "original_height": H, "image_rotation": 0,
                "value": {"x": 100 * x0 / W, "y": 100 * y0 / H, "width": 100 * (x1 - x0) / W,
                          "height": 100 * (y1 - y0) / H, "rotation": 0, "rectanglelabels": [label]},
            })
        tasks.append({"id": i + 1, "data": {"image": f"/data/local-files/?d=images/{name}"},
                      "annotations": [{"id": i + 1, "was_cancelled": False, "result": result,
                                       "created_at": "2026-01-01T00:00:00Z", "updated_at": "2026-01-01T00:00:00Z"}]})
    export = out_dir / "tasks.json"
    export.write_text(json.dumps(tasks, indent=1))
    return export
