"""The real datasets in ../shared/datasets that benchmarks read in place: their source format, imported once into a
dataset version under the benchmark's output folder (the same content gives the same version)."""

from __future__ import annotations

from pathlib import Path

from atom import PROJECT_ROOT

SHARED = PROJECT_ROOT.parent / "shared" / "datasets"
FORMATS = {"vehicles": "yolo", "bccd": "voc", "street": "yolo"}


def available(name: str) -> bool:
    return (SHARED / name).exists()


def import_shared(name: str, datasets_dir: Path):
    """The dataset version of ../shared/datasets/<name> in datasets_dir (written on first use)."""
    from atom.data.formats import read_source
    from atom.data.version import write_version

    version, _ = write_version(read_source(FORMATS[name], SHARED / name), Path(datasets_dir), name)
    return version
