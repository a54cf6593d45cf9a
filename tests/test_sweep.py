"""Sweeps (recipes/sweep.py): an Optuna search through `atom train -m`, its trials MLflow child runs of one parent
run, the best trial reported and, on request, the only one registered."""

from __future__ import annotations

import pytest

from tests.conftest import tiny_overrides
from tests.test_cli import atom


@pytest.mark.slow
def test_optuna_sweep_of_three_trials_registers_the_best_only(project, tmp_path):
    from mlflow import MlflowClient

    outputs = tmp_path / "outputs"
    out = atom("train", "-m", "experiment=sample", "hparams_search=optuna", "hydra.sweeper.n_trials=3",
               "sweep.register=best", "tracking.model_name=atom-sweep", f"hydra.sweep.dir={tmp_path / 'sweep'}",
               *tiny_overrides({**project, "outputs": outputs}, "sweep"))
    assert out.returncode == 0, out.stdout[-2000:] + out.stderr[-3000:]
    assert "3 trials, 3 finished" in out.stdout and "registered the best trial as models:/atom-sweep/1" in out.stdout

    uri = f"sqlite:///{outputs.resolve()}/mlflow.db"
    client = MlflowClient(uri, uri)
    (parent,) = client.search_runs([client.get_experiment_by_name("atom").experiment_id],
                                   "tags.`sweep.metric` = 'best_val_mAP50'")
    trials = client.search_runs([parent.info.experiment_id],
                                f"tags.`mlflow.parentRunId` = '{parent.info.run_id}'")
    assert len(trials) == 3
    assert len({t.data.tags["sweep.overrides"] for t in trials}) == 3  # Optuna chose three settings
    best = max(trials, key=lambda t: t.data.metrics["sweep/objective"])
    assert parent.data.tags["sweep.best_run"] == best.info.run_id
    assert parent.data.metrics["sweep/objective"] == best.data.metrics["sweep/objective"]
    (version,) = client.search_model_versions("name='atom-sweep'")
    assert version.run_id == best.info.run_id
    assert version.tags["dataset.fingerprint"] == project["version"].fingerprint
