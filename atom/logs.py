"""What reaches the console: ATOM's own log lines, and from libraries only warnings and errors. Library set-up
chatter (MLflow creating its database tables, Lightning's tips and the notice about the frozen modules that ATOM
keeps in eval mode on purpose, deprecation warnings from inside the libraries) is quiet unless ATOM_VERBOSE=1 (the
CLI's -v). Hydra's job log file keeps everything either way.
"""

from __future__ import annotations

import logging
import os
import warnings

NOISY = ("mlflow", "alembic", "lightning", "pytorch_lightning", "lightning.pytorch", "lightning_fabric", "httpx")
NOTICES = (  # regular expressions of warnings that say nothing to an ATOM user
    r"Found \d+ module\(s\) in eval mode",  # frozen stages stay in eval mode by design
    r".*LeafSpec.* is deprecated",  # inside Lightning 2.6
    r"The number of training batches .* is smaller than the logging interval",
    r".*does not have many workers",
)


OWN = ("atom", "recipes", "exporters", "benchmarks", "__main__")


class OwnLines(logging.Filter):
    """The console's filter (conf/hydra/job_logging/atom.yaml): ATOM's own lines, and others' warnings and errors;
    everything with ATOM_VERBOSE=1. Libraries set their loggers' levels when they are imported, later than any
    start-up code could, so the console filters instead."""

    def filter(self, record: logging.LogRecord) -> bool:
        return record.levelno >= logging.WARNING or record.name.split(".")[0] in OWN or verbose()


def verbose() -> bool:
    return os.environ.get("ATOM_VERBOSE", "") not in ("", "0")


def quiet_libraries() -> None:
    """Call once at start-up (the CLI and the recipes' entry do)."""
    if verbose():
        return
    for name in NOISY:
        logging.getLogger(name).setLevel(logging.WARNING)
    os.environ.setdefault("MLFLOW_LOGGING_LEVEL", "WARNING")  # mlflow sets its own level at import
    for pattern in NOTICES:
        warnings.filterwarnings("ignore", message=pattern)
    warnings.filterwarnings("ignore", category=DeprecationWarning)
