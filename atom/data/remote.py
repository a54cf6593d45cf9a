"""Dataset versions under DVC: tracked when written, pushed to a remote, pulled back on another machine.

    datasets/<name>/<version>.dvc     one DVC file per version (committed to git); the folder itself is ignored

One file per version rather than one per dataset: a version never changes, so its .dvc file never changes once
committed; a new version adds a file instead of rehashing and rewriting a manifest of every version; and
`atom data pull NAME@VERSION` fetches that version only. A registered model's lineage tags carry the version's DVC
hash and remote (`lineage`), so its training data can be restored even in a checkout that lacks the .dvc file.

Tracking happens where the datasets folder lies inside a DVC repository (the project's own `datasets/`); elsewhere
(a scratch folder) versions are written untracked and that is logged. DVC runs as its own command line, the
interface it keeps stable.
"""

from __future__ import annotations

import logging
import os
import shutil
import subprocess
import sys
from pathlib import Path

import yaml

from atom.checksums import sha256_file
from atom.data.version import DatasetError, DatasetVersion, open_version

log = logging.getLogger(__name__)


class RemoteError(DatasetError):
    """DVC could not track, push or pull a dataset version; the message says which and why."""


def dvc_root(path: Path) -> Path | None:
    """The DVC repository that contains `path` (its folder holding `.dvc/`), or None."""
    path = Path(path).resolve()
    for folder in (path, *path.parents):
        if (folder / ".dvc").is_dir():
            return folder
    return None


def dvc_file(version: DatasetVersion) -> Path:
    return version.root.parent / f"{version.root.name}.dvc"


def _dvc(root: Path, *args: str, what: str, check: bool = True) -> str:
    env = {**os.environ, "DVC_NO_ANALYTICS": "1"}
    done = subprocess.run([sys.executable, "-m", "dvc", *args], cwd=root, capture_output=True, text=True, env=env)
    if done.returncode != 0 and not check:
        return ""
    if done.returncode != 0:
        detail = (done.stderr.strip() or done.stdout.strip()).splitlines()
        raise RemoteError(f"{what}: `dvc {' '.join(args)}` failed in {root}: {' / '.join(detail[-3:])}")
    return done.stdout


def track(version: DatasetVersion) -> Path | None:
    """Track a version with DVC (writes <version>.dvc beside it, and the dataset's .gitignore). Returns the .dvc
    file, or None where the datasets folder is not inside a DVC repository."""
    version = DatasetVersion(version.root.resolve())
    root = dvc_root(version.root.parent)
    if root is None:
        log.debug("%s is not inside a DVC repository: version not tracked by DVC", version.root)
        return None
    target = dvc_file(version)
    if not target.exists():
        _dvc(root, "add", "--quiet", str(version.root.relative_to(root)), what=f"tracking {version.root}")
    return target


def tracked_hash(version: DatasetVersion) -> str | None:
    """The DVC hash of a tracked version's folder (its .dvc file's md5), or None."""
    path = dvc_file(version)
    if not path.exists():
        return None
    return yaml.safe_load(path.read_text())["outs"][0]["md5"]


def remote_url(root: Path, remote: str | None = None) -> tuple[str, str] | None:
    """(name, url) of `remote` or of the repository's default remote; None when there is none."""
    name = remote or _dvc(root, "remote", "default", what="reading the default remote", check=False).strip()
    if not name:
        return None
    for line in _dvc(root, "remote", "list", what="listing remotes").splitlines():
        parts = line.split()
        if len(parts) >= 2 and parts[0] == name:
            return name, parts[1]
    raise RemoteError(f"{root}: no DVC remote named {name!r} (see `dvc remote list`)")


def lineage(version: DatasetVersion) -> dict[str, str]:
    """Tags naming where a tracked version can be restored from: its DVC hash and the default remote."""
    md5 = tracked_hash(version)
    if md5 is None:
        return {}
    tags = {"dataset.dvc_hash": md5}
    root = dvc_root(version.root)
    remote = remote_url(root) if root else None
    if remote:
        tags["dataset.dvc_remote"] = remote[1]
    return tags


def push(versions: list[DatasetVersion], remote: str | None = None) -> None:
    """Upload tracked versions to `remote` (default: the repository's default remote)."""
    if not versions:
        return
    versions = [DatasetVersion(v.root.resolve()) for v in versions]
    root = dvc_root(versions[0].root)
    files = []
    for v in versions:
        if dvc_file(v).exists():
            files.append(str(dvc_file(v).relative_to(root)))
        else:
            raise RemoteError(f"{v.root}: not tracked by DVC (no {dvc_file(v).name}); import it inside a DVC "
                              f"repository or run `dvc add` on it")
    _dvc(root, "push", "--quiet", *(["-r", remote] if remote else []), *files, what="pushing dataset versions")


def pull(datasets_dir: Path, name: str, version_id: str, remote: str | None = None, dvc_hash: str | None = None,
         fingerprint: str | None = None) -> DatasetVersion:
    """Restore version `version_id` of `name` from the DVC remote into `datasets_dir` and check it: every image
    against the sha256 recorded at import, and the card's fingerprint against `fingerprint` when given. Where this
    checkout has no .dvc file for the version, `dvc_hash` (from a model's lineage) recreates it."""
    datasets_dir = Path(datasets_dir).resolve()
    root = dvc_root(datasets_dir)
    if root is None:
        raise RemoteError(f"{datasets_dir} is not inside a DVC repository: nothing to pull from")
    base = datasets_dir / name
    candidates = sorted(base.glob(f"{version_id}*.dvc")) if base.exists() else []
    recreated = not candidates
    if recreated:
        if not dvc_hash or len(version_id) != 12:
            raise RemoteError(f"{base}/{version_id}.dvc: this checkout has no DVC file for {name}@{version_id} "
                              f"and no DVC hash was given (`atom data pull --model NAME@ALIAS` reads it from "
                              f"the model's lineage)")
        base.mkdir(parents=True, exist_ok=True)
        candidates = [base / f"{version_id}.dvc"]
        candidates[0].write_text(yaml.safe_dump({"outs": [{"md5": dvc_hash, "hash": "md5", "path": version_id}]}))
    elif len(candidates) > 1:
        raise RemoteError(f"{base}: version {version_id!r} is ambiguous ({[c.stem for c in candidates]})")
    target = candidates[0]
    existed = (base / target.stem / "card.json").exists()
    try:
        _dvc(root, "pull", "--quiet", *(["-r", remote] if remote else []), str(target.relative_to(root)),
             what=f"pulling {name}@{target.stem}")
        version = open_version(datasets_dir, name, target.stem)
        verify(version, fingerprint)
    except DatasetError:
        # A version that did not arrive whole must not be found later by a training run: remove what came (a copy
        # that was here before is left as it was).
        if not existed:
            shutil.rmtree(base / target.stem, ignore_errors=True)
        if recreated:
            target.unlink(missing_ok=True)
        raise
    if not (base / "latest").exists():
        (base / "latest").write_text(version.root.name + "\n")
    return version


def verify(version: DatasetVersion, fingerprint: str | None = None) -> None:
    """Every image of the version is the one hashed at import, and the version is the expected one."""
    if fingerprint and version.fingerprint != fingerprint:
        raise RemoteError(f"{version.root}: fingerprint {version.fingerprint[:12]} differs from the expected "
                          f"{fingerprint[:12]}")
    for split in version.card["splits"]:
        for image in version.coco(split)["images"]:
            path = version.root / image["file_name"]
            if not path.exists() or sha256_file(path) != image["sha256"]:
                raise RemoteError(f"{path}: missing or altered after the pull (sha256 differs from the import's)")
