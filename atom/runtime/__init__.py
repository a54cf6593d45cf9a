"""The serving runtime: run an exported bundle from its manifest alone, with numpy and ONNX Runtime (Pillow only to
decode image files or bytes). It never imports torch or the training stack, so a serving host needs none of them
(tests/test_runtime.py proves it by blocking their import).

    from atom.runtime import Bundle
    detections = Bundle("bundles/atom-vehicles/v3/onnx").detect([rgb_image])   # boxes in original pixels
"""

from atom.runtime.bundle import Bundle, BundleError, Detections

__all__ = ["Bundle", "BundleError", "Detections"]
