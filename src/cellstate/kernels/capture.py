"""Which graph capture is running a layer: torch.jit.trace or an ONNX export (or neither).

Both record the CPU kernel's custom ops (``cellstate::lstm_forward`` / ``rnn_forward``) rather
than the reference's Python loop, which would be unrolled into a graph frozen at the example's
sequence length (see ``kernels.dispatch``).
"""

import sys

import torch


def onnx_exporting() -> bool:
    """Inside ``torch.onnx.export`` (either exporter). torch.onnx is imported by the export
    itself, so a process that never exports never imports it here."""
    onnx = sys.modules.get("torch.onnx")
    return onnx is not None and onnx.is_in_onnx_export()


def legacy_onnx_exporting() -> bool:
    """Inside ``torch.onnx.export(..., dynamo=False)``: the TorchScript exporter traces with
    torch.jit.trace; the default exporter captures with torch.export."""
    return onnx_exporting() and torch.jit.is_tracing()
