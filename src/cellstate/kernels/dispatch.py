"""The one place that chooses a backend.

A backend is a module with ``lstm_layer`` and ``rnn_layer`` functions of the signatures in
``cellstate.kernels.reference``. ``"auto"`` picks the fastest one that can run the call and
says once, as a warning, why it fell back.
"""

from __future__ import annotations

from types import ModuleType

from torch import Tensor

from cellstate.kernels import reference

BACKENDS = ("auto", "reference")


def check_backend(name: object) -> str:
    """Validate a backend name (ValueError naming the known ones)."""
    if name not in BACKENDS:
        raise ValueError(f"backend must be one of {', '.join(map(repr, BACKENDS))}; got {name!r}")
    return name  # type: ignore[return-value]


def select(backend: str, x: Tensor) -> ModuleType:
    """The backend module that runs a layer on input ``x`` under the requested ``backend``."""
    check_backend(backend)
    return reference


def backend_status() -> dict[str, str]:
    """Each concrete backend and whether it can run here (or why not), for ``cellstate info``."""
    return {"reference": "available (pure PyTorch, any device)"}
