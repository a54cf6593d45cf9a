"""Export a registered model version to a serving bundle. FORMATS is the one table of what can be exported,
which arguments each format accepts (with defaults and, where they are few, their choices), what it needs installed
and whether it calibrates on training images; arguments are checked against it before any work.

    bundle/
        model.onnx | model.xml + model.bin | model.engine    the network: float NCHW 0..255 in, decoded boxes +
                                                             per-class scores out (every location, before NMS)
        manifest.json               what the model is, how to pre/post-process, where it came from, file sha256s
        export_report.json          how the exported model was verified against PyTorch, its latency and size
"""

from __future__ import annotations

import importlib
import importlib.util
from dataclasses import dataclass, field

from atom.errors import AtomError

ONNX = {"opset": 17, "dynamic_batch": True, "simplify": True, "threads": 2}
FP32_ONNX = {**ONNX, "nms": False}  # nms: class-wise NMS inside the graph (ONNX NonMaxSuppression; TensorRT takes it)
CALIBRATION = {"calibration_images": 300, "float_outputs": True}  # see exporters/calibration.py


@dataclass(frozen=True)
class ExportFormat:
    module: str  # exporters.<module>: export(detector, sample, out_dir, calibration, **args) -> file; runner(file)
    file: str  # the model file's name in the bundle
    args: dict = field(default_factory=dict)  # accepted arguments and their defaults
    requires: tuple[str, ...] = ()  # importable modules the format needs
    choices: dict = field(default_factory=dict)  # argument -> its allowed values
    calibrates: bool = False  # reads training images (post-training quantization)
    min_opset: int = 17


FORMATS: dict[str, ExportFormat] = {
    "onnx": ExportFormat("exporters.onnx", "model.onnx", FP32_ONNX, ("onnx", "onnxruntime", "onnxslim")),
    "onnx-fp16": ExportFormat("exporters.onnx_fp16", "model.onnx", ONNX, ("onnx", "onnxruntime", "onnxslim")),
    "onnx-int8": ExportFormat("exporters.onnx_int8", "model.onnx",
                              {**ONNX, **CALIBRATION, "calibration_method": "minmax", "per_channel": True},
                              ("onnx", "onnxruntime", "onnxslim"),
                              {"calibration_method": ("minmax", "entropy", "percentile")}, calibrates=True),
    "openvino": ExportFormat("exporters.openvino", "model.xml",
                             {**ONNX, **CALIBRATION, "precision": "fp32"}, ("onnx", "onnxslim", "openvino"),
                             {"precision": ("fp32", "int8")}, calibrates=True),
    # Built here where TensorRT imports (and a GPU is present); elsewhere the bundle carries model.onnx, the
    # trtexec script and the INT8 calibration cache, and the target builds the engine (exporters/tensorrt.py).
    "tensorrt": ExportFormat("exporters.tensorrt", "model.engine",
                             {"opset": 17, "simplify": True, "precision": "fp16", "workspace_gb": 2, "max_batch": 8,
                              "calibration_images": 300, "trt_version": "10.13.0", "threads": 2},
                             ("onnx", "onnxruntime", "onnxslim"), {"precision": ("fp32", "fp16", "int8")},
                             calibrates=True),
}


class ExportError(AtomError):
    """An export cannot be made or did not verify; nothing is written to the bundle folder."""


class FormatUnavailable(ExportError):
    """The format's converter is not installed here (e.g. openvino)."""


def resolve_format(name: str, args: dict | None = None) -> tuple[ExportFormat, dict]:
    """The format and its full arguments (defaults filled in). Unknown names or arguments are errors."""
    if name not in FORMATS:
        raise ExportError(f"unknown export format {name!r}; choose one of {sorted(FORMATS)}")
    fmt = FORMATS[name]
    args = dict(args or {})
    unknown = sorted(set(args) - set(fmt.args))
    if unknown:
        raise ExportError(f"format {name!r} does not accept {unknown}; it accepts {sorted(fmt.args)}")
    merged = {**fmt.args, **args}
    for arg, allowed in fmt.choices.items():
        if merged[arg] not in allowed:
            raise ExportError(f"format {name!r}: {arg}={merged[arg]!r}; choose one of {list(allowed)}")
    if "opset" in merged and int(merged["opset"]) < fmt.min_opset:
        raise ExportError(f"format {name!r} needs opset >= {fmt.min_opset}, got {merged['opset']}")
    missing = [m for m in fmt.requires if importlib.util.find_spec(m) is None]
    if missing:
        raise FormatUnavailable(f"format {name!r} needs {missing}, which are not installed here")
    return fmt, merged


def format_module(fmt: ExportFormat):
    return importlib.import_module(fmt.module)
