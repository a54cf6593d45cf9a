"""Hydra entry points. Each recipe is a plain function of its composed config (`train(cfg)`, `evaluate(cfg)`,
`export(cfg)`); its `main` only composes the config. `compose` does the same for the `atom` CLI and tests."""

from __future__ import annotations

from omegaconf import DictConfig, OmegaConf

from atom import PROJECT_ROOT
from recipes import schema

CONF_DIR = PROJECT_ROOT / "conf"

if not OmegaConf.has_resolver("project_root"):
    OmegaConf.register_new_resolver("project_root", lambda: str(PROJECT_ROOT))

schema.register()  # the structured configs of the detector and fewshot groups


def compose(config_name: str, overrides: list[str] = ()) -> DictConfig:
    from hydra import compose as hydra_compose
    from hydra import initialize_config_dir

    with initialize_config_dir(config_dir=str(CONF_DIR), version_base="1.3"):
        return hydra_compose(config_name=config_name, overrides=list(overrides))
