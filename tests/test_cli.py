"""The `atom` command: every subcommand has --help; the recipe commands behave like Hydra applications (config
groups in --help, --cfg job, multirun, one-line errors, a user config folder); start-up imports no heavy library."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest

from atom import PROJECT_ROOT

PLAIN = [[], ["data"], ["data", "import"], ["data", "sample"], ["data", "list"], ["data", "show"], ["data", "push"],
         ["data", "pull"], ["demo"],
         ["label"], ["models"], ["models", "list"], ["models", "show"], ["models", "promote"], ["models", "pull"]]
HYDRA = [["train"], ["evaluate"], ["export"], ["adapt"], ["label", "init"], ["label", "import"], ["label", "pull"],
         ["label", "predict"], ["label", "serve"], ["label", "queue"]]


# The CLI under test runs in the environment the suite started with (taken at collection, before any test runs):
# tests that run recipes in this process export variables a child would inherit — mlflow.set_tracking_uri()
# exports MLFLOW_TRACKING_URI/MLFLOW_REGISTRY_URI, atom.logs.quiet_libraries() MLFLOW_LOGGING_LEVEL=WARNING (which
# silenced `atom -v`). Nor does a store of the developer's own leak in: the CLI uses the one paths.output_dir names.
START_ENV = {k: v for k, v in os.environ.items() if k not in ("MLFLOW_TRACKING_URI", "MLFLOW_REGISTRY_URI")}


def atom(*args, env=None):
    return subprocess.run([sys.executable, "-m", "atom.cli", *args], capture_output=True, text=True,
                          cwd=PROJECT_ROOT, env={**START_ENV, **(env or {})})


@pytest.mark.parametrize("words", PLAIN, ids=lambda w: " ".join(w) or "atom")
def test_help(words):
    out = atom(*words, "--help")
    assert out.returncode == 0 and "usage: atom" in out.stdout


@pytest.mark.parametrize("words", HYDRA, ids=lambda w: " ".join(w))
def test_recipe_help_lists_the_config_groups(words):
    out = atom(*words, "--help")
    assert out.returncode == 0 and f"atom {words[0]} is powered by Hydra" in out.stdout
    assert "== Configuration groups ==" in out.stdout and "paths: default" in out.stdout
    assert "schema" not in out.stdout.split("== Config ==")[0]  # a group's typing is not one of its options


def test_help_imports_no_heavy_library():
    code = ("import sys; from atom.cli import build_parser; build_parser().format_help(); "
            "print(sorted(m for m in ('torch', 'mlflow', 'pytorch_lightning', 'hydra', 'timm') if m in sys.modules))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=PROJECT_ROOT)
    assert out.stdout.strip() == "[]"


def test_cfg_job_composes_without_running():
    out = atom("train", "--cfg", "job", "detector=lite1", "experiment=vehicles")
    assert out.returncode == 0 and "backbone: tf_efficientnet_lite1" in out.stdout and "name: vehicles" in out.stdout
    assert atom("train", "--info").returncode == 0
    assert "model: atom-x@candidate" in atom("evaluate", "--cfg", "job", "model=atom-x@candidate").stdout


def test_a_typo_or_an_unknown_option_is_one_line_with_the_choices():
    typo = atom("train", "trainer.max_epoch=3")
    assert typo.returncode == 1 and "Could not override 'trainer.max_epoch'" in typo.stderr
    assert "Traceback" not in typo.stderr
    unknown = atom("train", "data=nope")
    assert unknown.returncode == 1 and "Available options in 'data'" in unknown.stderr and "vehicles" in unknown.stderr


@pytest.mark.slow  # creates two MLflow stores (their schema migrations take seconds)
def test_export_of_unknown_model_exits_nonzero(tmp_path):
    out = atom("export", "model=missing@candidate", f"paths.output_dir={tmp_path}")
    assert out.returncode == 1 and "not found in the registry" in out.stderr and "Traceback" not in out.stderr
    assert "INFO mlflow" not in out.stderr  # library set-up chatter stays quiet ...
    verbose = atom("-v", "export", "model=missing@candidate", f"paths.output_dir={tmp_path / 'v'}")
    assert "INFO mlflow" in verbose.stderr  # ... unless asked for


def test_a_user_config_folder_adds_a_scene(tmp_path):
    (tmp_path / "data").mkdir()
    (tmp_path / "data" / "my-scene.yaml").write_text("defaults:\n  - vehicles\n  - _self_\nname: my-scene\n")
    out = atom("train", "--cfg", "job", "data=my-scene", env={"ATOM_CONFIG_DIR": str(tmp_path)})
    assert out.returncode == 0 and "name: my-scene" in out.stdout and "batch_size" in out.stdout


def test_adapt_runs_where_train_does():
    from recipes import compose

    cfg = compose("adapt", ["model=atom-x/1", "trainer=gpu"])
    assert cfg.trainer.accelerator == "gpu" and cfg.trainer.precision == "16-mixed"


@pytest.mark.slow
def test_multirun_goes_on_past_a_failing_job(trained, project):
    """`-m` sweeps like any Hydra app; a job's user error is reported and the others still run."""
    good = f"{trained['result']['model_name']}@candidate"
    out = atom("evaluate", "-m", f"model=missing@candidate,{good}", f"paths.datasets={project['datasets']}",
               f"paths.output_dir={project['outputs']}", "hydra.sweep.dir=" + str(project["outputs"] / "sweep"))
    assert out.returncode == 1 and "1 job(s) failed" in out.stderr and "missing" in out.stderr
    assert '"mAP50"' in out.stdout  # the second job ran


@pytest.mark.parametrize("override,message", [
    ("fewshot.transfer=foo", "fewshot.transfer"), ("detector.input_size=big", "detector.input_size"),
    ("detector.backbon=x", "detector.backbon")])
def test_bad_values_fail_at_composition(override, message):
    from hydra.errors import ConfigCompositionException

    from recipes import compose

    with pytest.raises(ConfigCompositionException, match=message):
        compose("adapt" if override.startswith("fewshot") else "train", ["model=x/1", override]
                if override.startswith("fewshot") else [override])


def test_the_schemas_choices_are_the_librarys():
    from atom import fewshot
    from atom.data.augment import POLICIES
    from recipes import schema

    assert [m.value for m in schema.Transfer] == list(fewshot.TRANSFERS)
    assert [m.value for m in schema.HeadInit] == list(fewshot.HEAD_INITS)
    assert [m.value for m in schema.Classifier] == list(fewshot.CLASSIFIERS)
    assert [m.value for m in schema.Policy] == list(POLICIES)


def test_adapted_models_are_registered_apart_from_trained_ones():
    """`atom adapt` must not add versions to, or move the alias of, the model `atom train` registers for the data."""
    from recipes import compose

    assert compose("adapt", ["model=atom-sample-base/1"]).tracking.model_name == "atom-sample-fewshot"
    assert compose("train", []).tracking.model_name == "atom-sample"


def test_adapted_models_are_exported_unless_asked_not_to():
    from recipes import compose

    assert compose("adapt", ["model=atom-sample-base/1"]).export.format == "onnx"
    assert "export" not in compose("adapt", ["model=atom-sample-base/1", "~export"])


@pytest.mark.parametrize("override", ["fewshot.transfer=features", "fewshot.classifier=softmax",
                                      "fewshot.head_init=pretrained"])
def test_unknown_fewshot_choices_fail_at_composition(override):
    from hydra.errors import ConfigCompositionException

    from recipes import compose

    with pytest.raises(ConfigCompositionException, match=override.split("=")[0]):
        compose("adapt", ["model=x/1", override])


@pytest.mark.slow
def test_the_console_shows_atoms_lines_and_the_log_file_everything(tmp_path):
    out = atom("train", f"paths.output_dir={tmp_path}", f"paths.datasets={tmp_path / 'none'}")
    assert out.returncode == 1 and "no dataset named 'sample'" in out.stderr
    assert "Seed set to" not in out.stdout + out.stderr  # Lightning's INFO line: quiet on the console ...
    (log,) = (tmp_path / "hydra").glob("*/train.log")
    assert "Seed set to 0" in log.read_text()  # ... and kept in the job's log file
    verbose = atom("-v", "train", f"paths.output_dir={tmp_path}", f"paths.datasets={tmp_path / 'none'}")
    assert "Seed set to" in verbose.stdout + verbose.stderr
