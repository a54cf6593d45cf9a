"""Export a registered model version to a serving bundle. FORMATS is the one table of what can be exported,
which arguments each format accepts (with defaults) and what it needs installed; arguments are checked against it.

    bundle/
        model.onnx | model.engine   the network: float NCHW 0..255 in, decoded boxes + per-class scores out
        manifest.json               what the model is, how to pre/post-process, where it came from, file sha256s
        export_report.json          how the exported model was verified against PyTorch, and its latency
"""

from __future__ import annotations

import importlib
import importlib.util
from dataclasses import dataclass, field

from atom.errors import AtomError


@dataclass(frozen=True)
class ExportFormat:
    module: str  # exporters.<module>: export(detector, sample, out_dir, **args) -> file; runner(file, **args)
    file: str  # the model file's name in the bundle
    args: dict = field(default_factory=dict)  # accepted arguments and their defaults
    requires: tuple[str, ...] = ()  # importable modules the format needs
    min_opset: int = 17


FORMATS: dict[str, ExportFormat] = {
    "onnx": ExportFormat("exporters.onnx", "model.onnx",
                         {"opset": 17, "dynamic_batch": True, "simplify": True, "threads": 2},
                         ("onnx", "onnxruntime", "onnxslim")),
    "tensorrt": ExportFormat("exporters.tensorrt", "model.engine",
                             {"opset": 17, "simplify": True, "fp16": True, "workspace_gb": 2, "max_batch": 8},
                             ("tensorrt", "onnx")),
}


class ExportError(AtomError):
    """An export cannot be made or did not verify; nothing is written to the bundle folder."""


class FormatUnavailable(ExportError):
    """The format's runtime is not installed here (e.g. TensorRT on a machine without it)."""


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
    if "opset" in merged and int(merged["opset"]) < fmt.min_opset:
        raise ExportError(f"format {name!r} needs opset >= {fmt.min_opset}, got {merged['opset']}")
    missing = [m for m in fmt.requires if importlib.util.find_spec(m) is None]
    if missing:
        raise FormatUnavailable(f"format {name!r} needs {missing}, which are not installed here")
    return fmt, merged


def format_module(fmt: ExportFormat):
    return importlib.import_module(fmt.module)
