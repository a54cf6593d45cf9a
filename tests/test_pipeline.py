"""The spine end to end, shrunk through config: Hydra-composed training, resume, COCO evaluation, registration in
the embedded MLflow store, and verified export."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import onnx
import pytest
from mlflow import MlflowClient

from atom import PROJECT_ROOT, tracking
from exporters import FORMATS, ExportError, resolve_format
from recipes import compose
from recipes.evaluate import evaluate
from recipes.export import export
from recipes.train import train
from tests.conftest import tiny_overrides

EXPERIMENTS = sorted(p.stem for p in (PROJECT_ROOT / "conf" / "experiment").glob("*.yaml"))


@pytest.mark.parametrize("experiment", EXPERIMENTS)
def test_every_experiment_composes(experiment):
    cfg = compose("train", [f"experiment={experiment}"])
    assert cfg.data.name and cfg.detector.backbone and cfg.trainer.accelerator == "cpu"


SIZES = sorted(p.stem for p in (PROJECT_ROOT / "conf" / "detector").glob("*.yaml"))


@pytest.mark.parametrize("size", SIZES)
def test_every_model_size_builds_with_its_imagenet_weights(size):
    """The ladder (detector=lite0|lite1|lite2): each composes, loads its offline ImageNet weights and detects at its
    own input size; a larger size is a larger network."""
    import torch

    from atom.models.backbones import PRETRAINED
    from atom.models.detector import Detector, DetectorSpec

    spec = compose("train", [f"detector={size}"]).detector
    assert spec.backbone in PRETRAINED and spec.input_size % 32 == 0
    detector = Detector(DetectorSpec(**spec, classes=["a", "b"])).eval()
    with torch.no_grad():
        boxes, scores = detector(torch.zeros(1, 3, spec.input_size, spec.input_size))
    assert boxes.shape[-1] == 4 and scores.shape[-1] == 2
    params = {s: sum(p.numel() for p in Detector(DetectorSpec(**{**compose("train", [f"detector={s}"]).detector,
                                                                 "classes": ["a"], "pretrained": False})).parameters())
              for s in SIZES}
    assert list(params.values()) == sorted(params.values()), params


def test_gpu_trainer_config_sets_mixed_precision():
    cfg = compose("train", ["trainer=gpu"])
    assert cfg.trainer.accelerator == "gpu" and cfg.trainer.precision == "16-mixed"


@pytest.mark.slow
def test_tiny_training_registers_a_model_version(trained, project):
    result, cfg = trained["result"], trained["cfg"]
    assert set(result) >= {"mAP50", "mAP50_95", "per_class", "model_name", "model_version"}
    assert result["split"] == "test" and set(result["per_class"]) == {"bus", "car", "pedestrian"}
    run_dir = Path(cfg.paths.run_dir)
    assert json.loads((run_dir / "metrics.json").read_text())["mAP50"] == result["mAP50"]
    assert (run_dir / "checkpoints" / "last.ckpt").exists()

    tracking.configure(project["outputs"])
    assert tracking.tracking_uri(project["outputs"]).startswith("sqlite:///")
    ref = tracking.resolve_model(f"{result['model_name']}@candidate")
    assert ref.version == result["model_version"]
    assert ref.tags["dataset.fingerprint"] == project["version"].fingerprint
    assert ref.tags["git.commit"]
    run = MlflowClient().get_run(ref.run_id)
    assert run.data.params["detector.backbone"] == "tf_efficientnet_lite0"
    assert run.data.metrics["test/mAP50"] == pytest.approx(result["mAP50"])  # the held-out split's, logged
    artifacts = {a.path for a in MlflowClient().list_artifacts(ref.run_id, "evaluation")}
    assert {"evaluation/metrics.json", "evaluation/pr_curves.png", "evaluation/predictions.jpg"} <= artifacts
    detector = tracking.load_detector(ref)
    assert detector.spec.classes == ["bus", "car", "pedestrian"]


@pytest.mark.slow
def test_resume_continues_an_interrupted_run(project):
    first = train(compose("train", ["experiment=sample", *tiny_overrides(project, "resumable")]))
    assert first["epochs"] == 1
    resumed = train(compose("train", ["experiment=sample", *tiny_overrides(project, "resumable"),
                                      "trainer.max_epochs=2", "resume=true"]))
    assert resumed["epochs"] == 2 and resumed["run_id"] == first["run_id"]


@pytest.mark.slow
def test_ema_weights_are_validated_checkpointed_and_registered(project):
    """callbacks.ema: the best checkpoint and the registered detector hold the averaged weights, not the raw ones
    the optimiser trained (those stay in the checkpoint's current_model_state for resuming)."""
    import torch

    result = train(compose("train", ["experiment=sample", *tiny_overrides(project, "ema"),
                                     "trainer.limit_train_batches=4", "callbacks.ema={decay:0.9,ramp_steps:1}",
                                     "tracking.model_name=atom-sample-ema"]))
    ckpt = torch.load(Path(project["outputs"]) / "runs" / "ema" / "checkpoints" / "best.ckpt", weights_only=False)
    averaged, raw = ckpt["state_dict"], ckpt["current_model_state"]
    head = [k for k in averaged if k.startswith("detector.") and averaged[k].is_floating_point() and "head" in k]
    assert head and any(not torch.equal(averaged[k], raw[k]) for k in head)
    tracking.configure(project["outputs"])
    registered = tracking.load_detector(tracking.resolve_model(f"atom-sample-ema/{result['model_version']}"))
    for k in head:
        assert torch.equal(registered.state_dict()[k.removeprefix("detector.")], averaged[k])


@pytest.mark.slow
def test_evaluate_recipe_writes_metrics(trained, project):
    cfg = compose("evaluate", [f"paths.datasets={project['datasets']}", f"paths.output_dir={project['outputs']}",
                               f"model={trained['result']['model_name']}@candidate"])
    result = evaluate(cfg)
    assert json.loads((Path(result["output"]) / "metrics.json").read_text())["mAP50"] == result["mAP50"]
    assert (Path(result["output"]) / "pr_curves.png").stat().st_size > 1000


@pytest.mark.slow
def test_evaluate_a_model_of_a_class_subset_in_its_own_order(project):
    """A base model for few-shot knows only some of the dataset's classes, in its own order: evaluation, its
    metrics and its PR-curve legend follow the model's classes (it once raised IndexError in the plot)."""
    result = train(compose("train", ["experiment=sample", *tiny_overrides(project, "subset"),
                                     "data.classes=[pedestrian,car]", "tracking.model_name=atom-sample-subset"]))
    cfg = compose("evaluate", [f"paths.datasets={project['datasets']}", f"paths.output_dir={project['outputs']}",
                               f"model={result['model_name']}/{result['model_version']}"])
    evaluated = evaluate(cfg)
    assert list(evaluated["per_class"]) == ["pedestrian", "car"]
    assert evaluated["mAP50"] == pytest.approx(result["mAP50"]) and evaluated["split"] == "test"


def _export_cfg(project, model, *extra):
    return compose("export", [f"paths.datasets={project['datasets']}", f"paths.output_dir={project['outputs']}",
                              f"model={model}", *extra])


@pytest.mark.slow
def test_onnx_export_is_verified_and_logged(trained, project):
    name, version = trained["result"]["model_name"], trained["result"]["model_version"]
    result = export(_export_cfg(project, f"{name}/{version}"))
    bundle = Path(result["bundle"])
    manifest = json.loads((bundle / "manifest.json").read_text())
    assert bundle.stat().st_mode & 0o077 != 0  # the umask's mode, not mkdtemp's 0700: serving users can read it
    for file, digest in manifest["files"].items():
        assert hashlib.sha256((bundle / file).read_bytes()).hexdigest() == digest
    assert set(manifest) >= {"model", "preprocess", "postprocess", "source"}
    assert manifest["source"]["dataset"]["fingerprint"] == project["version"].fingerprint
    model = onnx.load(str(bundle / "model.onnx"))
    assert model.opset_import[0].version >= 17
    assert model.graph.input[0].type.tensor_type.shape.dim[0].dim_param == "batch"  # dynamic batch
    verification = json.loads((bundle / "export_report.json").read_text())["verification"]
    assert verification["passed"] and verification["max_box_error_relative"] <= 1e-4
    assert verification["map_abs_diff"]["mAP50"] <= 0.001
    assert verification["raw_images"] > 0 and verification["max_score_error"] <= 1e-4
    mv = MlflowClient().get_model_version(name, version)
    assert mv.tags["bundle.onnx"] == result["mlflow_artifacts"]
    assert mv.tags["bundle.onnx"] == f"models:/{name}/{version}/bundles/onnx"
    logged = {a.path for a in MlflowClient().list_logged_model_artifacts(mv.source.split("/")[-1], "bundles/onnx")}
    assert "bundles/onnx/manifest.json" in logged


@pytest.mark.slow
def test_failed_verification_fails_the_export_and_keeps_the_old_bundle(trained, project):
    name, version = trained["result"]["model_name"], trained["result"]["model_version"]
    good = Path(export(_export_cfg(project, f"{name}/{version}"))["bundle"])
    before = (good / "manifest.json").read_bytes()
    # A negative tolerance cannot be met: the export must refuse and leave the previous bundle alone.
    with pytest.raises(ExportError, match="failed verification"):
        export(_export_cfg(project, f"{name}/{version}", "export.verify.map_tol=-1"))
    assert (good / "manifest.json").read_bytes() == before
    assert not [p for p in good.parent.iterdir() if p.name.startswith(".")]


def test_export_arguments_are_checked_against_the_formats_table():
    with pytest.raises(ExportError, match="does not accept"):
        resolve_format("onnx", {"half": True})
    with pytest.raises(ExportError, match="opset >= 17"):
        resolve_format("onnx", {"opset": 13})
    with pytest.raises(ExportError, match="unknown export format"):
        resolve_format("coreml")
    assert set(FORMATS) >= {"onnx", "onnx-fp16", "onnx-int8", "openvino", "tensorrt"}
    with pytest.raises(ExportError, match=r"calibration_method='kl'; choose one of \['minmax', 'entropy'"):
        resolve_format("onnx-int8", {"calibration_method": "kl"})
    with pytest.raises(ExportError, match="precision='int4'"):
        resolve_format("openvino", {"precision": "int4"})


@pytest.mark.slow
@pytest.mark.parametrize("config", ["onnx-fp16", "onnx-int8", "openvino", "openvino-int8"])
def test_every_format_exports_a_verified_bundle_that_the_runtime_runs(trained, project, config):
    from atom.runtime import Bundle

    name = trained["result"]["model_name"]
    extra = ["export.args.calibration_images=16"] if "int8" in config else []
    before = set(Path.cwd().iterdir())
    result = export(_export_cfg(project, f"{name}@candidate", f"export={config}", *extra))
    assert set(Path.cwd().iterdir()) == before  # the quantization tools' temporary files went elsewhere
    assert result["verification"]["passed"] and result["size_bytes"] > 0
    assert result["latency_ms_batch8"][result_format(config)] > 0
    if "int8" in config:  # calibrated on the model's training split, as many images as asked
        assert result["calibration"] == {"split": "train", "images": 16}
    bundle = Bundle(result["bundle"])
    assert bundle.manifest["model"]["format"] == result_format(config)
    image = project["version"].root / project["version"].coco("val")["images"][0]["file_name"]
    assert len(bundle.detect_files([image])[0].scores) > 0  # the tiny model's low threshold keeps some boxes
    tags = MlflowClient().get_model_version(name, result["model"].rsplit("/", 1)[1]).tags  # the version exported
    assert tags[f"bundle.{result_format(config)}"].endswith(f"bundles/{result_format(config)}")


def result_format(config: str) -> str:
    return "openvino" if config.startswith("openvino") else config


@pytest.mark.slow
def test_without_tensorrt_the_bundle_carries_what_the_target_builds_the_engine_from(trained, project):
    from exporters import tensorrt

    if tensorrt.available():
        pytest.skip("TensorRT and a GPU are here: the engine is built instead")
    name = trained["result"]["model_name"]
    result = export(_export_cfg(project, f"{name}@candidate", "export=tensorrt", "export.args.precision=int8",
                                "export.args.calibration_images=16"))
    bundle, size = Path(result["bundle"]), trained["cfg"].detector.input_size
    manifest = json.loads((bundle / "manifest.json").read_text())
    assert manifest["model"]["file"] == "model.onnx" and manifest["model"]["engine"]["built"] is False
    assert set(manifest["files"]) == {"model.onnx", "build_engine.sh", "calibration.cache", "export_report.json"}
    assert result["verification"]["passed"] and result["calibration"]["images"] == 16
    script = (bundle / "build_engine.sh").read_text()
    for flag in ["--onnx=model.onnx", "--saveEngine=model.engine", f"--maxShapes=images:8x3x{size}x{size}",
                 f"--minShapes=images:1x3x{size}x{size}", "--int8", "--fp16", "--calib=calibration.cache"]:
        assert flag in script
    header, scales = tensorrt.read_calibration_cache(bundle / "calibration.cache")
    assert header == "TRT-101300-EntropyCalibration2"
    graph = onnx.load(str(bundle / "model.onnx")).graph
    tensors = {i.name for i in graph.input} | {o for n in graph.node for o in n.output}
    assert set(scales) <= tensors and len(scales) > 50  # every activation of the graph, by its ONNX name
    assert 100 / 127 < scales["images"] <= 255 / 127  # pixels 0..255: the input's scale is its max / 127


def test_the_calibration_cache_header_names_tensorrts_version_as_tensorrt_does():
    from exporters.tensorrt import trt_header_version

    assert trt_header_version("8.6.1") == 8601 and trt_header_version("10.13.0") == 101300
    assert trt_header_version("10.0.1") == 100001


@pytest.mark.slow
def test_where_tensorrt_imports_the_engine_is_built_and_records_its_version_and_gpu(trained, project):
    from exporters import tensorrt

    if not tensorrt.available():
        pytest.skip("needs TensorRT and a CUDA GPU: TensorRT cannot be installed on our CPU machines")
    result = export(_export_cfg(project, f"{trained['result']['model_name']}@candidate", "export=tensorrt"))
    manifest = json.loads((Path(result["bundle"]) / "manifest.json").read_text())
    assert manifest["model"]["file"] == "model.engine" and manifest["model"]["engine"]["built"] is True
    assert manifest["model"]["engine"]["tensorrt_version"] and result["verification"]["passed"]


@pytest.mark.slow
def test_unknown_model_is_a_clear_error(trained, project):
    with pytest.raises(LookupError, match="not found in the registry"):
        export(_export_cfg(project, "no-such-model@candidate"))


@pytest.mark.slow
@pytest.mark.shared
@pytest.mark.parametrize("experiment,fmt,path", [("vehicles", "yolo", "vehicles"), ("bccd", "voc", "bccd")])
def test_real_dataset_experiments_train(experiment, fmt, path, shared_datasets, tmp_path):
    from atom.data.formats import read_source
    from atom.data.version import write_version

    write_version(read_source(fmt, shared_datasets / path), tmp_path / "datasets", experiment)
    result = train(compose("train", [f"experiment={experiment}", *tiny_overrides(
        {"datasets": tmp_path / "datasets", "outputs": tmp_path / "outputs"}, experiment), "data.num_workers=0"]))
    assert result["model_name"] == f"atom-{experiment}" and result["epochs"] == 1


@pytest.mark.slow
def test_onnx_with_nms_inside_the_graph_keeps_what_the_detector_keeps(trained, project, tmp_path):
    import numpy as np
    import torch

    from atom.runtime import Bundle
    from atom.runtime.bundle import letterbox, read_rgb
    from exporters import onnx as onnx_export

    name = trained["result"]["model_name"]
    detector = tracking.load_detector(tracking.resolve_model(f"{name}@candidate"))
    size, version = detector.spec.input_size, project["version"]
    batch = np.stack([letterbox(read_rgb(version.root / im["file_name"]), size)[0]
                      for im in version.coco("val")["images"][:4]]).transpose(0, 3, 1, 2).astype(np.float32)
    with torch.no_grad():  # a threshold that leaves 300 candidates an image: fewer than pre_nms_top_k, which the
        scores = detector(torch.from_numpy(batch))[1]  # graph does not apply
    detector.spec.score_thresh = float(scores.flatten(1).topk(300, dim=1).values[:, -1].max())
    path = onnx_export.export(detector, torch.zeros(1, 3, size, size), tmp_path, nms=True)
    assert "NonMaxSuppression" in {n.op_type for n in onnx.load(str(path)).graph.node}
    got = onnx_export.runner(path).detections(torch.from_numpy(batch), detector.spec)
    expected = detector.predict(torch.from_numpy(batch))
    assert sum(len(e["scores"]) for e in expected) > 0
    for g, e in zip(got, expected):
        key = lambda d: sorted(zip(d["labels"].tolist(), np.round(d["scores"].numpy(), 4).tolist()))  # noqa: E731
        assert key(g) == key(e)
    # the recipe: the bundle's manifest says NMS ran in the graph, and the runtime reads its detections
    result = export(_export_cfg(project, f"{name}@candidate", "export.args.nms=true"))
    assert result["verification"]["passed"]
    bundle = Bundle(result["bundle"])
    assert bundle.nms_in_graph and bundle.manifest["model"]["outputs"][-1]["name"] == "detections"
    image = version.root / version.coco("val")["images"][0]["file_name"]
    assert len(bundle.detect_files([image])[0].scores) > 0
    export(_export_cfg(project, f"{name}@candidate"))  # the plain bundle again, for the tests after this one
