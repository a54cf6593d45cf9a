"""What serving teams do with registered detectors (`atom models list | show | promote | pull`): see them with
their lineage and held-out metrics, move an alias to a version only when it is verified and no worse, and fetch a
version's bundle whole and unaltered."""

from __future__ import annotations

import shutil
import tempfile
from pathlib import Path

from atom.errors import RegistryError
from atom.runtime.bundle import BundleError, read_manifest
from atom.tracking import ModelRef, resolve_model

HELD_OUT = ".mAP50"  # tag suffix of the held-out mAP50 that train and adapt record (test.mAP50, val_test.mAP50)


def _client():
    from mlflow import MlflowClient

    return MlflowClient()


def describe(mv, aliases: list[str]) -> dict:
    """One registered version as a flat dict: what `list` and `show` print."""
    tags = dict(mv.tags)
    return {
        "name": mv.name, "version": str(mv.version), "aliases": aliases,
        "metrics": {k: float(v) for k, v in tags.items() if k.rsplit(".", 1)[-1] in ("mAP50", "mAP50_95", "nAP50",
                                                                                     "bAP50")},
        "dataset": {k.split(".", 1)[1]: v for k, v in tags.items() if k.startswith("dataset.")},
        "base_model": tags.get("base.model"),
        "bundles": sorted(k.split(".", 1)[1] for k in tags if k.startswith("bundle.")),
        "git_commit": tags.get("git.commit"), "run_id": mv.run_id,
    }


def list_versions(name: str | None = None) -> list[dict]:
    """Every version of every registered model (or of `name`), newest first within a model."""
    client = _client()
    rows = []
    for model in client.search_registered_models(f"name='{name}'" if name else None):
        by_version: dict[str, list[str]] = {}
        for alias, version in (model.aliases or {}).items():
            by_version.setdefault(str(version), []).append(alias)
        versions = client.search_model_versions(f"name='{model.name}'")
        for mv in sorted(versions, key=lambda v: -int(v.version)):
            rows.append(describe(mv, sorted(by_version.get(str(mv.version), []))))
    if name and not rows:
        raise RegistryError(f"no registered model named {name!r} at {client.tracking_uri}")
    return rows


def show(ref: str) -> dict:
    model = resolve_model(ref)
    client = _client()
    aliases = client.get_registered_model(model.name).aliases or {}
    return describe(client.get_model_version(model.name, model.version),
                    sorted(a for a, v in aliases.items() if str(v) == model.version))


def held_out(row: dict) -> tuple[str, float] | None:
    """(metric tag, value) of a version's held-out mAP50, if it was evaluated."""
    return next(((k, v) for k, v in sorted(row["metrics"].items()) if k.endswith(HELD_OUT)), None)


def promote(name: str, version: str, alias: str, force: bool = False) -> str:
    """Point `alias` at NAME/VERSION. Refused (unless force) when the version has no verified bundle, or when its
    held-out mAP50 is below the current holder's on the same dataset and split, or the two cannot be compared.
    Returns what was done, in a line."""
    candidate = show(f"{name}/{version}")
    problems = []
    if "onnx" not in candidate["bundles"]:
        problems.append(f"{name}/{version} has no verified bundle (run: atom export model={name}/{version})")
    try:
        holder = show(f"{name}@{alias}")
    except RegistryError:
        holder = None
    if holder and holder["version"] != candidate["version"]:
        mine, theirs = held_out(candidate), held_out(holder)
        same_data = candidate["dataset"].get("fingerprint") == holder["dataset"].get("fingerprint")
        if not (mine and theirs and mine[0] == theirs[0] and same_data):
            problems.append(f"its held-out mAP50 cannot be compared with {name}/{holder['version']}'s (the current "
                            f"{alias}): {mine} on dataset {candidate['dataset'].get('fingerprint', '?')[:12]} vs "
                            f"{theirs} on {holder['dataset'].get('fingerprint', '?')[:12]}")
        elif mine[1] < theirs[1]:
            problems.append(f"its held-out {mine[0]} {mine[1]:.4f} is below {name}/{holder['version']}'s "
                            f"{theirs[1]:.4f} (the current {alias})")
    if problems and not force:
        raise RegistryError(f"not promoting {name}/{version} to {alias}: " + "; ".join(problems)
                            + " (--force promotes anyway)")
    _client().set_registered_model_alias(name, alias, candidate["version"])
    was = f" (was version {holder['version']})" if holder else ""
    forced = f"; forced past: {'; '.join(problems)}" if problems else ""
    return f"{name}@{alias} -> version {candidate['version']}{was}{forced}"


def pull(ref: str, format_name: str, to: Path | str) -> Path:
    """Download the version's bundle of `format_name` into `to`/, checking every file against the manifest's
    sha256. `to` is written only when the whole bundle checks out; an existing `to` is left as it was on failure."""
    import mlflow.artifacts
    from mlflow.exceptions import MlflowException

    model: ModelRef = resolve_model(ref)
    uri = model.tags.get(f"bundle.{format_name}")
    if not uri:
        have = sorted(k.split(".", 1)[1] for k in model.tags if k.startswith("bundle."))
        raise RegistryError(f"{model.uri} ({ref}) has no {format_name!r} bundle; it has {have or 'none'} "
                            f"(make one: atom export model={model.name}/{model.version} export={format_name})")
    to = Path(to)
    if to.exists() and not (to / "manifest.json").is_file():
        raise RegistryError(f"{to} exists and is not a bundle; pull into a new folder (it is replaced only when "
                            "it holds a bundle)")
    to.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix=f".pull-{to.name}-", dir=to.parent) as tmp:
        try:
            local = Path(mlflow.artifacts.download_artifacts(artifact_uri=uri, dst_path=tmp))
        except (MlflowException, OSError) as e:
            raise RegistryError(f"{model.uri}: cannot download its bundle {uri}: {e}") from None
        check_bundle(local, f"{model.uri} {format_name} bundle ({uri})")
        staged = Path(tmp) / "staged"
        local.rename(staged)
        if to.exists():
            shutil.rmtree(to)
        staged.rename(to)
    return to


def check_bundle(folder: Path, what: str) -> dict:
    """A downloaded bundle must hold exactly the files its manifest lists, each with its sha256."""
    try:
        manifest = read_manifest(folder, check_files=True)
    except BundleError as e:
        raise RegistryError(f"{what}: refused: {e}") from None
    extra = sorted(p.name for p in folder.iterdir() if p.name not in manifest.get("files", {}) and
                   p.name != "manifest.json")
    if extra:
        raise RegistryError(f"{what}: refused: files not in the manifest: {extra}")
    return manifest
