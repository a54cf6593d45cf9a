"""Sweeps: `atom train -m ...` (Hydra's multirun: a grid, or an Optuna search with `hparams_search=optuna`) as one
MLflow parent run with a child run per trial. Trials are compared on `sweep.metric` (validation, so that the test
split stays held out); when the sweep ends the parent records the best trial, and `sweep.register` says what goes
to the registry: `none` (default), `best` (the best trial only) or `all` (every trial, as single runs do).

    atom train -m experiment=vehicles optim.lr=1e-3,2e-3 detector=lite0,lite1
    atom train -m experiment=vehicles hparams_search=optuna hydra.sweeper.n_trials=8 sweep.register=best

MLflowSweep is a Hydra callback (conf/train.yaml, hydra.callbacks): it opens the parent run before the first trial
and tells the trials about it through the environment (PARENT_RUN_ENV; Hydra's launcher runs them in this process
or passes the environment on), and closes it after the last.
"""

from __future__ import annotations

import json
import logging
import math
import os

from hydra.experimental.callback import Callback
from omegaconf import DictConfig

log = logging.getLogger("atom")

PARENT_RUN_ENV = "ATOM_SWEEP_PARENT_RUN"
OBJECTIVE = "sweep/objective"  # the child runs' metric that the sweep compares
REGISTER_CHOICES = ("none", "best", "all")
METRICS = ("best_val_mAP50", "mAP50", "mAP50_95")  # a training's results (mAP50, mAP50_95: the held-out split's)


def trial_tags(cfg: DictConfig) -> dict[str, str]:
    """Tags of a trial's run: its parent, and the overrides that make it this trial."""
    from hydra.core.hydra_config import HydraConfig

    hydra = HydraConfig.get()
    return {"mlflow.parentRunId": os.environ[PARENT_RUN_ENV], "sweep.trial": str(hydra.job.num),
            "sweep.overrides": " ".join(hydra.overrides.task)}


def record_trial(run_id: str, objective: float | None, model_uri: str, registration: dict) -> None:
    """What the sweep needs of a finished trial: its objective, and how to register it if it is chosen."""
    from mlflow import MlflowClient

    client = MlflowClient()
    client.log_metric(run_id, OBJECTIVE, objective if objective is not None else float("nan"))
    client.set_tag(run_id, "sweep.model_uri", model_uri)
    client.set_tag(run_id, "sweep.registration", json.dumps(registration))


class MLflowSweep(Callback):
    def on_multirun_start(self, config: DictConfig, **kwargs) -> None:
        from mlflow import MlflowClient

        from atom import tracking

        from atom.errors import ConfigError

        if config.sweep.register not in REGISTER_CHOICES:
            raise ConfigError(f"sweep.register={config.sweep.register!r}; choose one of {list(REGISTER_CHOICES)}")
        if config.sweep.metric not in METRICS:
            raise ConfigError(f"sweep.metric={config.sweep.metric!r}; choose one of {list(METRICS)}")
        tracking.configure(config.paths.output_dir)
        experiment = tracking.ensure_experiment(config.tracking.experiment, config.paths.output_dir)
        run = MlflowClient().create_run(experiment, run_name=f"sweep-{config.run_name}",
                                        tags={"sweep.metric": config.sweep.metric,
                                              "sweep.register": config.sweep.register})
        os.environ[PARENT_RUN_ENV] = run.info.run_id
        log.info("sweep: MLflow parent run %s", run.info.run_id)

    def on_multirun_end(self, config: DictConfig, **kwargs) -> None:
        from mlflow import MlflowClient

        from atom import tracking

        parent = os.environ.pop(PARENT_RUN_ENV, None)
        if parent is None:
            return
        client = MlflowClient()
        experiment = client.get_run(parent).info.experiment_id
        trials = client.search_runs([experiment], f"tags.`mlflow.parentRunId` = '{parent}'")
        scored = [t for t in trials if not math.isnan(t.data.metrics.get(OBJECTIVE, math.nan))]
        lines = [f"sweep {parent}: {len(trials)} trials, {len(scored)} finished ({config.sweep.metric}):"]
        for t in sorted(scored, key=lambda t: -t.data.metrics[OBJECTIVE]):
            lines.append(f"  {t.data.metrics[OBJECTIVE]:.4f}  trial {t.data.tags.get('sweep.trial')}  "
                         f"{t.data.tags.get('sweep.overrides', '')}  (run {t.info.run_id})")
        if scored:
            best = max(scored, key=lambda t: t.data.metrics[OBJECTIVE])
            client.log_metric(parent, OBJECTIVE, best.data.metrics[OBJECTIVE])
            client.set_tag(parent, "sweep.best_run", best.info.run_id)
            client.set_tag(parent, "sweep.best_overrides", best.data.tags.get("sweep.overrides", ""))
            lines.append(f"best: trial {best.data.tags.get('sweep.trial')} ({best.data.tags.get('sweep.overrides')})")
            if config.sweep.register == "best":
                how = json.loads(best.data.tags["sweep.registration"])
                ref = tracking.register_logged(best.data.tags["sweep.model_uri"], best.info.run_id, how["name"],
                                               how["tags"], how["alias"])
                client.set_tag(parent, "sweep.registered", ref.uri)
                lines.append(f"registered the best trial as {ref.uri}")
        client.set_terminated(parent, "FINISHED" if scored else "FAILED")
        print("\n".join(lines), flush=True)
