"""ATOM: an algorithm production platform for city-scene detectors.

Kept import-free so that `atom --help` starts fast; heavy libraries load inside the commands that use them.
"""

from pathlib import Path

__version__ = "0.1.0"

# The project folder of this checkout: configs (conf/), dataset versions (datasets/) and outputs live under it.
PROJECT_ROOT = Path(__file__).resolve().parent.parent
