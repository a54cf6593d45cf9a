"""The MLflow flavour of a registered detector (`mlflow.models.Model.log(flavor=atom.flavor, detector=...)`).

    detector/                    the logged model of a registered version
        MLmodel                  flavours: `atom` (what ATOM's recipes read) and `python_function` (what serving reads)
        weights.safetensors      atom.models.storage: weights + DetectorSpec JSON; reading them never unpickles
        spec.json
        bundles/FORMAT/          the verified bundles, added by `atom export` (exporters/bundle.py log_bundle); the
                                 python_function flavour runs bundles/onnx with atom.runtime (numpy + ONNX
                                 Runtime), so `mlflow.pyfunc.load_model("models:/NAME@production")` needs no
                                 training packages

Versions registered before this format hold a pickled nn.Module (the mlflow.pytorch flavour). Loading one executes
code from the registry, so it happens only behind ATOM_ALLOW_PICKLE=1, with a warning.
"""

from __future__ import annotations

import os
import warnings
from pathlib import Path

import atom
from atom.errors import RegistryError
from atom.models import storage

FLAVOR = "atom"
BUNDLE = "bundles/onnx"  # the python_function flavour's data: the served bundle's folder inside the logged model
ALLOW_PICKLE = "ATOM_ALLOW_PICKLE"


def save_model(path: str, mlflow_model, detector) -> None:
    """Called by mlflow.models.Model.log: write the detector and the MLmodel file into `path`."""
    import mlflow.pyfunc

    storage.save(detector, path)
    mlflow_model.add_flavor(FLAVOR, format=storage.FORMAT, weights=storage.WEIGHTS, spec=storage.SPEC,
                            atom_version=atom.__version__)
    mlflow.pyfunc.add_to_model(mlflow_model, loader_module="atom.runtime.pyfunc", data=BUNDLE)
    mlflow_model.save(str(Path(path) / "MLmodel"))


def load(path: Path | str, uri: str):
    """The Detector in a downloaded logged model. `uri` names it in messages."""
    from mlflow.models import Model

    path = Path(path)
    flavors = Model.load(str(path / "MLmodel")).flavors
    if FLAVOR in flavors:
        try:
            return storage.load(path)
        except ValueError as e:
            raise RegistryError(f"model {uri}: {e}") from None
    if "pytorch" in flavors:
        if os.environ.get(ALLOW_PICKLE) != "1":
            raise RegistryError(
                f"model {uri} is stored in the old pickle format: loading it would run code from the registry. "
                f"If you trust the registry, set {ALLOW_PICKLE}=1 to load it (then register it again to store it "
                f"as safetensors)")
        import mlflow.pytorch

        warnings.warn(f"{uri}: loading a pickled model ({ALLOW_PICKLE}=1); this executes code from the registry",
                      stacklevel=2)
        return mlflow.pytorch.load_model(str(path), map_location="cpu").eval()
    raise RegistryError(f"model {uri} is not an ATOM detector (flavours: {sorted(flavors)})")
