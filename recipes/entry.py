"""Run a recipe as a Hydra application: `atom train ...` behaves like any Hydra app (`--help` lists the config
groups and their options, `--cfg job`, `--info`, `-m` multirun, `--config-dir`), and so does
`python -m recipes.train ...`.

A user error (AtomError: a missing dataset, an unknown model, a request that cannot work) prints one line and
exits 1; in a multirun it is reported and the other jobs go on. Hydra reports its own errors (a typo in an
override, an unknown option with the available ones) in one line. Anything else is a bug: it keeps its traceback.
ATOM_CONFIG_DIR names a folder of the user's own configs (e.g. data/my-scene.yaml), searched before conf/.
Library chatter is quiet unless ATOM_VERBOSE=1 (atom/logs.py).
"""

from __future__ import annotations

import json
import logging
import os
import sys
from typing import Callable

from omegaconf import DictConfig

from recipes import CONF_DIR

log = logging.getLogger("atom")


def run(command: str, config_name: str, task: Callable[[DictConfig], dict], argv: list[str]) -> int:
    """Compose conf/<config_name>.yaml from argv's overrides and flags the Hydra way and call task(cfg); print its
    result as JSON. Returns the exit code."""
    import hydra
    from hydra.core.hydra_config import HydraConfig
    from hydra.types import RunMode

    from atom.errors import AtomError
    from atom.logs import quiet_libraries

    quiet_libraries()
    failures: list[str] = []

    def job(cfg: DictConfig):
        try:
            result = task(cfg)
        except AtomError as e:
            if HydraConfig.get().mode == RunMode.MULTIRUN:
                failures.append(str(e))
                log.error("job %s failed: %s", HydraConfig.get().job.num, e)
                return float("nan")  # a searching sweeper (Optuna) records the trial as failed
            print(f"error: {e}", file=sys.stderr)
            raise SystemExit(1) from None
        print(json.dumps(result, indent=1, default=str), flush=True)
        # A searching sweeper (Optuna) compares jobs by the number they return: a training's sweep.metric.
        return result.get("objective", result) if isinstance(result, dict) else result

    user_dir = os.environ.get("ATOM_CONFIG_DIR")
    extra = ["--config-dir", user_dir] if user_dir and "--config-dir" not in argv and "-cd" not in argv else []
    saved = sys.argv
    sys.argv = [f"atom {command}", *extra, *argv]
    try:
        hydra.main(version_base="1.3", config_path=str(CONF_DIR), config_name=config_name)(job)()
    except SystemExit as e:
        return e.code if isinstance(e.code, int) else 1
    finally:
        sys.argv = saved
    if failures:
        print(f"error: {len(failures)} job(s) failed: " + "; ".join(failures), file=sys.stderr)
        return 1
    return 0
