"""ONNX models (face detection and identity, vocal separation) on onnxruntime, on the GPU when it has one."""

from __future__ import annotations

from pathlib import Path


def onnx_session(path: str | Path):
    """An onnxruntime session for `path`, CUDA first where onnxruntime-gpu offers it."""
    try:
        import onnxruntime
    except ImportError:
        raise ImportError(f"{Path(path).name} needs onnxruntime: pip install onnxruntime (or onnxruntime-gpu).") from None
    if hasattr(onnxruntime, "disable_telemetry_events"):  # when another package imported it first (see __init__)
        onnxruntime.disable_telemetry_events()
    available = onnxruntime.get_available_providers()
    providers = [p for p in ("CUDAExecutionProvider", "CPUExecutionProvider") if p in available]
    return onnxruntime.InferenceSession(str(path), providers=providers)
