"""The notebooks themselves run in CI (`make test` passes notebooks/ to pytest with nbmake); here: git holds them
without outputs, so that a diff shows code, not results of somebody's run."""

from __future__ import annotations

import json

import pytest

from atom import PROJECT_ROOT

NOTEBOOKS = sorted((PROJECT_ROOT / "notebooks").glob("*.ipynb"))


def test_the_three_notebooks_are_there():
    assert [p.stem for p in NOTEBOOKS] == ["dataset_explorer", "fewshot_walkthrough", "quickstart"]


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.name)
def test_notebook_is_stored_without_outputs(path):
    cells = [c for c in json.loads(path.read_text())["cells"] if c["cell_type"] == "code"]
    assert cells and all(not c["outputs"] and c["execution_count"] is None for c in cells)
