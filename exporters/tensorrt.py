"""TensorRT: an engine built from the ONNX export (dynamic batch 1..max_batch; fp32, fp16 or INT8), with the
TensorRT version and GPU it was built for in the manifest — an engine runs only there.

Where TensorRT does not import (our CPU machines: it cannot be installed), the bundle carries what the target needs
to build the engine itself: model.onnx (verified here with ONNX Runtime), build_engine.sh with the exact trtexec
flags and, for INT8, calibration.cache — TensorRT's calibration cache, computed here from training images.
"""

from __future__ import annotations

import importlib.util
import struct
from pathlib import Path

import torch

from exporters import ExportError
from exporters import onnx as onnx_export
from exporters.calibration import data_reader, scratch_dir

BUILD_SCRIPT, CACHE = "build_engine.sh", "calibration.cache"


def available() -> bool:
    return importlib.util.find_spec("tensorrt") is not None and torch.cuda.is_available()


def export(detector, sample: torch.Tensor, out_dir: Path, calibration, opset: int = 17, simplify: bool = True,
           precision: str = "fp16", workspace_gb: float = 2, max_batch: int = 8, calibration_images: int = 300,
           trt_version: str = "10.13.0", **_) -> Path:
    out_dir = Path(out_dir)
    onnx_path = onnx_export.export(detector, sample, out_dir, opset=opset, dynamic_batch=True, simplify=simplify)
    _, c, h, w = sample.shape
    shapes = {"min": (1, c, h, w), "opt": (1, c, h, w), "max": (int(max_batch), c, h, w)}
    if precision == "int8":
        version = _installed_version() or trt_version
        write_calibration_cache(onnx_path, calibration(int(calibration_images)), out_dir / CACHE, version)
    write_build_script(out_dir / BUILD_SCRIPT, shapes, precision, workspace_gb)
    if not available():
        return onnx_path  # the target builds the engine: build_engine.sh
    return build_engine(onnx_path, out_dir / "model.engine", shapes, precision, workspace_gb,
                        out_dir / CACHE if precision == "int8" else None)


def describe(model_file: Path) -> dict:
    """The manifest's `engine` entry: what the engine was built with, or how the target builds it."""
    if model_file.suffix == ".engine":
        import tensorrt as trt

        gpu = torch.cuda.get_device_properties(0)
        return {"built": True, "tensorrt_version": trt.__version__, "gpu": gpu.name,
                "compute_capability": f"{gpu.major}.{gpu.minor}"}
    return {"built": False, "build": f"sh {BUILD_SCRIPT} (trtexec, on the target GPU) -> model.engine",
            "calibration_cache": CACHE if (model_file.parent / CACHE).exists() else None}


def write_build_script(path: Path, shapes: dict, precision: str, workspace_gb: float) -> None:
    dims = {k: "x".join(map(str, v)) for k, v in shapes.items()}
    flags = ["--onnx=model.onnx", "--saveEngine=model.engine",
             f"--minShapes={onnx_export.INPUT}:{dims['min']}", f"--optShapes={onnx_export.INPUT}:{dims['opt']}",
             f"--maxShapes={onnx_export.INPUT}:{dims['max']}", f"--memPoolSize=workspace:{int(workspace_gb * 1024)}M"]
    # INT8 layers where calibrated, fp16 for the rest (as the Python build does)
    flags += {"fp32": [], "fp16": ["--fp16"], "int8": ["--int8", "--fp16", f"--calib={CACHE}"]}[precision]
    path.write_text("#!/bin/sh\n# Build model.engine from model.onnx on the GPU that will run it (an engine runs only\n"
                    "# with the TensorRT version and GPU it was built with). Needs TensorRT's trtexec on PATH.\n"
                    'set -e\ncd "$(dirname "$0")"\ntrtexec ' + " \\\n    ".join(flags) + "\n")
    path.chmod(0o755)


def trt_header_version(version: str) -> int:
    """TensorRT's version number as its calibration cache header writes it (NV_TENSORRT_VERSION): 8.6.1 -> 8601,
    10.13.0 -> 101300 (the encoding widened at 10)."""
    major, minor, patch = (int(x) for x in (version.split(".") + ["0", "0"])[:3])
    return major * 10000 + minor * 100 + patch if major >= 10 else major * 1000 + minor * 100 + patch


def write_calibration_cache(onnx_path: Path, batches: list, path: Path, trt_version: str) -> dict[str, float]:
    """Per tensor of the ONNX graph, the INT8 scale max(|min|, |max|) / 127 of its values over the calibration
    batches (ONNX Runtime's MinMax calibrator), written as TensorRT's calibration cache: a header naming the
    TensorRT version and calibrator, then `tensor: scale` with the scale's float32 bits in hex. TensorRT ignores a
    cache whose header names another version, hence `trt_version` (the target's)."""
    from onnxruntime.quantization.calibrate import CalibrationMethod, create_calibrator

    onnx_path, path = Path(onnx_path).resolve(), Path(path).resolve()
    with scratch_dir() as tmp:
        calibrator = create_calibrator(str(onnx_path), None, augmented_model_path=str(tmp / "augmented.onnx"),
                                       calibrate_method=CalibrationMethod.MinMax)
        calibrator.collect_data(data_reader(batches, onnx_export.INPUT))
        ranges = calibrator.compute_data()
    scales = {name: max(abs(float(lo)), abs(float(hi))) / 127.0
              for name, (lo, hi) in ((n, ranges[n].range_value) for n in ranges)}
    scales = {n: s for n, s in scales.items() if s > 0}
    lines = [f"TRT-{trt_header_version(trt_version)}-EntropyCalibration2"]
    lines += [f"{name}: {struct.pack('>f', scale).hex()}" for name, scale in scales.items()]
    path.write_text("\n".join(lines) + "\n")
    return scales


def read_calibration_cache(path: Path) -> tuple[str, dict[str, float]]:
    header, *lines = Path(path).read_text().splitlines()
    return header, {name: struct.unpack(">f", bytes.fromhex(value.strip()))[0]
                    for name, value in (line.rsplit(":", 1) for line in lines if line.strip())}


def _installed_version() -> str | None:
    if importlib.util.find_spec("tensorrt") is None:
        return None
    import tensorrt as trt

    return trt.__version__


def build_engine(onnx_path: Path, path: Path, shapes: dict, precision: str, workspace_gb: float,
                 cache: Path | None) -> Path:
    import tensorrt as trt

    logger = trt.Logger(trt.Logger.WARNING)
    builder = trt.Builder(logger)
    network = builder.create_network(0)  # explicit batch is the only mode in TensorRT >= 10
    parser = trt.OnnxParser(network, logger)
    if not parser.parse_from_file(str(onnx_path)):
        errors = "; ".join(str(parser.get_error(i)) for i in range(parser.num_errors))
        raise ExportError(f"{onnx_path}: TensorRT cannot parse the ONNX model: {errors}")
    config = builder.create_builder_config()
    config.set_memory_pool_limit(trt.MemoryPoolType.WORKSPACE, int(workspace_gb * (1 << 30)))
    if precision in ("fp16", "int8"):
        config.set_flag(trt.BuilderFlag.FP16)
    if precision == "int8":
        config.set_flag(trt.BuilderFlag.INT8)
        config.int8_calibrator = cache_calibrator(cache)
    profile = builder.create_optimization_profile()
    profile.set_shape(onnx_export.INPUT, shapes["min"], shapes["opt"], shapes["max"])
    config.add_optimization_profile(profile)
    if precision == "int8":
        config.set_calibration_profile(profile)
    engine = builder.build_serialized_network(network, config)
    if engine is None:
        raise ExportError("TensorRT failed to build the engine (see its log above)")
    path.write_bytes(bytes(engine))
    return path


def cache_calibrator(cache: Path):
    """A calibrator that only hands TensorRT the cache computed by write_calibration_cache."""
    import tensorrt as trt

    class CacheCalibrator(trt.IInt8EntropyCalibrator2):
        def get_batch_size(self):
            return 1

        def get_batch(self, names):
            return None

        def read_calibration_cache(self):
            return Path(cache).read_bytes()

        def write_calibration_cache(self, data):
            pass

    return CacheCalibrator()


def runner(path: Path, **args):
    """(boxes, scores) of a float NCHW torch batch: by the TensorRT engine on the GPU; for a bundle whose engine is
    built on the target, by ONNX Runtime on the ONNX graph the engine is built from."""
    path = Path(path)
    if path.suffix != ".engine":
        return onnx_export.runner(path, **args)
    import json

    import tensorrt as trt

    logger = trt.Logger(trt.Logger.WARNING)
    engine = trt.Runtime(logger).deserialize_cuda_engine(path.read_bytes())
    if engine is None:
        manifest = path.parent / "manifest.json"
        built = json.loads(manifest.read_text())["model"].get("engine", {}) if manifest.exists() else {}
        raise ExportError(
            f"{path}: TensorRT {trt.__version__} on {torch.cuda.get_device_name(0)} cannot load this engine, built "
            f"with TensorRT {built.get('tensorrt_version', '?')} on {built.get('gpu', '?')}: an engine runs only "
            f"with the TensorRT version and GPU it was built with; rebuild it here with {BUILD_SCRIPT}")
    context = engine.create_execution_context()

    def detect(images: torch.Tensor):
        images = images.cuda().contiguous()
        context.set_input_shape(onnx_export.INPUT, tuple(images.shape))
        outputs = {}
        for name in onnx_export.OUTPUTS:
            shape = tuple(context.get_tensor_shape(name))
            outputs[name] = torch.empty(shape, dtype=torch.float32, device="cuda")
            context.set_tensor_address(name, outputs[name].data_ptr())
        context.set_tensor_address(onnx_export.INPUT, images.data_ptr())
        stream = torch.cuda.current_stream()
        if not context.execute_async_v3(stream.cuda_stream):
            raise RuntimeError("TensorRT inference failed")
        stream.synchronize()
        return tuple(outputs[n].cpu() for n in onnx_export.OUTPUTS)

    return detect
