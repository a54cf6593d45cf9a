"""Few-shot adaptation (`atom adapt`): a tiny base detector trained on two of the sample's classes, adapted to the
third through the Hydra recipe; the generalized model must keep the base head's outputs exactly; bad requests
fail before training."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest
import torch

from atom.data.version import DatasetError
from atom.models.detector import CosineClassifier
from tests.conftest import tiny_overrides

pytestmark = pytest.mark.slow  # every test here trains a tiny base detector or adapts one


def adapt_overrides(project, base: str, **extra) -> list[str]:
    """Shrink an adaptation to seconds through config only (without the export, where a test passes no export=)."""
    values = {"model": base, "shots": 2, "fewshot.min_steps": 3, "fewshot.max_steps": 3, "fewshot.batch_size": 2,
              "fewshot.num_workers": 0, "progress": "false",
              "eval_split": "test", "tracking.model_name": "atom-sample-fewshot", **extra}
    return [f"paths.datasets={project['datasets']}", f"paths.output_dir={project['outputs']}",
            *[f"{k}={v}" for k, v in values.items()], *([] if "export" in extra else ["~export"])]


@pytest.fixture(scope="module")
def base_model(project):
    """A tiny base detector of car and bus (pedestrian boxes are background to it)."""
    os.environ.pop("MLFLOW_TRACKING_URI", None)
    from recipes import compose
    from recipes.train import train

    cfg = compose("train", [*tiny_overrides(project, "tiny-base"), "data.classes=[car,bus]",
                            "tracking.model_name=atom-sample-base", "trainer.limit_train_batches=3"])
    result = train(cfg)
    return f"{result['model_name']}/{result['model_version']}"


def test_generalized_adaptation_keeps_base_outputs(project, base_model):
    from atom import tracking
    from recipes import compose
    from recipes.adapt import adapt

    result = adapt(compose("adapt", adapt_overrides(project, base_model, seed=1, export="onnx",
                                                    **{"fewshot.negatives": 1, "fewshot.scale": 2,
                                                       "fewshot.copy_paste": 1.0})))
    assert result["mode"] == "generalized"
    assert result["negative_pool"] > 0  # the base's training images that hold a car or a bus
    manifest = json.loads((project["outputs"] / "bundles" / result["model_name"] / f"v{result['model_version']}"
                           / "onnx" / "manifest.json").read_text())  # the two-head graph exported and verified
    assert manifest["model"]["classes"] == ["car", "bus", "pedestrian"]
    assert manifest["postprocess"]["class_groups"]["sizes"] == [2, 1]
    assert "1 head(s) with a backbone + FPN of their own, at 2x the input resolution" \
        in manifest["model"]["architecture"]  # the new head at twice the base's resolution
    per_class = {c: v["AP50"] for c, v in result["per_class"].items()}  # nAP50/bAP50: means over the right classes
    assert result["nAP50"] == pytest.approx(per_class["pedestrian"])
    assert result["bAP50"] == pytest.approx((per_class["car"] + per_class["bus"]) / 2)
    ref = tracking.resolve_model(f"{result['model_name']}/{result['model_version']}")
    assert ref.tags["base.model"] == f"models:/{base_model}"
    shots = json.loads(ref.tags["fewshot.shot_image_ids"])
    assert list(shots) == ["pedestrian"] and len(shots["pedestrian"]) == 2

    base = tracking.load_detector(tracking.resolve_model(base_model))
    adapted = tracking.load_detector(ref)
    assert adapted.spec.classes == ["car", "bus", "pedestrian"] and adapted.spec.class_groups == [2, 1]
    assert adapted.spec.feature_scales == (1.0, 2.0) and adapted.spec.input_size == base.spec.input_size
    # transfer=imagenet (default): the new head reads a backbone of its own, still the ImageNet one (frozen)
    from atom.models.backbones import create_backbone

    assert adapted.spec.own_features == (1,)
    imagenet = create_backbone(base.spec.backbone, pretrained=True).state_dict()
    own = adapted.own_features["1"].backbone.state_dict()
    assert all(torch.equal(own[k], v) for k, v in imagenet.items() if not k.endswith("num_batches_tracked"))
    images = torch.rand(2, 3, 128, 128) * 255
    with torch.no_grad():
        base_boxes, base_scores = base(images)
        boxes, scores = adapted(images)
    n = base_boxes.shape[1]  # the base head's locations come first, unchanged; the new head's: 4x as many
    assert boxes.shape[1] == 5 * n
    assert torch.equal(boxes[:, :n], base_boxes) and torch.equal(scores[:, :n, :2], base_scores)
    assert torch.all(scores[:, :n, 2] == 0) and torch.all(scores[:, n:, :2] == 0)
    # ... and after post-processing: the new head's detections never displace the base classes' (caps per head)
    for ours, theirs in zip(adapted.postprocess(boxes, scores), base.postprocess(base_boxes, base_scores)):
        kept = ours["labels"] < 2
        assert torch.equal(ours["boxes"][kept], theirs["boxes"]) and torch.equal(ours["scores"][kept], theirs["scores"])


def test_novel_adaptation(project, base_model):
    from atom import tracking
    from recipes import compose
    from recipes.adapt import adapt

    result = adapt(compose("adapt", adapt_overrides(project, base_model, mode="novel", export="onnx", **{
        "fewshot.transfer": "detector", "fewshot.classifier": "cosine", "fewshot.scale": 1.5,
        "fewshot.optim.lr": 1e-4})))  # 3 steps of at most ~lr each
    assert result["transfer"] == "detector" and "bAP50" not in result
    assert (Path(result["bundle"]) / "model.onnx").exists()  # the cosine classifier exported and verified
    adapted = tracking.load_detector(tracking.resolve_model(f"{result['model_name']}/{result['model_version']}"))
    base = tracking.load_detector(tracking.resolve_model(base_model))
    assert adapted.spec.classes == ["pedestrian"] and len(adapted.heads) == 1
    assert adapted.spec.input_size == base.spec.input_size * 1.5  # novel mode's scale: real pixels
    assert adapted.spec.cosine_heads == (0,) and isinstance(adapted.heads[0].cls[0], CosineClassifier)
    # detector transfer: the backbone (frozen) is the base model's; neck and towers start from it (3 small steps)
    ours, theirs = adapted.state_dict(), base.state_dict()
    assert torch.equal(ours["backbone.blocks.5.0.conv_pw.weight"], theirs["backbone.blocks.5.0.conv_pw.weight"])
    for name in ("neck.lateral.0.weight", "heads.0.towers.0.0.0.weight"):
        assert torch.allclose(ours[name], theirs[name], atol=1e-2)


def test_plain_finetune_candidate_trains_the_imagenet_backbone_past_its_frozen_stages(project, base_model):
    """fewshot=finetune (the plain fine-tune inside `atom adapt`): the backbone's later stages learn, the stem and
    first stages (detector.freeze_stages) stay ImageNet's, the head starts random, no base data is read."""
    from atom import tracking
    from atom.models.backbones import create_backbone
    from recipes import compose
    from recipes.adapt import adapt

    cfg = compose("adapt", [*adapt_overrides(project, base_model, mode="novel"), "fewshot=finetune"])
    assert cfg.fewshot.unfreeze_backbone and cfg.fewshot.head_init == "fresh" and cfg.fewshot.negatives == 0
    result = adapt(cfg)
    assert result["negative_pool"] == 0 and result["head_init"] == "fresh"
    adapted = tracking.load_detector(tracking.resolve_model(f"{result['model_name']}/{result['model_version']}"))
    base = tracking.load_detector(tracking.resolve_model(base_model))
    imagenet = create_backbone(base.spec.backbone, out_indices=(2, 3, 4), pretrained=True).state_dict()
    ours = adapted.backbone.state_dict()
    assert torch.equal(ours["conv_stem.weight"], imagenet["conv_stem.weight"])
    assert torch.equal(ours["blocks.1.0.conv_pw.weight"], imagenet["blocks.1.0.conv_pw.weight"])
    assert not torch.equal(ours["blocks.5.0.conv_pw.weight"], imagenet["blocks.5.0.conv_pw.weight"])
    assert not torch.equal(adapted.heads[0].towers.state_dict()["0.0.0.weight"],
                           base.heads[0].towers.state_dict()["0.0.0.weight"])


@pytest.mark.parametrize("mode", ["generalized", "novel"])
def test_the_new_head_starts_from_the_base_head_or_fresh(project, base_model, mode):
    """head_init=base: the new head's FPN (its own, on the ImageNet backbone), towers and box regression start as
    the base detector's; fresh: random. The new classifier starts at the focal-loss prior either way."""
    import math

    from atom import fewshot, tracking

    base = tracking.load_detector(tracking.resolve_model(base_model))
    plan = fewshot.Plan(mode, list(base.spec.classes), ["pedestrian"])
    new = len(base.heads) if mode == "generalized" else 0
    convs = lambda m: {k: v for k, v in m.state_dict().items() if v.ndim == 4}  # noqa: E731
    for head_init in fewshot.HEAD_INITS:
        detector = fewshot.build(base, plan, "imagenet", head_init=head_init)
        neck = detector.own_features[str(new)].neck if mode == "generalized" else detector.neck
        pairs = [(neck, base.neck), (detector.heads[new].towers, base.heads[0].towers),
                 (detector.heads[new].reg, base.heads[0].reg)]
        same = [torch.equal(v, convs(theirs)[k]) for ours, theirs in pairs for k, v in convs(ours).items()]
        assert len(same) > 6 and (all(same) if head_init == "base" else not any(same))
        prior = -math.log(99)
        assert all(torch.allclose(c.bias, torch.full_like(c.bias, prior)) for c in detector.heads[new].cls)


@pytest.mark.parametrize("extra, message", [
    ({"shots": 1000}, "pool holds only"),
    ({"classes": "[car]"}, "collide with base model"),
    ({"classes": "[giraffe]"}, "not in the dataset's classes"),
    ({"detector.input_size": 320}, "input_size"),
    ({"mode": "sideways"}, "mode 'sideways'"),
    ({"fewshot.transfer": "detector", "fewshot.unfreeze_backbone": "true"}, "use transfer=imagenet or mode=novel"),
    ({"fewshot.transfer": "detector", "fewshot.scale": 2}, "use transfer=imagenet or mode=novel"),
    ({"fewshot.scale": 1.1}, "positive multiple of 32"),
])
def test_bad_requests_fail_before_training(project, base_model, extra, message):
    from atom.fewshot import AdaptationError
    from recipes import compose
    from recipes.adapt import adapt

    runs = project["outputs"] / "runs"
    before = sorted(p.name for p in runs.iterdir()) if runs.exists() else []
    with pytest.raises(AdaptationError, match=message):
        adapt(compose("adapt", adapt_overrides(project, base_model, run_name="bad-request", **extra)))
    assert sorted(p.name for p in runs.iterdir()) == before  # no run started


@pytest.mark.parametrize("lineage, error, message", [
    ({}, LookupError, "no dataset lineage tags"),
    ({"dataset.name": "elsewhere", "dataset.version": "0123"}, DatasetError, "trained on dataset elsewhere/0123"),
])
def test_negatives_need_the_base_models_training_data(project, base_model, lineage, error, message):
    """Known negatives come from the base model's training data (its lineage): where it cannot be found, the
    adaptation fails before training and says how to go on without them."""
    from mlflow import MlflowClient

    from atom import tracking
    from recipes import compose
    from recipes.adapt import adapt

    client, ref = MlflowClient(), tracking.resolve_model(base_model)
    if not client.search_registered_models("name='atom-sample-orphan'"):
        client.create_registered_model("atom-sample-orphan")
    orphan = client.create_model_version("atom-sample-orphan", client.get_model_version(ref.name, ref.version).source,
                                         ref.run_id, tags=lineage)
    with pytest.raises(error, match=f"{message}.*fewshot.negatives=0"):
        adapt(compose("adapt", adapt_overrides(project, f"atom-sample-orphan/{orphan.version}", run_name="orphan",
                                               **{"fewshot.negatives": 1})))
    assert not (project["outputs"] / "runs" / "orphan").exists()


def test_class_without_examples_is_reported(project, base_model, tmp_path):
    """A requested class that no training image holds is named in the error."""
    from atom import fewshot
    from atom.data.version import open_version

    version = open_version(project["datasets"], "sample")
    with pytest.raises(fewshot.AdaptationError, match=r"no 'test' image has a box of \['pedestrian'\]"):
        fewshot.sample_shots(_without(version, "pedestrian", tmp_path), "test", ["pedestrian"], 1, 0)


def _without(version, cls: str, tmp_path):
    """A copy of the version's annotations with every box of `cls` removed from the test split."""
    import shutil

    from atom.data.version import DatasetVersion

    root = tmp_path / "version"
    shutil.copytree(version.root / "annotations", root / "annotations")
    shutil.copy(version.root / "card.json", root / "card.json")
    coco = json.loads((root / "annotations" / "test.json").read_text())
    drop = next(c["id"] for c in coco["categories"] if c["name"] == cls)
    coco["annotations"] = [a for a in coco["annotations"] if a["category_id"] != drop]
    (root / "annotations" / "test.json").write_text(json.dumps(coco))
    return DatasetVersion(root)


def test_cli_adapt_reports_a_bad_request(project, base_model, capsys):
    from atom.cli import main

    code = main(["adapt", *adapt_overrides(project, base_model, shots=1000)])
    assert code == 1
    assert "shots=1000" in capsys.readouterr().err


@pytest.mark.shared
def test_adapt_on_real_vehicles(shared_datasets, tmp_path):
    """The benchmark's setting, shrunk: base detector without Motorcycle and Ambulance, then one shot of each."""
    from atom.data.formats import read_source
    from atom.data.version import write_version
    from recipes import compose
    from recipes.adapt import adapt
    from recipes.train import train

    dirs = {"datasets": tmp_path / "datasets", "outputs": tmp_path / "outputs"}
    write_version(read_source("yolo", shared_datasets / "vehicles"), dirs["datasets"], "vehicles")
    base = train(compose("train", ["experiment=vehicles_base", *tiny_overrides(dirs, "vehicles-base"),
                                   "data.num_workers=0"]))
    assert base["model_name"] == "atom-vehicles-base"
    result = adapt(compose("adapt", [*adapt_overrides(dirs, f"atom-vehicles-base/{base['model_version']}",
                                                      shots=1, export="onnx"), "data=vehicles"]))
    assert result["shot_images"] <= 2 and set(result["per_class"]) == {"Bus", "Car", "Truck", "Ambulance", "Motorcycle"}
    assert {"nAP50", "bAP50"} <= set(result)
    assert (Path(result["bundle"]) / "model.onnx").exists()  # verified on real images of the scene
