"""MLflow tracking and the model registry: where runs go, how a model version is registered and found.

Embedded default: `sqlite:///<output_dir>/mlflow.db` with artifacts under `<output_dir>/mlartifacts`;
`MLFLOW_TRACKING_URI` switches to a server. A model version carries its lineage as tags (dataset name,
version and fingerprint, git commit, config); its files are the `atom` flavour (atom/flavor.py: safetensors
weights + spec JSON, and the verified bundle that the python_function flavour serves).
"""

from __future__ import annotations

import json
import os
import subprocess
from dataclasses import dataclass
from pathlib import Path

from atom import PROJECT_ROOT
from atom.errors import RegistryError

os.environ.setdefault("MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR", "false")

def tracking_uri(output_dir: Path | str) -> str:
    return os.environ.get("MLFLOW_TRACKING_URI") or f"sqlite:///{Path(output_dir).resolve()}/mlflow.db"


def artifact_location(output_dir: Path | str, uri: str) -> str | None:
    """Artifacts beside the embedded store; a server decides for itself."""
    return (Path(output_dir).resolve() / "mlartifacts").as_uri() if uri.startswith("sqlite:") else None


def configure(output_dir: Path | str) -> str:
    import mlflow

    Path(output_dir).mkdir(parents=True, exist_ok=True)
    uri = tracking_uri(output_dir)
    mlflow.set_tracking_uri(uri)
    mlflow.set_registry_uri(uri)
    return uri


def ensure_experiment(name: str, output_dir: Path | str) -> str:
    import mlflow

    uri = configure(output_dir)
    exp = mlflow.get_experiment_by_name(name)
    if exp is not None:
        return exp.experiment_id
    return mlflow.create_experiment(name, artifact_location=artifact_location(output_dir, uri))


def git_commit() -> str:
    try:
        out = subprocess.run(["git", "rev-parse", "HEAD"], cwd=PROJECT_ROOT, capture_output=True, text=True, timeout=5)
        # The benchmarks' history files change with every benchmark run; they are not code.
        dirty = subprocess.run(["git", "status", "--porcelain", "--untracked-files=no", "--", ".",
                                ":(exclude)benchmarks/results"], cwd=PROJECT_ROOT,
                               capture_output=True, text=True, timeout=5).stdout.strip()
        return out.stdout.strip() + ("-dirty" if dirty else "") if out.returncode == 0 else "unknown"
    except (OSError, subprocess.TimeoutExpired):
        return "unknown"


def lineage_tags(version) -> dict[str, str]:
    """Tags that tie a run or model version to its data (and, for a DVC-tracked version, where to restore it
    from: atom/data/remote.py) and code."""
    from atom.data import remote

    feedback = version.card.get("provenance", {}).get("feedback_batches")
    return {"dataset.name": version.name, "dataset.version": version.card["version"],
            "dataset.fingerprint": version.fingerprint, **remote.lineage(version), "git.commit": git_commit(),
            **({"dataset.feedback_batches": ",".join(feedback)} if feedback else {})}


@dataclass(frozen=True)
class ModelRef:
    name: str
    version: str
    run_id: str
    tags: dict
    model_id: str | None = None  # the logged model holding its files (MLflow 3)

    @property
    def uri(self) -> str:
        return f"models:/{self.name}/{self.version}"


def register_detector(detector, run_id: str, name: str, tags: dict[str, str], alias: str | None) -> ModelRef:
    """Log the detector to the run, register it as a new version of `name`, tag it with its lineage."""
    return register_logged(log_detector(detector, run_id), run_id, name, tags, alias)


def log_detector(detector, run_id: str) -> str:
    """Log the detector to the run (the `atom` flavour) without registering it; returns its models:/ URI."""
    import mlflow
    from mlflow.models import Model

    from atom import flavor

    with mlflow.start_run(run_id=run_id):
        return Model.log(artifact_path=None, name="detector", flavor=flavor, detector=detector).model_uri


def register_logged(model_uri: str, run_id: str, name: str, tags: dict[str, str], alias: str | None) -> ModelRef:
    """Register a logged detector (log_detector's URI) as a new version of `name`, tagged with its lineage."""
    import mlflow
    from mlflow import MlflowClient

    mv = mlflow.register_model(model_uri, name, tags=tags)
    if alias:
        MlflowClient().set_registered_model_alias(name, alias, mv.version)
    return ModelRef(name, str(mv.version), run_id, dict(tags), _model_id(mv))


def find_by_bundle(sha256: str) -> ModelRef:
    """The registered version one of whose exported bundles holds a file with this sha256 (the `bundle_files.FORMAT`
    tags that exporters/bundle.py log_bundle sets)."""
    from mlflow import MlflowClient

    client = MlflowClient()
    for mv in client.search_model_versions():
        for key, value in (mv.tags or {}).items():
            if key.startswith("bundle_files.") and sha256 in json.loads(value).values():
                return ModelRef(mv.name, str(mv.version), mv.run_id, dict(mv.tags), _model_id(mv))
    raise RegistryError(f"no registered model version has a bundle file with sha256 {sha256} in the registry at "
                        f"{client.tracking_uri}")


def resolve_model(ref: str) -> ModelRef:
    """'name@alias', 'name/version', 'name@latest', or the path of a model_version.json that `atom train` wrote
    (a pin: pipelines name the version a stage produced, not an alias a later run may move) -> a registered model
    version."""
    from mlflow import MlflowClient
    from mlflow.exceptions import MlflowException

    if ref.endswith(".json"):
        try:
            pinned = json.loads(Path(ref).read_text())
            ref = f"{pinned['name']}/{pinned['version']}"
        except (OSError, ValueError, KeyError, TypeError) as e:
            raise RegistryError(f"{ref}: not a model_version.json pin ({e})") from None
    client = MlflowClient()
    try:
        if "@" in ref:
            name, alias = ref.split("@", 1)
            if alias.lower() == "latest":
                mv = max(client.search_model_versions(f"name='{name}'"), key=lambda v: int(v.version), default=None)
                if mv is None:
                    raise MlflowException(f"registered model {name!r} has no versions")
            else:
                mv = client.get_model_version_by_alias(name, alias)
        elif "/" in ref:
            name, version = ref.rsplit("/", 1)
            mv = client.get_model_version(name, version)
        else:
            raise RegistryError(f"model reference {ref!r}: expected NAME@ALIAS or NAME/VERSION")
    except MlflowException as e:
        raise RegistryError(f"model {ref!r} not found in the registry at {client.tracking_uri}: {e.message}") from None
    return ModelRef(mv.name, str(mv.version), mv.run_id, dict(mv.tags), _model_id(mv))


def _model_id(mv) -> str | None:
    """The logged model behind a version: its model_id, which registries without it state in the source URI."""
    if mv.model_id:
        return mv.model_id
    return mv.source.split("/")[1] if mv.source and mv.source.startswith("models:/m-") else None


def training_split(ref: ModelRef) -> str:
    """The split of its dataset version a registered model was trained on (its run's data.train_split)."""
    from mlflow import MlflowClient

    return MlflowClient().get_run(ref.run_id).data.params.get("data.train_split", "train")


def load_detector(ref: ModelRef):
    """The registered version's Detector, read from safetensors + spec (old pickled versions: see atom/flavor.py)."""
    import tempfile

    import mlflow.artifacts

    from atom import flavor

    with tempfile.TemporaryDirectory(prefix="atom-model-") as tmp:
        path = mlflow.artifacts.download_artifacts(artifact_uri=ref.uri, dst_path=tmp)
        return flavor.load(path, ref.uri)
