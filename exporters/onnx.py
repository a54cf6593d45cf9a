"""ONNX export (TorchScript exporter, opset >= 17, dynamic batch) and an onnxruntime runner."""

from __future__ import annotations

from pathlib import Path

import torch

INPUT, OUTPUTS = "images", ("boxes", "scores")


def export(detector, sample: torch.Tensor, out_dir: Path, opset: int = 17, dynamic_batch: bool = True,
           simplify: bool = True, **_) -> Path:
    """The detector as ONNX. `simplify` runs onnxslim (constant folding, Pad into Conv, ...): exact rewrites that
    made the Lite0 graph 30 % faster in ONNX Runtime, mostly by folding the TF-"same" pads of the stride-2
    convolutions into them (measured in benchmarks/latency.py)."""
    import warnings

    import onnx

    path = Path(out_dir) / "model.onnx"
    axes = {n: {0: "batch"} for n in (INPUT, *OUTPUTS)} if dynamic_batch else None
    with warnings.catch_warnings():  # the feature maps' sizes become constants: only the batch size varies
        warnings.simplefilter("ignore", torch.jit.TracerWarning)
        # dynamo=False: the dynamo exporter needs onnxscript and is not needed for this static graph.
        torch.onnx.export(detector.eval(), sample, str(path), opset_version=int(opset), dynamo=False,
                          input_names=[INPUT], output_names=list(OUTPUTS), dynamic_axes=axes,
                          do_constant_folding=True)
    if simplify:
        import onnxslim

        onnx.save(onnxslim.slim(str(path)), str(path))
    onnx.checker.check_model(str(path))
    return path


def runner(path: Path, threads: int = 2, **_):
    """A function from a float NCHW torch batch to (boxes, scores) torch tensors, computed by onnxruntime."""
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.intra_op_num_threads = int(threads)
    session = ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])

    def detect(images: torch.Tensor):
        boxes, scores = session.run(list(OUTPUTS), {INPUT: images.contiguous().numpy()})
        return torch.from_numpy(boxes), torch.from_numpy(scores)

    return detect
