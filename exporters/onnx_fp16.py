"""ONNX with float16 weights and activations (inputs and outputs stay float32): half the file; faster where the
runtime has float16 kernels (GPUs, TensorRT). ONNX Runtime's CPU provider computes most operators in float32 behind
inserted casts, so on CPU it is no faster (export_report.json measures it)."""

from __future__ import annotations

from pathlib import Path

from exporters import onnx as onnx_export

runner = onnx_export.runner


def export(detector, sample, out_dir: Path, **args) -> Path:
    import onnx
    from onnxruntime.transformers.float16 import convert_float_to_float16

    import onnxslim

    path = onnx_export.export(detector, sample, out_dir, **args)
    # The converter appends the input casts after the nodes that read them; onnxslim sorts the graph again.
    onnx.save(onnxslim.slim(convert_float_to_float16(onnx.load(str(path)), keep_io_types=True)), str(path))
    onnx.checker.check_model(str(path))
    return path
