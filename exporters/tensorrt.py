"""TensorRT engine built from the ONNX export (dynamic batch 1..max_batch, optional FP16) and a runner.

TensorRT cannot be installed on our CPU machines: FORMATS lists `tensorrt` as a requirement, so the export
command reports it as unavailable there instead of failing half-way; on a CUDA machine with TensorRT it runs.
"""

from __future__ import annotations

from pathlib import Path

import torch

from exporters import ExportError
from exporters import onnx as onnx_export


def export(detector, sample: torch.Tensor, out_dir: Path, opset: int = 17, simplify: bool = True, fp16: bool = True,
           workspace_gb: float = 2, max_batch: int = 8, **_) -> Path:
    import tensorrt as trt

    onnx_path = onnx_export.export(detector, sample, out_dir, opset=opset, dynamic_batch=True, simplify=simplify)
    logger = trt.Logger(trt.Logger.WARNING)
    builder = trt.Builder(logger)
    network = builder.create_network(0)  # explicit batch is the only mode in TensorRT >= 10
    parser = trt.OnnxParser(network, logger)
    if not parser.parse_from_file(str(onnx_path)):
        errors = "; ".join(str(parser.get_error(i)) for i in range(parser.num_errors))
        raise ExportError(f"{onnx_path}: TensorRT cannot parse the ONNX model: {errors}")
    config = builder.create_builder_config()
    config.set_memory_pool_limit(trt.MemoryPoolType.WORKSPACE, int(workspace_gb * (1 << 30)))
    if fp16 and builder.platform_has_fast_fp16:
        config.set_flag(trt.BuilderFlag.FP16)
    _, c, h, w = sample.shape
    profile = builder.create_optimization_profile()
    profile.set_shape(onnx_export.INPUT, (1, c, h, w), (1, c, h, w), (int(max_batch), c, h, w))
    config.add_optimization_profile(profile)
    engine = builder.build_serialized_network(network, config)
    if engine is None:
        raise ExportError("TensorRT failed to build the engine (see its log above)")
    path = Path(out_dir) / "model.engine"
    path.write_bytes(bytes(engine))
    return path


def runner(path: Path, **_):
    """A function from a float NCHW torch batch to (boxes, scores), computed by TensorRT on the GPU."""
    import tensorrt as trt

    logger = trt.Logger(trt.Logger.WARNING)
    engine = trt.Runtime(logger).deserialize_cuda_engine(Path(path).read_bytes())
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
