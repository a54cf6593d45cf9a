"""A dataset version written out of the trusted zone: `atom data export NAME@VERSION --out DIR`.

    DIR/annotations/<split>.json   COCO, as in the version (each image's sha256: the exported file's)
    DIR/images/<split>/<file>      the images, faces (and plates) redacted unless --no-redact
    DIR/card.json                  the version's card + "exported": when, how many images, and the redaction
                                   policy (atom/privacy.py: what, which model, which threshold) or "none"

Versions themselves stay unredacted (training and evaluation run inside the zone). The export is written to a
temporary folder and renamed into place: whole or absent; an existing DIR is never overwritten.
"""

from __future__ import annotations

import json
import shutil
import tempfile
from datetime import datetime, timezone
from pathlib import Path

from atom.checksums import sha256_file
from atom.data.version import DatasetError, DatasetVersion


def export_version(version: DatasetVersion, out: Path, redactor=None) -> dict:
    from PIL import Image

    out = Path(out)
    if out.exists() and any(out.iterdir()):
        raise DatasetError(f"{out}: exists and is not empty; export into a new folder")
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{out.name}-", dir=out.parent))
    images = redacted = 0
    try:
        for split in version.card["splits"]:
            if not version.has_split(split):
                continue
            coco = version.coco(split)
            for info in coco["images"]:
                src, dst = version.root / info["file_name"], tmp / info["file_name"]
                dst.parent.mkdir(parents=True, exist_ok=True)
                if redactor is None:
                    shutil.copyfile(src, dst)
                else:
                    with Image.open(src) as image:
                        clean, found = redactor(image)
                    clean.save(dst, quality=95)  # quality is read by the JPEG writer only
                    redacted += len(found)
                if "sha256" in info:  # the file as exported: a redacted image is not the version's
                    info["sha256"] = sha256_file(dst)
                images += 1
            (tmp / "annotations").mkdir(exist_ok=True)
            (tmp / "annotations" / f"{split}.json").write_text(json.dumps(coco))
        card = {**version.card, "exported": {
            "at": datetime.now(timezone.utc).isoformat(timespec="seconds"), "images": images,
            "redacted_boxes": redacted,
            "redaction": redactor.policy.describe() if redactor is not None else
            "none: exported with --no-redact (for use inside the trusted zone)"}}
        (tmp / "card.json").write_text(json.dumps(card, indent=1))
        if out.exists():
            out.rmdir()
        tmp.rename(out)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return card
