"""The `atom` command: every subcommand has --help, and start-up imports no heavy library."""

from __future__ import annotations

import subprocess
import sys

import pytest

from atom import PROJECT_ROOT

SUBCOMMANDS = [[], ["data"], ["data", "import"], ["data", "sample"], ["data", "list"], ["data", "show"],
               ["train"], ["evaluate"], ["export"], ["demo"],
               ["label"], ["label", "init"], ["label", "import"], ["label", "pull"], ["label", "predict"],
               ["label", "serve"], ["label", "queue"]]


@pytest.mark.parametrize("words", SUBCOMMANDS, ids=lambda w: " ".join(w) or "atom")
def test_help(words):
    out = subprocess.run([sys.executable, "-m", "atom.cli", *words, "--help"], capture_output=True, text=True,
                         cwd=PROJECT_ROOT)
    assert out.returncode == 0 and "usage: atom" in out.stdout


def test_help_imports_no_heavy_library():
    code = ("import sys; from atom.cli import build_parser; build_parser().format_help(); "
            "print(sorted(m for m in ('torch', 'mlflow', 'pytorch_lightning', 'hydra', 'timm') if m in sys.modules))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=PROJECT_ROOT)
    assert out.stdout.strip() == "[]"


def test_export_of_unknown_model_exits_nonzero(tmp_path):
    out = subprocess.run([sys.executable, "-m", "atom.cli", "export", "model=missing@candidate",
                          f"paths.output_dir={tmp_path}"], capture_output=True, text=True, cwd=PROJECT_ROOT)
    assert out.returncode == 1 and "not found in the registry" in out.stderr
