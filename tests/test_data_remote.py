"""Dataset versions under DVC (atom/data/remote.py): tracked at import, pushed to a local-folder remote and to an
S3-compatible server (moto on 127.0.0.1), restored in a fresh clone with the same fingerprint, altered data refused,
and a registered model's training data restored from its lineage alone."""

from __future__ import annotations

import hashlib
import os
import subprocess
import sys
from pathlib import Path

import pytest

from atom import PROJECT_ROOT
from atom.cli import main as atom
from tests.conftest import tiny_overrides

GIT = ["git", "-c", "user.email=tests@atom", "-c", "user.name=tests"]


def dvc(repo: Path, *args: str) -> None:
    subprocess.run([sys.executable, "-m", "dvc", *args], cwd=repo, check=True, capture_output=True)


def commit(repo: Path, message: str) -> None:
    subprocess.run(["git", "add", "-A"], cwd=repo, check=True)
    subprocess.run([*GIT, "commit", "-qm", message], cwd=repo, check=True)


def clone(repo: Path, to: Path) -> Path:
    subprocess.run(["git", "clone", "-q", str(repo), str(to)], check=True)
    return to


@pytest.fixture
def repo(tmp_path, sample_export):
    """A git + DVC project with a local-folder remote (the default) and the sample imported through the CLI."""
    root = tmp_path / "project"
    root.mkdir()
    subprocess.run(["git", "init", "-q"], cwd=root, check=True)
    (root / ".gitignore").write_text((PROJECT_ROOT / ".gitignore").read_text())
    dvc(root, "init", "-q")
    dvc(root, "remote", "add", "-d", "local", str(tmp_path / "remote"))
    assert atom(["data", "import", "--format", "labelstudio", str(sample_export), "--name", "sample",
                 "--datasets", str(root / "datasets")]) == 0
    (version,) = [p for p in (root / "datasets" / "sample").iterdir() if (p / "card.json").exists()]
    commit(root, "sample data")
    return {"root": root, "version": version, "remote": tmp_path / "remote"}


def fingerprint(version: Path) -> str:
    import json

    return json.loads((version / "card.json").read_text())["fingerprint"]


def test_import_tracks_the_version_as_shards_and_git_keeps_only_its_dvc_file(repo):
    import json

    root, version = repo["root"], repo["version"]
    dvc_file = version.parent / f"{version.name}.dvc"
    assert dvc_file.exists()
    tracked = subprocess.run(["git", "ls-files"], cwd=root, capture_output=True, text=True, check=True).stdout
    assert f"datasets/sample/{version.name}.dvc" in tracked
    assert "card.json" not in tracked and "images/" not in tracked and ".tar" not in tracked  # the data is DVC's
    shards = version.parent / f"{version.name}.shards"
    index = json.loads((shards / "index.json").read_text())
    files = sorted(p.relative_to(version).as_posix() for p in version.rglob("*") if p.is_file())
    assert sorted(index["files"]) == files  # every file of the version, each once
    name = next(n for n in files if n.endswith(".jpg"))
    shard, offset, size = index["files"][name]
    with open(shards / shard, "rb") as f:  # the index reads one image without unpacking
        f.seek(offset)
        assert f.read(size) == (version / name).read_bytes()


def test_fresh_clone_restores_the_version_from_the_local_remote(repo, tmp_path, capsys):
    root, version = repo["root"], repo["version"]
    dvc(root, "push")  # plain `dvc push` finds the version too (no wildcard .gitignore hiding it from DVC)
    fresh = clone(root, tmp_path / "fresh")
    assert not (fresh / "datasets" / "sample" / version.name).exists()
    assert atom(["data", "pull", f"sample@{version.name[:6]}", "--datasets", str(fresh / "datasets")]) == 0
    restored = fresh / "datasets" / "sample" / version.name
    assert fingerprint(restored) == fingerprint(version)
    images = sorted(p.relative_to(version) for p in version.rglob("*.jpg"))
    assert images and images == sorted(p.relative_to(restored) for p in restored.rglob("*.jpg"))
    assert all((restored / p).read_bytes() == (version / p).read_bytes() for p in images)


def test_an_altered_image_in_the_remote_is_refused_by_name(repo, tmp_path, capsys):
    import json

    root, version = repo["root"], repo["version"]
    assert atom(["data", "push", "sample", "--datasets", str(root / "datasets")]) == 0
    image = sorted(version.rglob("*.jpg"))[0]
    shards = version.parent / f"{version.name}.shards"
    shard, offset, size = json.loads((shards / "index.json").read_text())["files"][
        image.relative_to(version).as_posix()]
    md5 = hashlib.md5((shards / shard).read_bytes()).hexdigest()
    stored = repo["remote"] / "files" / "md5" / md5[:2] / md5[2:]
    os.chmod(stored, 0o644)
    data = bytearray(stored.read_bytes())
    data[offset + size - 100:offset + size] = b"x" * 100  # inside the image's bytes: the tar stays readable
    stored.write_bytes(bytes(data))
    fresh = clone(root, tmp_path / "fresh")
    capsys.readouterr()
    assert atom(["data", "pull", f"sample@{version.name}", "--datasets", str(fresh / "datasets")]) == 1
    err = capsys.readouterr().err
    assert image.name in err and "altered" in err
    assert not (fresh / "datasets" / "sample" / version.name).exists()  # no half-restored version to train on
    assert not (fresh / "datasets" / "sample" / shards.name).exists()


def test_unknown_version_and_untracked_push_are_clear_errors(repo, sample_export, tmp_path, capsys):
    assert atom(["data", "pull", "sample@0123456789ab", "--datasets", str(repo["root"] / "datasets")]) == 1
    assert "no DVC file for sample@0123456789ab" in capsys.readouterr().err
    scratch = tmp_path / "scratch"  # outside any DVC repository: the version is written, untracked
    assert atom(["data", "import", "--format", "labelstudio", str(sample_export), "--name", "x",
                 "--datasets", str(scratch)]) == 0
    assert not list((scratch / "x").glob("*.dvc"))
    capsys.readouterr()
    assert atom(["data", "push", "x", "--datasets", str(scratch)]) == 1
    assert "not tracked by DVC" in capsys.readouterr().err


def test_s3_remote_round_trip(repo, s3_server, tmp_path):
    import boto3

    root, version = repo["root"], repo["version"]
    dvc(root, "remote", "add", "s3", "s3://atom-data/dvc")
    dvc(root, "remote", "modify", "s3", "endpointurl", s3_server)
    commit(root, "s3 remote")
    assert atom(["data", "push", f"sample@{version.name}", "-r", "s3", "--datasets", str(root / "datasets")]) == 0
    objects = boto3.client("s3", endpoint_url=s3_server).list_objects_v2(Bucket="atom-data", Prefix="dvc/")
    shards = len(list((version.parent / f"{version.name}.shards").glob("*.tar")))
    assert objects["KeyCount"] == shards + 2  # the shards, index.json and DVC's directory listing: not per image
    fresh = clone(root, tmp_path / "fresh")
    assert atom(["data", "pull", f"sample@{version.name}", "-r", "s3", "--datasets", str(fresh / "datasets")]) == 0
    assert fingerprint(fresh / "datasets" / "sample" / version.name) == fingerprint(version)


def test_model_lineage_restores_its_training_data_without_the_dvc_file(repo, tmp_path, monkeypatch):
    """A model trained on a tracked version records its DVC hash and remote; a clone that never had the version's
    .dvc file restores exactly that data from `atom data pull --model`."""
    from recipes import compose
    from recipes.train import train

    root, version = repo["root"], repo["version"]
    assert atom(["data", "push", "sample", "--datasets", str(root / "datasets")]) == 0
    project = {"datasets": root / "datasets", "outputs": tmp_path / "outputs"}
    # MLflow exports the store it is pointed at as MLFLOW_TRACKING_URI: set here, it is undone after the test
    monkeypatch.setenv("MLFLOW_TRACKING_URI", f"sqlite:///{project['outputs'].resolve()}/mlflow.db")
    result = train(compose("train", ["experiment=sample", *tiny_overrides(project, "lineage")]))
    from atom import tracking

    tracking.configure(project["outputs"])
    tags = tracking.resolve_model(f"{result['model_name']}/{result['model_version']}").tags
    assert tags["dataset.dvc_hash"].endswith(".dir") and tags["dataset.dvc_remote"] == str(repo["remote"])

    bare = tmp_path / "bare"  # a checkout with the remote configured but none of the data's .dvc files
    bare.mkdir()
    subprocess.run(["git", "init", "-q"], cwd=bare, check=True)
    dvc(bare, "init", "-q")
    dvc(bare, "remote", "add", "-d", "local", str(repo["remote"]))
    assert atom(["data", "pull", "--model", f"{result['model_name']}/{result['model_version']}",
                 "--output-dir", str(project["outputs"]), "--datasets", str(bare / "datasets")]) == 0
    assert fingerprint(bare / "datasets" / "sample" / version.name) == fingerprint(version)
