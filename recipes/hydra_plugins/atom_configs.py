"""Imported by DVC's Hydra composition (.dvc/config: plugins_path = recipes; Hydra imports every module under
`hydra_plugins`) before it composes conf/pipeline.yaml: registers what `atom` registers before composing, the
structured configs that conf/detector/*.yaml extend and the project_root resolver."""

import recipes  # noqa: F401
