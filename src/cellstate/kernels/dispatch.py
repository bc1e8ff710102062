"""The one place that chooses a backend.

A backend is a module with ``lstm_layer`` and ``rnn_layer`` functions of the signatures in
``cellstate.kernels.reference``:

* ``"reference"``: pure PyTorch, the spec; any device and dtype.
* ``"cpu"``: the fused C++ kernel (``cellstate.kernels.cpu``) for CPU float32/float64 tensors
  (bfloat16/float16 ones computed in float32), compiled on first use. Raises RuntimeError naming
  the reason when it cannot run the call.
* ``"triton"``: the Triton kernels (``cellstate.kernels.triton``) for CUDA float32, float16 and
  bfloat16 tensors; with ``TRITON_INTERPRET=1`` CPU tensors (any float dtype) through Triton's
  interpreter, for tests. Raises RuntimeError naming the reason when it cannot run the call.
* ``"auto"``: ``"cpu"`` for CPU tensors where it can run, else the reference. On CUDA it stays
  on the reference until the Triton kernels have been checked on a GPU (``AUTO_USES_TRITON``:
  they are tested only through Triton's interpreter so far; ``benchmarks/gpu_check.sh`` is the
  check), then takes ``"triton"`` where it can run (float64 stays on the reference). Falling
  back because a kernel cannot be built says so once, as a warning naming the reason; falling
  back for CUDA float64 input or under a torch.func transform (grad, vjp, jacrev, vmap) is
  silent, since the reference is the backend for those.

Under ``torch.compile`` tracing nothing is built: the kernel is a custom op with a fake
implementation, and it is built when the compiled code first runs.

Under ``torch.jit.trace`` and ``torch.onnx.export`` every backend name gives ``"cpu"``: those
captures record the kernel's custom ops (the ONNX exporter translates them with
``cellstate.export.onnx``), where the reference's Python loop would be unrolled into a graph
frozen at the example's sequence length. The legacy ONNX exporter raises, naming the default one.
"""

from __future__ import annotations

import warnings
from types import ModuleType

import torch
from torch import Tensor

from cellstate.kernels import capture, reference
from cellstate.kernels.cpu import build
from cellstate.kernels.cpu import ops as cpu
from cellstate.kernels.triton import backend as triton_backend
from cellstate.kernels.triton import runtime as triton_runtime

BACKENDS = ("auto", "reference", "cpu", "triton")

# False until benchmarks/gpu_check.sh has passed on a GPU: the compiled Triton kernels have only
# been tested through the interpreter, and a silently wrong default is worse than a slow one.
AUTO_USES_TRITON = False

_warned = False
_warned_triton = False


def check_backend(name: object) -> str:
    """Validate a backend name (ValueError naming the known ones)."""
    if name not in BACKENDS:
        raise ValueError(f"backend must be one of {', '.join(map(repr, BACKENDS))}; got {name!r}")
    return name  # type: ignore[return-value]


def select(backend: str, x: Tensor) -> ModuleType:
    """The backend module that runs a layer on input ``x`` under the requested ``backend``."""
    check_backend(backend)
    if torch.jit.is_tracing() or capture.onnx_exporting():
        return _for_capture(x)
    if backend == "reference":
        return reference
    if backend == "triton" or (AUTO_USES_TRITON and backend == "auto" and x.device.type == "cuda"):
        return _triton(backend, x)
    reason = cpu.unsupported(x)
    if reason is None:
        reason = _cpu_build_failure(warn=backend == "auto")
    if reason is None:
        return cpu
    if backend == "cpu":
        raise RuntimeError(f"backend='cpu' cannot run this call: {reason}")
    return reference


def resolve(backend: str, device: torch.device | str, dtype: torch.dtype) -> str:
    """The backend ("cpu", "triton" or "reference") that ``backend`` runs on tensors of this
    device and dtype; builds or loads the CPU kernel where it may run, as the first call would."""
    module = select(backend, torch.empty(0, device=device, dtype=dtype))
    return {cpu: "cpu", triton_backend: "triton"}.get(module, "reference")


LEGACY_ONNX_ERROR = (
    "torch.onnx.export(..., dynamo=False) cannot export cellstate layers (its TorchScript "
    "tracer has no translation for cellstate's kernel ops); use the default exporter: "
    "torch.onnx.export(model, args, dynamo=True) (see docs/compatibility.md)"
)


def _for_capture(x: Tensor) -> ModuleType:
    """The CPU kernel's ops, which torch.jit.trace and the ONNX exporter record."""
    if capture.legacy_onnx_exporting():
        raise NotImplementedError(LEGACY_ONNX_ERROR)
    path = "torch.onnx.export" if capture.onnx_exporting() else "torch.jit.trace"
    reason = cpu.unsupported(x)
    if reason is not None:
        raise NotImplementedError(
            f"{path} of a cellstate layer records the CPU kernel's ops, which cannot take this "
            f"input: {reason}. Capture with a CPU float32/float64 example, or use "
            "torch.export.export / torch.compile"
        )
    return cpu


def _triton(backend: str, x: Tensor) -> ModuleType:
    """The Triton backend, or for "auto" the reference where it cannot run (float64 silently;
    without triton with a warning, once); RuntimeError for "triton"."""
    global _warned_triton
    reason = triton_runtime.unsupported(x)
    if reason is None:
        return triton_backend
    if backend == "triton":
        raise RuntimeError(f"backend='triton' cannot run this call: {reason}")
    if reason == triton_runtime.TRITON_MISSING and not _warned_triton:
        _warned_triton = True
        warnings.warn(
            f"cellstate: backend='auto' uses the reference backend on the GPU because {reason}",
            RuntimeWarning,
            stacklevel=4,
        )
    return reference


def _cpu_build_failure(warn: bool) -> str | None:
    """Build (or load) the kernel once; the reason it failed, or None (warned about once)."""
    global _warned
    if build.is_loaded() or torch.compiler.is_compiling():
        return build.failure()
    try:
        build.load()
    except RuntimeError:
        if warn and not _warned:
            _warned = True
            warnings.warn(
                "cellstate: backend='auto' uses the reference backend because the CPU kernel "
                f"cannot be built: {build.failure()}",
                RuntimeWarning,
                stacklevel=4,
            )
        return build.failure()
    return None


def backend_status() -> dict[str, str]:
    """Each concrete backend and whether it can run here (or why not), for ``cellstate info``.

    Never compiles anything.
    """
    return {
        "reference": "available (pure PyTorch, any device)",
        "cpu": build.status(),
        "triton": triton_runtime.status()
        + (
            ""
            if AUTO_USES_TRITON
            else "; opt-in with backend='triton' (auto keeps CUDA on the reference until the "
            "kernels are checked on a GPU)"
        ),
    }
