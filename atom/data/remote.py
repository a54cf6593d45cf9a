"""Dataset versions under DVC: tracked when written, pushed to a remote, pulled back on another machine.

    datasets/<name>/<version>/          the version a recipe reads (ignored by git, not tracked itself)
    datasets/<name>/<version>.shards/   its files packed into tar shards + index.json: what DVC tracks
    datasets/<name>/<version>.dvc       one DVC file per version (committed to git)

Shards, not one DVC object per image: DVC and object stores pay per file (a 10k-image version took 51 s each way
to an S3-compatible server as files, benchmarks/dvc_transfer.py), so a version travels as a few tar shards of about
SHARD_BYTES each. Shards are deterministic (sorted members, zeroed owners and times): the same version packs to the
same bytes and DVC stores it once. The cost: versions that share most images share no shard, and the packed copy
takes disk beside the version. index.json maps every file to its shard, offset and size, so a reader can fetch one
image without unpacking.

One DVC file per version rather than one per dataset: a version never changes, so its .dvc file never changes once
committed; a new version adds a file instead of rehashing and rewriting a manifest of every version; and
`atom data pull NAME@VERSION` fetches that version only. A registered model's lineage tags carry the version's DVC
hash and remote (`lineage`), so its training data can be restored even in a checkout that lacks the .dvc file.

Tracking happens where the datasets folder lies inside a DVC repository (the project's own `datasets/`); elsewhere
(a scratch folder) versions are written untracked and that is logged. DVC runs as its own command line, the
interface it keeps stable.
"""

from __future__ import annotations

import json
import logging
import os
import shutil
import subprocess
import sys
import tarfile
import tempfile
from pathlib import Path

import yaml

from atom.checksums import sha256_file
from atom.data.version import DatasetError, DatasetVersion, make_readable, open_version

log = logging.getLogger(__name__)

SHARD_BYTES = 64 * 2**20  # large enough that per-request cost vanishes, small enough to retry one cheaply
SHARDS_FORMAT = "atom-shards/1"


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


def shards_dir(version_root: Path) -> Path:
    return version_root.parent / f"{version_root.name}.shards"


def _dvc(root: Path, *args: str, what: str, check: bool = True) -> str:
    env = {**os.environ, "DVC_NO_ANALYTICS": "1"}
    done = subprocess.run([sys.executable, "-m", "dvc", *args], cwd=root, capture_output=True, text=True, env=env)
    if done.returncode != 0 and not check:
        return ""
    if done.returncode != 0:
        detail = (done.stderr.strip() or done.stdout.strip()).splitlines()
        raise RemoteError(f"{what}: `dvc {' '.join(args)}` failed in {root}: {' / '.join(detail[-3:])}")
    return done.stdout


def _tarinfo(info: tarfile.TarInfo) -> tarfile.TarInfo:
    info.uid = info.gid = 0
    info.uname = info.gname = ""
    info.mtime = 0
    info.mode = 0o444
    return info


def pack(version: DatasetVersion, shard_bytes: int = SHARD_BYTES) -> Path:
    """Pack every file of a version into tar shards of about `shard_bytes` plus index.json, beside the version.
    Written to a temporary folder and renamed into place: the shards folder is whole or absent."""
    target = shards_dir(version.root)
    if target.exists():
        return target
    files = sorted(p for p in version.root.rglob("*") if p.is_file())
    groups: list[list[Path]] = [[]]
    size = 0
    for path in files:
        if groups[-1] and size + path.stat().st_size > shard_bytes:
            groups.append([])
            size = 0
        groups[-1].append(path)
        size += path.stat().st_size
    tmp = Path(tempfile.mkdtemp(prefix=f".{target.name}-", dir=target.parent))
    index = {"format": SHARDS_FORMAT, "version": version.root.name, "shards": [], "files": {}}
    try:
        for i, group in enumerate(groups):
            shard = f"shard-{i:05d}.tar"
            with tarfile.open(tmp / shard, "w", format=tarfile.PAX_FORMAT) as tar:
                for path in group:
                    tar.add(path, arcname=path.relative_to(version.root).as_posix(), filter=_tarinfo)
            with tarfile.open(tmp / shard) as tar:  # offsets of the data are known once written
                for member in tar:
                    index["files"][member.name] = [shard, member.offset_data, member.size]
            index["shards"].append({"file": shard, "files": len(group), "bytes": (tmp / shard).stat().st_size})
        (tmp / "index.json").write_text(json.dumps(index, indent=0, sort_keys=True))
        make_readable(tmp)
        tmp.rename(target)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return target


def unpack(shards: Path, version_root: Path) -> None:
    """Rebuild a version folder from its shards (into a temporary folder renamed into place)."""
    index_file = shards / "index.json"
    try:
        index = json.loads(index_file.read_text())
    except (OSError, ValueError) as e:
        raise RemoteError(f"{index_file}: unreadable shard index ({e})") from e
    if index.get("format") != SHARDS_FORMAT:
        raise RemoteError(f"{index_file}: format {index.get('format')!r}, expected {SHARDS_FORMAT!r}")
    tmp = Path(tempfile.mkdtemp(prefix=f".{version_root.name}-", dir=version_root.parent))
    try:
        for shard in index["shards"]:
            try:
                with tarfile.open(shards / shard["file"]) as tar:
                    tar.extractall(tmp, filter="data")  # refuses absolute paths, links out, device files
            except (OSError, tarfile.TarError) as e:
                raise RemoteError(f"{shards / shard['file']}: cannot unpack ({e})") from e
        missing = [name for name in index["files"] if not (tmp / name).is_file()]
        if missing:
            raise RemoteError(f"{shards}: {len(missing)} files of the index are in no shard (first: {missing[0]})")
        make_readable(tmp)
        tmp.rename(version_root)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise


def track(version: DatasetVersion) -> Path | None:
    """Pack a version into shards and track them with DVC (writes <version>.dvc beside it, and the dataset's
    .gitignore). Returns the .dvc file, or None where the datasets folder is not inside a DVC repository."""
    version = DatasetVersion(version.root.resolve())
    root = dvc_root(version.root.parent)
    if root is None:
        log.debug("%s is not inside a DVC repository: version not tracked by DVC", version.root)
        return None
    target = dvc_file(version)
    if not target.exists():
        shards = pack(version)
        _dvc(root, "add", "--quiet", str(shards.relative_to(root)), what=f"tracking {version.root}")
        # DVC names the file after its output (<version>.shards.dvc); the version's name is what people look for.
        shards.parent.joinpath(shards.name + ".dvc").rename(target)
    _git_ignore(version.root.parent, [f"/{version.root.name}", f"/{shards_dir(version.root).name}", "/latest"])
    return target


def _git_ignore(folder: Path, entries: list[str]) -> None:
    """Add entries to a folder's .gitignore, as `dvc add` does for its outputs. Per folder and explicit, not a
    wildcard in the root .gitignore: DVC 3 treats outputs under such a pattern as deleted and a plain `dvc push`
    pushes nothing (treeverse/dvc#10774)."""
    path = folder / ".gitignore"
    present = path.read_text().splitlines() if path.exists() else []
    missing = [e for e in entries if e not in present]
    if missing:
        path.write_text("".join(f"{line}\n" for line in present + missing))


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
        out = {"md5": dvc_hash, "hash": "md5", "path": shards_dir(base / version_id).name}
        candidates[0].write_text(yaml.safe_dump({"outs": [out]}))
    elif len(candidates) > 1:
        raise RemoteError(f"{base}: version {version_id!r} is ambiguous ({[c.stem for c in candidates]})")
    target = candidates[0]
    folder, shards = base / target.stem, shards_dir(base / target.stem)
    existed, shards_existed = (folder / "card.json").exists(), shards.exists()
    try:
        _dvc(root, "pull", "--quiet", *(["-r", remote] if remote else []), str(target.relative_to(root)),
             what=f"pulling {name}@{target.stem}")
        if not existed:
            unpack(shards, folder)
        version = open_version(datasets_dir, name, target.stem)
        verify(version, fingerprint)
    except DatasetError:
        # A version that did not arrive whole must not be found later by a training run: remove what came (a copy
        # that was here before is left as it was).
        if not existed:
            shutil.rmtree(folder, ignore_errors=True)
        if not shards_existed:
            shutil.rmtree(shards, ignore_errors=True)
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
