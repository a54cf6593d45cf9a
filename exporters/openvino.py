"""OpenVINO IR (model.xml + model.bin) for the Intel CPUs of edge boxes beside city cameras: converted from the ONNX
export, fp32, or INT8 by NNCF post-training quantization calibrated on training images (exporters/calibration.py),
with the head's output layers kept in float (`float_outputs`)."""

from __future__ import annotations

import shutil
from pathlib import Path

import torch

from exporters import onnx as onnx_export
from exporters.calibration import FLOAT_OUTPUTS


def export(detector, sample, out_dir: Path, calibration, precision: str = "fp32", calibration_images: int = 300,
           float_outputs: bool = True, **args) -> Path:
    import openvino as ov

    out_dir = Path(out_dir)
    onnx_dir = out_dir / "onnx"
    onnx_dir.mkdir()
    model = ov.convert_model(str(onnx_export.export(detector, sample, onnx_dir, **args)))
    if precision == "int8":
        import nncf

        batches = calibration(int(calibration_images))
        ignored = nncf.IgnoredScope(patterns=[f".*{FLOAT_OUTPUTS}.*"], validate=False) if float_outputs else None
        model = nncf.quantize(model, nncf.Dataset(batches), subset_size=len(batches),
                              preset=nncf.QuantizationPreset.MIXED, ignored_scope=ignored)
    path = out_dir / "model.xml"
    ov.save_model(model, str(path), compress_to_fp16=False)  # fp16 weights would be a third precision
    shutil.rmtree(onnx_dir)
    return path


def runner(path: Path, threads: int = 2, **_):
    """A function from a float NCHW torch batch to (boxes, scores), computed by OpenVINO on the CPU."""
    import openvino as ov

    # f32: CPUs with bf16 support would otherwise run a fp32 model in bf16
    compiled = ov.Core().compile_model(str(path), "CPU", {"INFERENCE_NUM_THREADS": int(threads),
                                                          "INFERENCE_PRECISION_HINT": "f32"})
    outputs = [compiled.output(name) for name in onnx_export.OUTPUTS]

    def detect(images: torch.Tensor):
        result = compiled(images.contiguous().numpy())
        return tuple(torch.from_numpy(result[o].copy()) for o in outputs)

    return detect
