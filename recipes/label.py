"""The annotators' loop: a scene's Label Studio project, its pre-annotations, and pulls into dataset versions.

    atom label init scene=sample                         project + local-files storage + one task per image
    atom label import scene=sample source.format=yolo source.path=DIR    existing labels as predictions to review
    atom label pull scene=sample                         submitted annotations -> a new dataset version
    atom label feedback FEEDBACK.jsonl scene=sample      serving feedback -> tasks with corrected predictions
    atom label predict scene=sample model=atom-sample@candidate          model predictions, once per version
    atom label queue scene=sample model=atom-sample@candidate            most useful unlabeled tasks first
    atom label queue scene=sample                                        no model yet: a diverse first batch
    ATOM_ML_BACKEND_TOKEN=... atom label serve scene=sample model=atom-sample@candidate   ML backend on :9090
"""

from __future__ import annotations

from pathlib import Path

from omegaconf import DictConfig

import recipes  # noqa: F401  (registers the config resolvers: the functions here run on composed configs)
from atom.errors import ConfigError


def _project(cfg: DictConfig):
    from atom.labelstudio.connection import connect
    from atom.labelstudio.project import Scene, SceneProject

    scene = Scene(cfg.scene.name, list(cfg.scene.classes), Path(cfg.scene.images))
    return SceneProject(connect(retries=cfg.retries), scene, Path(cfg.document_root))


def init(cfg: DictConfig) -> dict:
    return _project(cfg).ensure()


def import_labels(cfg: DictConfig) -> dict:
    from atom.data.formats import read_source

    if not cfg.source.format or not cfg.source.path:
        raise ConfigError("set source.format and source.path (e.g. source.format=yolo source.path=DIR)")
    project = _project(cfg)
    project.ensure()
    source = read_source(cfg.source.format, Path(cfg.source.path))
    return project.import_labeled(source, as_annotations=cfg.source.as_annotations,
                                  model_version=f"import:{cfg.source.format}",
                                  class_map=dict(cfg.preannotation.class_map))


def pull(cfg: DictConfig) -> dict:
    from atom.data import remote

    version, new, report = _project(cfg).pull(Path(cfg.paths.datasets), cfg.dataset_name)
    tracked = remote.track(version)
    return {"dvc_file": str(tracked) if tracked else None, "dataset": version.name, "version": version.card["version"], "new": new,
            "fingerprint": version.fingerprint, "splits": version.card["splits"], "problems": report.counts(),
            "path": str(version.root)}


def _shown(cfg: DictConfig):
    from omegaconf import OmegaConf

    from atom.labelstudio.project import Preannotation

    return Preannotation(**OmegaConf.to_container(cfg.preannotation))


def _detector(cfg: DictConfig):
    """The registered detector named by cfg.model, its classes checked against the scene's labels
    (after preannotation.class_map)."""
    import torch

    from atom import tracking
    from atom.labelstudio.project import Scene

    if not cfg.model:
        raise ConfigError("say which model: model=NAME@ALIAS")
    torch.set_num_threads(cfg.threads)
    tracking.configure(cfg.paths.output_dir)
    ref = tracking.resolve_model(cfg.model)
    detector = tracking.load_detector(ref)
    _shown(cfg).check(detector.spec.classes, Scene(cfg.scene.name, list(cfg.scene.classes), Path(cfg.scene.images)),
                      ref.uri)
    return detector, f"{ref.name}/{ref.version}"


def predict(cfg: DictConfig) -> dict:
    detector, model_version = _detector(cfg)
    return _project(cfg).push_predictions(detector, model_version=model_version, shown=_shown(cfg))


def serve(cfg: DictConfig) -> dict:
    import uvicorn

    from atom.labelstudio.backend import create_app

    detector, model_version = _detector(cfg)
    app = create_app(detector, model_version, Path(cfg.document_root), cfg.serve.token or "", _shown(cfg))
    print(f"ML backend for {model_version} listening on http://{cfg.serve.host}:{cfg.serve.port} "
          f"(connect it in the project's Model settings)", flush=True)
    uvicorn.run(app, host=cfg.serve.host, port=cfg.serve.port, log_level="warning")
    return {"stopped": True}


def feedback(cfg: DictConfig) -> dict:
    import sys

    from atom import tracking
    from atom.data.report import ImportReport
    from atom.labelstudio.feedback import FeedbackError, read_feedback
    from atom.labelstudio.project import Scene

    if not cfg.feedback.file:
        raise ConfigError("say which feedback file: atom label feedback FILE scene=NAME")
    path = Path(cfg.feedback.file)
    report = ImportReport()
    verdicts = read_feedback(path, report)
    for p in report.problems:  # the usable lines go on
        print(f"warning: {p.file}: {p.reason}", file=sys.stderr)
    if not verdicts:
        raise FeedbackError(f"{path}: no usable feedback line")
    tracking.configure(cfg.paths.output_dir)
    scene = Scene(cfg.scene.name, list(cfg.scene.classes), Path(cfg.scene.images))

    def load(verdict):
        ref = (tracking.resolve_model(verdict.model) if verdict.model
               else tracking.find_by_bundle(verdict.bundle_sha256))
        detector = tracking.load_detector(ref)
        _shown(cfg).check(detector.spec.classes, scene, ref.uri)
        return detector, f"{ref.name}/{ref.version}"

    result = _project(cfg).add_feedback(verdicts, cfg.feedback.batch or path.stem, load, _shown(cfg))
    return {**result, "bad_lines": [f"{p.file}: {p.reason}" for p in report.problems]}


def queue(cfg: DictConfig) -> dict:
    if not cfg.model:  # cold start: nothing trained yet, so the first batch is chosen for diversity alone
        import torch

        from atom.models.detector import Detector, DetectorSpec

        torch.set_num_threads(cfg.threads)
        cold = cfg.queue.cold_start
        embedder = Detector(DetectorSpec(backbone=cold.backbone, input_size=cold.input_size,
                                         classes=list(cfg.scene.classes))).eval()
        return _project(cfg).queue(embedder, f"cold-start:{cold.backbone}", cold_start=cold.batch)
    detector, model_version = _detector(cfg)
    return _project(cfg).queue(detector, model_version, diversity_weight=cfg.queue.diversity_weight,
                               shown=_shown(cfg))
