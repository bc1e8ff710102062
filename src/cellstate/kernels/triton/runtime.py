"""Whether the Triton backend can run a call, and why not, without importing triton."""

from __future__ import annotations

import importlib.util
import os
import sys

import torch
from torch import Tensor

from cellstate.kernels.triton import launch

GPU_DTYPES = (torch.float32, torch.float16, torch.bfloat16)


def interpreting() -> bool:
    """TRITON_INTERPRET=1: kernels run on CPU tensors through Triton's interpreter (tests)."""
    return os.environ.get("TRITON_INTERPRET") == "1"


def _triton_missing() -> str | None:
    if importlib.util.find_spec("triton") is None:
        return (
            "triton is not installed (it ships with the CUDA builds of PyTorch; pip install triton)"
        )
    return None


TRITON_MISSING = _triton_missing()  # why triton cannot be imported, or None


def _triton_imported_compiled() -> bool:
    """Whether triton.language was imported without TRITON_INTERPRET=1 (Triton makes its @jit
    functions interpreted or compiled once, at decoration); False where it is not imported."""
    language = sys.modules.get("triton.language")
    return language is not None and type(language.sum).__name__ != "InterpretedFunction"


def unsupported(x: Tensor) -> str | None:
    """Why the Triton backend cannot run on x (triton, device, dtype), or None."""
    if TRITON_MISSING:
        return TRITON_MISSING
    if x.device.type == "cpu":
        if not interpreting():
            return (
                "the triton backend runs CUDA tensors; got a cpu tensor (CPU tensors run only "
                "through Triton's interpreter, TRITON_INTERPRET=1, for tests)"
            )
        if launch.imported_interpreted() is False:
            return (
                "TRITON_INTERPRET=1 was set after the triton kernels were compiled for the GPU; "
                "set it before the first call"
            )
        if _triton_imported_compiled():
            return (
                "TRITON_INTERPRET=1 was set after triton was imported (its own functions, "
                "tl.sum among them, were made for the GPU, and the interpreter fails on them); "
                "set it before anything imports triton (torch._inductor and "
                "torch.testing._internal do)"
            )
        if x.dtype not in (*GPU_DTYPES, torch.float64):
            return f"the triton backend runs floating-point tensors; got {x.dtype}"
        return None
    if x.device.type != "cuda":
        return f"the triton backend runs CUDA tensors; got a {x.device.type} tensor"
    if interpreting():
        return "TRITON_INTERPRET=1 is set: the triton backend runs CPU tensors only"
    if x.dtype == torch.float64:
        return (
            "float64 on CUDA runs on the reference backend (the triton kernels are written for "
            "float32 and 16-bit tensors)"
        )
    if x.dtype not in GPU_DTYPES:
        return f"the triton backend runs float32, float16 and bfloat16; got {x.dtype}"
    return None


def status() -> str:
    """One line for ``cellstate info``: what runs on the GPU, and why not."""
    if TRITON_MISSING:
        return f"unavailable: {TRITON_MISSING}; CUDA tensors run on the reference backend"
    if interpreting():
        return "interpreter (TRITON_INTERPRET=1): CPU tensors through Triton's interpreter, slowly"
    if not torch.cuda.is_available():
        return "unavailable: no CUDA device; float32/float16/bfloat16 CUDA tensors would run it"
    name = torch.cuda.get_device_name()
    return f"available on {name} for float32, float16, bfloat16 (float64: reference backend)"
