"""ONNX export (TorchScript exporter, opset >= 17, dynamic batch) and an onnxruntime runner; optionally with NMS
inside the graph (`nms=true`: ONNX's NonMaxSuppression, which TensorRT also accepts)."""

from __future__ import annotations

from pathlib import Path

import torch
from torch import nn

INPUT, OUTPUTS = "images", ("boxes", "scores")
DETECTIONS = "detections"  # with nms=true: (K, 7) rows of batch index, x0, y0, x1, y1, score, class


def export(detector, sample: torch.Tensor, out_dir: Path, opset: int = 17, dynamic_batch: bool = True,
           simplify: bool = True, nms: bool = False, **_) -> Path:
    """The detector as ONNX. `simplify` runs onnxslim (constant folding, Pad into Conv, ...): exact rewrites that
    made the Lite0 graph 30 % faster in ONNX Runtime, mostly by folding the TF-"same" pads of the stride-2
    convolutions into them (measured in benchmarks/latency.py). `nms`: the graph also outputs the detections
    after class-wise NMS (the raw outputs stay, for verification and for callers that post-process themselves)."""
    import warnings

    import onnx

    path = Path(out_dir) / "model.onnx"
    outputs = [*OUTPUTS, DETECTIONS] if nms else list(OUTPUTS)
    axes = {n: {0: "batch"} for n in (INPUT, *OUTPUTS)} if dynamic_batch else {}
    if nms:
        axes[DETECTIONS] = {0: "detections"}
    with warnings.catch_warnings():  # the feature maps' sizes become constants: only the batch size varies
        warnings.simplefilter("ignore", torch.jit.TracerWarning)
        # dynamo=False: the dynamo exporter needs onnxscript and is not needed for this static graph.
        torch.onnx.export(WithNMS(detector).eval() if nms else detector.eval(), sample, str(path),
                          opset_version=int(opset), dynamo=False, input_names=[INPUT], output_names=outputs,
                          dynamic_axes=axes or None, do_constant_folding=True)
    if simplify:
        import onnxslim

        onnx.save(onnxslim.slim(str(path)), str(path))
    onnx.checker.check_model(str(path))
    return path


def runner(path: Path, threads: int = 2, **_):
    """A function from a float NCHW torch batch to (boxes, scores) torch tensors, computed by onnxruntime. For a
    graph with NMS inside, `detect.detections(images, spec)` gives its post-processed detections per image."""
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.intra_op_num_threads = int(threads)
    session = ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])

    def detect(images: torch.Tensor):
        boxes, scores = session.run(list(OUTPUTS), {INPUT: images.contiguous().numpy()})
        return torch.from_numpy(boxes), torch.from_numpy(scores)

    if DETECTIONS in [o.name for o in session.get_outputs()]:
        def detections(images: torch.Tensor, spec) -> list[dict]:
            from atom.runtime.bundle import cap_per_group

            rows = session.run([DETECTIONS], {INPUT: images.contiguous().numpy()})[0]
            return [{k: torch.from_numpy(v) for k, v in cap_per_group(rows[rows[:, 0] == i], spec.class_groups,
                                                                     spec.max_detections).items()}
                    for i in range(len(images))]

        detect.detections = detections
    return detect


class NonMaxSuppression(torch.autograd.Function):
    """ONNX's NonMaxSuppression: boxes (B, N, 4), scores (B, C, N) -> selected (K, 3) rows of batch, class, box
    index: per image and class, boxes scoring over `score_threshold` by decreasing score, dropping a box whose IoU
    with a kept one exceeds `iou`, at most `max_per_class`. The eager forward computes the same (for tracing)."""

    @staticmethod
    def forward(ctx, boxes, scores, max_per_class: int, iou: float, score_threshold: float):
        from torchvision.ops import nms

        out = [torch.zeros(0, 3, dtype=torch.long)]
        for b in range(boxes.shape[0]):
            for c in range(scores.shape[1]):
                index = (scores[b, c] > score_threshold).nonzero().flatten()
                kept = index[nms(boxes[b, index], scores[b, c, index], iou)[:max_per_class]]
                out.append(torch.stack([torch.full_like(kept, b), torch.full_like(kept, c), kept], 1))
        return torch.cat(out)

    @staticmethod
    def symbolic(g, boxes, scores, max_per_class, iou, score_threshold):
        return g.op("NonMaxSuppression", boxes, scores,
                    g.op("Constant", value_t=torch.tensor([max_per_class], dtype=torch.long)),
                    g.op("Constant", value_t=torch.tensor([iou], dtype=torch.float)),
                    g.op("Constant", value_t=torch.tensor([score_threshold], dtype=torch.float)))


class WithNMS(nn.Module):
    """The detector plus class-wise NMS (its spec's threshold, IoU and cap per class) as a third output."""

    def __init__(self, detector):
        super().__init__()
        self.detector, self.spec = detector, detector.spec

    def forward(self, images):
        boxes, scores = self.detector(images)
        selected = NonMaxSuppression.apply(boxes, scores.transpose(1, 2).contiguous(), self.spec.max_detections,
                                           self.spec.nms_iou, self.spec.score_thresh)
        b, c, i = selected[:, 0], selected[:, 1], selected[:, 2]
        detections = torch.cat([b[:, None].float(), boxes[b, i], scores[b, i, c][:, None], c[:, None].float()], 1)
        return boxes, scores, detections
