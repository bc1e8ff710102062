"""The one differential test helper: run two implementations on the same inputs and assert that
shapes, dtypes, forward values and every gradient agree, with labelled messages.

Tolerances live here: TOLERANCES for a module against a module, and named ones for the other
comparisons of two computations. A check that compares no two implementations (a property such
as orthogonality, a finite-difference derivative, a quantisation step) keeps its tolerance beside
a comment saying why.
"""

from __future__ import annotations

import dataclasses

import torch
from torch import Tensor, nn
from torch.nn.utils.rnn import PackedSequence

TOLERANCES = {
    torch.float64: {"rtol": 1e-9, "atol": 1e-12},
    torch.float32: {"rtol": 1e-5, "atol": 1e-6},
    torch.bfloat16: {"rtol": 3e-2, "atol": 3e-2},
    torch.float16: {"rtol": 5e-3, "atol": 5e-3},
}


# onnxruntime's LSTM and RNN kernels use fast sigmoid/tanh approximations: float32 results agree
# with PyTorch to 1e-5 absolute (the ONNX export's promise), not to TOLERANCES' 1e-6.
ONNX_RUNTIME_FLOAT32 = {"rtol": 1e-5, "atol": 1e-5}

# The same computation twice (a resumed or reloaded model, two DDP ranks, one seed): bit for bit.
EXACT = {"rtol": 0.0, "atol": 0.0}

# float64, one layer's kernel called directly against the reference on tiny inputs, or DDP's
# all-reduced weights against one process's: only the order of the sums differs, so 10x tighter
# than TOLERANCES[torch.float64], which covers whole multi-layer modules.
FLOAT64_KERNEL = {"rtol": 1e-10, "atol": 1e-12}

# The largest difference assert_modules_match may return (relative to each tensor's largest
# magnitude) for a float64 backend against the reference module.
FLOAT64_BACKEND_WORST = 1e-10

# float64, the same kernel reached another way (torch.compile or torch.export against eager): the
# same operations, at most regrouped.
FLOAT64_SAME_KERNEL = {"rtol": 1e-12, "atol": 1e-12}

# float64 against an independent computation in another library (numpy's FFT and mel filters):
# torch.testing's own float64 defaults.
FLOAT64_OTHER_LIBRARY = {"rtol": 1e-7, "atol": 1e-7}

# A two-layer LSTM in bfloat16 (8 significant bits) against the same weights in float32: the
# rounding of bfloat16 itself, compounded over steps and layers (TOLERANCES[torch.bfloat16]
# compares two bfloat16 computations).
BFLOAT16_VS_FLOAT32 = {"rtol": 0.05, "atol": 0.05}

# A module on CUDA against the same module on the CPU: float32 GEMMs sum in another order (cuBLAS
# picks its own algorithms); float64 at torch.testing's own defaults.
CUDA_VS_CPU = {
    torch.float32: {"rtol": 1e-4, "atol": 1e-5},
    torch.float64: {"rtol": 1e-7, "atol": 1e-7},
}


def tolerance(dtype: torch.dtype) -> dict[str, float]:
    return TOLERANCES[dtype]


def scaled_tolerance(dtype: torch.dtype, expected: Tensor) -> dict[str, float]:
    """tolerance(dtype) with atol relative to expected's largest magnitude: for sums of many
    low-precision terms (weight gradients), whose rounding error grows with their size."""
    tol = TOLERANCES[dtype]
    scale = float(expected.detach().abs().max().clamp_min(1.0))
    return {"rtol": tol["rtol"], "atol": tol["atol"] * scale}


def _leaves(obj, leaves: list[Tensor]):
    """A copy of obj whose floating tensors are fresh leaves requiring grad (collected)."""
    if isinstance(obj, PackedSequence):
        data = _leaves(obj.data, leaves)
        return PackedSequence(data, obj.batch_sizes, obj.sorted_indices, obj.unsorted_indices)
    if isinstance(obj, Tensor):
        if obj.is_floating_point():
            leaf = obj.detach().clone().requires_grad_(True)
            leaves.append(leaf)
            return leaf
        return obj
    if isinstance(obj, tuple | list):
        return type(obj)(_leaves(o, leaves) for o in obj)
    return obj


def flatten(obj, prefix: str = "out") -> list[tuple[str, Tensor]]:
    """Labelled tensors of a nested result (tuples, PackedSequence, RecurrentStates)."""
    if isinstance(obj, PackedSequence):
        return [(f"{prefix}.data", obj.data)]
    if isinstance(obj, Tensor):
        return [(prefix, obj)]
    if isinstance(obj, tuple | list):
        return [item for k, o in enumerate(obj) for item in flatten(o, f"{prefix}[{k}]")]
    if dataclasses.is_dataclass(obj):
        return [
            item
            for f in dataclasses.fields(obj)
            if getattr(obj, f.name) is not None
            for item in flatten(getattr(obj, f.name), f"{prefix}.{f.name}")
        ]
    raise TypeError(f"cannot flatten {type(obj).__name__}")


def run_with_grads(fn, args, cotangent_seed: int = 0):
    """Run fn(*args) on leaf copies of args; backpropagate fixed random cotangents.

    Returns (labelled outputs, labelled input gradients).
    """
    leaves: list[Tensor] = []
    call_args = _leaves(list(args), leaves)
    outputs = flatten(fn(*call_args))
    gen = torch.Generator().manual_seed(cotangent_seed)
    loss = 0
    for _, out in outputs:
        if out.requires_grad:
            cot = torch.randn(out.shape, generator=gen, dtype=torch.float64)
            loss = loss + (out * cot.to(out)).sum()
    if isinstance(loss, Tensor):
        loss.backward()
    grads = [(f"grad input[{k}]", leaf.grad) for k, leaf in enumerate(leaves)]
    return outputs, grads


def assert_close_labelled(ours: list, theirs: list, what: str, **tol) -> float:
    """Compare two labelled tensor lists pairwise; returns the largest relative difference."""
    assert [n for n, _ in ours] == [n for n, _ in theirs], f"{what}: results differ in structure"
    worst = 0.0
    for (name, a), (_, b) in zip(ours, theirs, strict=True):
        if a is None or b is None:
            assert a is None and b is None, f"{what} {name}: one side has no value"
            continue
        assert a.shape == b.shape, f"{what} {name}: shape {tuple(a.shape)} != {tuple(b.shape)}"
        assert a.dtype == b.dtype, f"{what} {name}: dtype {a.dtype} != {b.dtype}"
        torch.testing.assert_close(a, b, **tol, msg=lambda m, n=name: f"{what} {n}: {m}")
        scale = b.detach().abs().max().clamp_min(1e-30)
        worst = max(worst, float(((a.detach() - b.detach()).abs().max() / scale).item()))
    return worst


def assert_modules_match(ours: nn.Module, theirs: nn.Module, *args, tol=None) -> float:
    """Run both modules on copies of args: outputs, input gradients and the gradient of every
    parameter the two share by name must agree. Returns the largest relative difference."""
    dtype = next(theirs.parameters()).dtype
    tol = tol or tolerance(dtype)
    for module in (ours, theirs):
        module.zero_grad(set_to_none=True)
    out_a, grad_a = run_with_grads(ours, args)
    out_b, grad_b = run_with_grads(theirs, args)
    worst = assert_close_labelled(out_a, out_b, "forward", **tol)
    worst = max(worst, assert_close_labelled(grad_a, grad_b, "backward", **tol))
    theirs_params = dict(theirs.named_parameters())
    shared = [(n, p) for n, p in ours.named_parameters() if n in theirs_params]
    assert shared, "the modules share no parameter names"
    worst = max(
        worst,
        assert_close_labelled(
            [(f"grad {n}", p.grad) for n, p in shared],
            [(f"grad {n}", theirs_params[n].grad) for n, _ in shared],
            "parameter gradients",
            **tol,
        ),
    )
    return worst
