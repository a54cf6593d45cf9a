"""How many faces the redaction finds (atom/privacy.py, CenterFace at its default threshold and below).

Labeled faces we can use here, none downloaded:
  portraits   two photographs shipped in our dependencies, face boxes labeled by hand for this benchmark:
              NASA's portrait of Eileen Collins (scikit-image `data.astronaut()`, public domain) and Grace Hopper
              (matplotlib's sample_data/grace_hopper.jpg, public domain, US Navy)
  pasted      faces pasted into ../shared's street test frames at the sizes a city camera sees them (12-64 px
              wide), 5 per frame: the two portraits' heads (colour, with hair and outline) and scikit-image's LFW
              subset (100 tight grey 25 px face crops: no hair, no outline: harder than a real head)
A face counts as found when a detection overlaps it (IoU >= 0.3), and as obscured when the redacted region (the
detection grown by the policy's margin) covers >= 80 % of it. Also: detections on the street frames as they are
(their people are small and often turned away; unlabeled: possible real faces or false alarms).

    .venv/bin/python benchmarks/privacy.py
Rows go to benchmarks/results/privacy.jsonl. Asserts nothing.
"""

from __future__ import annotations

import argparse
import random
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from benchmarks import history, shared  # noqa: E402

PORTRAIT_FACES = {"astronaut": [180, 68, 272, 176], "grace_hopper": [168, 148, 358, 335]}  # labeled by hand


def portraits():
    import matplotlib.cbook
    from PIL import Image
    from skimage import data

    with matplotlib.cbook.get_sample_data("grace_hopper.jpg") as f:
        hopper = Image.open(f).convert("RGB")
    return {"astronaut": Image.fromarray(data.astronaut()), "grace_hopper": hopper}


def iou(a, b) -> float:
    ix, iy = max(0, min(a[2], b[2]) - max(a[0], b[0])), max(0, min(a[3], b[3]) - max(a[1], b[1]))
    inter = ix * iy
    return inter / ((a[2] - a[0]) * (a[3] - a[1]) + (b[2] - b[0]) * (b[3] - b[1]) - inter)


def covered(face, detections, margin: float) -> float:
    """Share of the face box inside the union of the grown detections (on a pixel mask)."""
    import numpy as np

    x0, y0, x1, y1 = (int(round(v)) for v in face)
    mask = np.zeros((y1 - y0, x1 - x0), bool)
    for (a0, b0, a1, b1), _ in detections:
        mw, mh = (a1 - a0) * margin, (b1 - b0) * margin
        mask[max(0, int(b0 - mh) - y0):max(0, int(b1 + mh) - y0), max(0, int(a0 - mw) - x0):max(0, int(a1 + mw) - x0)] = True
    return float(mask.mean()) if mask.size else 0.0


def faces_to_paste(portrait_images):
    """(kind, RGB face image whose full extent is the face box) to paste: portrait heads and LFW crops."""
    import numpy as np
    from PIL import Image
    from skimage import data

    heads = []
    for name, image in portrait_images.items():
        x0, y0, x1, y1 = PORTRAIT_FACES[name]
        heads.append(("portrait", image.crop((x0, y0, x1, y1))))
    lfw = data.lfw_subset()[:100]  # the first 100 are faces
    crops = [("lfw", Image.fromarray((np.stack([f] * 3, -1) * 255).astype(np.uint8))) for f in lfw]
    return heads, crops


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--sizes", type=int, nargs="+", default=[12, 16, 24, 32, 48, 64])
    ap.add_argument("--thresholds", type=float, nargs="+", default=[0.2, 0.1])
    args = ap.parse_args()

    from PIL import Image

    from atom.privacy import PrivacyPolicy, detect_faces

    margin = PrivacyPolicy().margin
    images = portraits()
    for threshold in args.thresholds:
        for name, image in images.items():
            found = detect_faces(image, threshold)
            face = PORTRAIT_FACES[name]
            numbers = {"found": int(any(iou(face, b) >= 0.3 for b, _ in found)),
                       "obscured": int(covered(face, found, margin) >= 0.8), "detections": len(found)}
            print(f"portrait {name:13s} threshold {threshold}: {numbers}")
            history.record("privacy", {"set": "portrait", "image": name, "threshold": threshold}, numbers)
    if not shared.available("street"):
        print(f"pasted: skipped ({shared.SHARED / 'street'} not found)")
        return 0
    frames = sorted((shared.SHARED / "street" / "test" / "images").glob("*"))
    heads, crops = faces_to_paste(images)
    for threshold in args.thresholds:
        as_is = sum(len(detect_faces(Image.open(f).convert("RGB"), threshold)) for f in frames)
        print(f"street test frames as they are, threshold {threshold}: {as_is} detections on {len(frames)} frames")
        history.record("privacy", {"set": "street-as-is", "threshold": threshold},
                       {"frames": len(frames), "detections": as_is})
        for kind, pool in (("portrait", heads), ("lfw", crops)):
            for size in args.sizes:
                rng = random.Random(size)
                total = found = obscured = 0
                for f in frames:
                    frame = Image.open(f).convert("RGB")
                    boxes = []
                    for _ in range(5):
                        _, face = pool[rng.randrange(len(pool))]
                        w, h = size, max(1, round(size * face.height / face.width))
                        for _ in range(50):  # a free spot
                            x, y = rng.randrange(0, frame.width - w), rng.randrange(0, frame.height - h)
                            if all(iou([x, y, x + w, y + h], b) == 0 for b in boxes):
                                break
                        frame.paste(face.resize((w, h), Image.BICUBIC), (x, y))
                        boxes.append([x, y, x + w, y + h])
                    detections = detect_faces(frame, threshold)
                    for box in boxes:
                        total += 1
                        found += any(iou(box, b) >= 0.3 for b, _ in detections)
                        obscured += covered(box, detections, margin) >= 0.8
                numbers = {"faces": total, "found": found, "recall": round(found / total, 3),
                           "obscured": obscured, "obscured_share": round(obscured / total, 3)}
                print(f"pasted {kind:8s} {size:3d} px threshold {threshold}: recall {numbers['recall']:.2f}, "
                      f"obscured {numbers['obscured_share']:.2f} ({total} faces)", flush=True)
                history.record("privacy", {"set": f"pasted-{kind}", "size_px": size, "threshold": threshold},
                               numbers)
    return 0


if __name__ == "__main__":
    sys.exit(main())
