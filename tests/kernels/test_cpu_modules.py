"""cellstate.LSTM / RNN with backend="cpu" against the same modules on the reference backend:
outputs, final states, per-step states, input and parameter gradients (tests/differential.py)."""

import copy

import pytest
import torch
from torch import nn
from torch.nn.utils.rnn import PackedSequence, pack_padded_sequence

import cellstate
from tests.differential import (
    FLOAT64_BACKEND_WORST,
    assert_modules_match,
    run_with_grads,
    scaled_tolerance,
    tolerance,
)

LSTM_VARIANTS = {
    "plain": {},
    "no_bias": {"bias": False},
    "proj": {"proj_size": 3},
    "peephole": {"peephole": True},
    "layer_norm": {"layer_norm": True},
    "no_forget_gate": {"forget_gate": False},
    "zoneout": {"zoneout": (0.3, 0.5)},
    "recurrent_dropout": {"recurrent_dropout": 0.4},
    "return_states": {"return_states": True},
    "everything": {
        "proj_size": 3,
        "peephole": True,
        "layer_norm": True,
        "forget_gate": False,
        "zoneout": (0.2, 0.4),
        "recurrent_dropout": 0.3,
        "return_states": True,
    },
}
FORMS = ("tensor", "batch_first", "packed", "hx", "unbatched")
T, B, D, H = 6, 3, 4, 5


class SameNoise(nn.Module):
    """Reseeds before each call, so both backends draw the same zoneout and dropout masks."""

    def __init__(self, module: nn.Module):
        super().__init__()
        self.module = module

    def forward(self, *args):
        torch.manual_seed(1234)
        return self.module(*args)


def _pair(cls, dtype, train=True, **kwargs):
    reference = cls(D, H, num_layers=2, backend="reference", dtype=dtype, **kwargs)
    ours = cls(D, H, num_layers=2, backend="cpu", dtype=dtype, **kwargs)
    ours.load_state_dict(reference.state_dict())
    return SameNoise(ours).train(train), SameNoise(reference).train(train)


def _inputs(form: str, dtype, batch_first_module: bool, state_sizes: list[int]):
    x = (
        torch.randn(B, T, D, dtype=dtype)
        if batch_first_module
        else torch.randn(T, B, D, dtype=dtype)
    )
    if form == "packed":
        return (pack_padded_sequence(x, torch.tensor([6, 2, 4]), enforce_sorted=False),)
    if form == "unbatched":
        return (x[:, 0] if batch_first_module else x[:, 0],)
    if form == "hx":
        states = tuple(torch.randn(4, B, size, dtype=dtype) for size in state_sizes)
        return (x, states if len(states) > 1 else states[0])
    return (x,)


def _check(ours, reference, args, dtype):
    """float64: assert_modules_match, every difference below 1e-10 relative. float32: see
    _assert_as_close_to_float64."""
    if dtype == torch.float32:
        _assert_as_close_to_float64(ours, reference, args)
    else:
        assert assert_modules_match(ours, reference, *args) < FLOAT64_BACKEND_WORST


def _assert_as_close_to_float64(ours, reference, args):
    """Two float32 backends differ by the rounding of different summation orders, which layer
    norm over a few units amplifies well past the helper's float32 tolerance. So anchor both to
    the float64 reference: every output and gradient of ours must be within 1e-5 of it
    (relative to its largest value), or about as close as the float32 reference gets."""
    truth = SameNoise(copy.deepcopy(reference.module).double())
    args64 = [_to(a, torch.float64) for a in args]
    results = {}
    for name, module, inputs in (
        ("ours", ours, args),
        ("ref32", reference, args),
        ("f64", truth, args64),
    ):
        outputs, grads = run_with_grads(module, inputs)
        params = [(n, p.grad) for n, p in module.module.named_parameters()]
        results[name] = outputs + grads + params
        module.zero_grad(set_to_none=True)
    errors = {}
    for (label, a), (_, b), (_, exact) in zip(*results.values(), strict=True):
        scale = exact.abs().max().item()
        errors[label] = (
            (a.double() - exact).abs().max().item() / scale,
            (b.double() - exact).abs().max().item() / scale,
        )
    # The bar is the float32 reference's worst error over all tensors: which tensor is worst
    # depends on the summation order (with layer norm over 5 units both reach ~1e-5).
    reference_worst = max(b for _, b in errors.values())
    for label, (error, reference_error) in errors.items():
        assert error <= max(3 * reference_worst, 1e-5), (
            f"{label}: {error:.1e} vs {reference_error:.1e} (reference worst {reference_worst:.1e})"
        )


def _to(obj, dtype):
    if isinstance(obj, torch.Tensor):
        return obj.to(dtype)
    if isinstance(obj, PackedSequence):
        return PackedSequence(
            obj.data.to(dtype), obj.batch_sizes, obj.sorted_indices, obj.unsorted_indices
        )
    if isinstance(obj, tuple):
        return tuple(_to(o, dtype) for o in obj)
    return obj


@pytest.mark.parametrize("dtype", [torch.float64, torch.float32], ids=["f64", "f32"])
@pytest.mark.parametrize("form", FORMS)
@pytest.mark.parametrize("variant", list(LSTM_VARIANTS))
def test_lstm_matches_reference(variant, form, dtype):
    kwargs = dict(LSTM_VARIANTS[variant], bidirectional=True, batch_first=form == "batch_first")
    ours, reference = _pair(cellstate.LSTM, dtype, **kwargs)
    P = kwargs.get("proj_size") or H
    _check(ours, reference, _inputs(form, dtype, kwargs["batch_first"], [P, H]), dtype)


@pytest.mark.parametrize("dtype", [torch.float64, torch.float32], ids=["f64", "f32"])
@pytest.mark.parametrize("form", FORMS)
@pytest.mark.parametrize("nonlinearity", ["tanh", "relu"])
def test_rnn_matches_reference(nonlinearity, form, dtype):
    kwargs = {"nonlinearity": nonlinearity, "bidirectional": True, "return_states": True}
    kwargs["batch_first"] = form == "batch_first"
    ours, reference = _pair(cellstate.RNN, dtype, **kwargs)
    _check(ours, reference, _inputs(form, dtype, kwargs["batch_first"], [H]), dtype)


def test_rnn_without_bias_matches_reference():
    ours, reference = _pair(cellstate.RNN, torch.float64, bias=False)
    x = torch.randn(T, B, D, dtype=torch.float64)
    assert assert_modules_match(ours, reference, x) < FLOAT64_BACKEND_WORST


@pytest.mark.parametrize("variant", ["plain", "zoneout", "everything"])
def test_lstm_eval_mode_matches_reference(variant):
    """Evaluation: zoneout is the scalar expectation, recurrent dropout is off."""
    ours, reference = _pair(cellstate.LSTM, torch.float64, train=False, **LSTM_VARIANTS[variant])
    x = torch.randn(T, B, D, dtype=torch.float64)
    assert assert_modules_match(ours, reference, x) < FLOAT64_BACKEND_WORST


@pytest.fixture
def two_threads():
    threads = torch.get_num_threads()
    torch.set_num_threads(2)
    yield
    torch.set_num_threads(threads)


# Hidden sizes that select each schedule with 2 threads: whole recurrences on each thread's block
# of sequences (weights in L2), or steps in order with each step's GEMM split (larger weights).
SCHEDULES = {"batch_split": 40, "per_step": 300}


@pytest.mark.parametrize("schedule", list(SCHEDULES))
@pytest.mark.parametrize("variant", list(LSTM_VARIANTS))
def test_lstm_on_two_threads_matches_reference(two_threads, variant, schedule):
    """Both threads really run (tests/kernels/test_dispatch.py checks that they fork): an odd
    batch split unevenly, packed lengths, both directions, every variant, float64."""
    kwargs = dict(LSTM_VARIANTS[variant], bidirectional=True)
    reference = cellstate.LSTM(
        3, SCHEDULES[schedule], backend="reference", dtype=torch.float64, **kwargs
    )
    ours = cellstate.LSTM(3, SCHEDULES[schedule], backend="cpu", dtype=torch.float64, **kwargs)
    ours.load_state_dict(reference.state_dict())
    lengths = torch.tensor([4, 1, 3, 4, 2, 4, 3])
    x = pack_padded_sequence(
        torch.randn(4, 7, 3, dtype=torch.float64), lengths, enforce_sorted=False
    )
    assert assert_modules_match(SameNoise(ours), SameNoise(reference), x) < FLOAT64_BACKEND_WORST


@pytest.mark.parametrize("hidden", [40, 600], ids=["batch_split", "per_step"])
@pytest.mark.parametrize("nonlinearity", ["tanh", "relu"])
def test_rnn_on_two_threads_matches_reference(two_threads, nonlinearity, hidden):
    kwargs = {"nonlinearity": nonlinearity, "bidirectional": True, "dtype": torch.float64}
    reference = cellstate.RNN(3, hidden, backend="reference", **kwargs)
    ours = cellstate.RNN(3, hidden, backend="cpu", **kwargs)
    ours.load_state_dict(reference.state_dict())
    lengths = torch.randint(1, 5, (17,))
    x = pack_padded_sequence(
        torch.randn(4, 17, 3, dtype=torch.float64), lengths, enforce_sorted=False
    )
    assert assert_modules_match(ours, reference, x) < FLOAT64_BACKEND_WORST


@pytest.mark.parametrize("cls", [cellstate.LSTM, cellstate.RNN])
def test_large_weights_split_panels_across_threads(two_threads, cls):
    """Weights beyond 1 MB switch to the per-step schedule, where each step's GEMMs split the
    packed weights' column panels across threads (Schedule::gemm, and Schedule::gemm_sum for
    the two projections of the LSTM). Only float32 weights are packed (float64 runs one GEMM per
    step), so this runs float32, with every weight packed (16 inputs or more) and the recurrent
    ones above 2^18 values (LSTM: 1200 x (16 + 220) forward, 1200 x 220 backward; RNN: 600^2)."""
    hidden = 300 if cls is cellstate.LSTM else 600
    kwargs = {"proj_size": 220, "peephole": True} if cls is cellstate.LSTM else {}
    ours = cls(16, hidden, backend="cpu", **kwargs)
    reference = cls(16, hidden, backend="reference", dtype=torch.float64, **kwargs)
    reference.load_state_dict(ours.state_dict())
    x = pack_padded_sequence(torch.randn(4, 3, 16), torch.tensor([4, 1, 3]), enforce_sorted=False)
    results = {}
    for module, inputs in ((ours, x), (reference, x.to(torch.float64))):
        outputs, input_grads = run_with_grads(module, (inputs,))
        param_grads = [(f"grad {n}", p.grad) for n, p in module.named_parameters()]
        results[module] = outputs + input_grads + param_grads
    for (name, got), (_, expected) in zip(results[ours], results[reference], strict=True):
        torch.testing.assert_close(
            got.double(),
            expected,
            **scaled_tolerance(torch.float32, expected),
            msg=lambda message, name=name: f"{name}: {message}",
        )


def test_float32_large_hidden_close_to_float64():
    """The float32 path (brgemm on packed weights, vectorised sigmoid/tanh) at a size where it is
    used, against the float64 reference: outputs and gradients within 1e-5 relative."""
    reference = cellstate.LSTM(3, 64, backend="reference", dtype=torch.float64)
    ours = cellstate.LSTM(3, 64, backend="cpu")
    ours.load_state_dict({k: v.float() for k, v in reference.state_dict().items()})
    x = torch.randn(20, 16, 3, dtype=torch.float64)
    out64, _ = reference(x)
    out32, _ = ours(x.float())
    out64.sum().backward()
    out32.sum().backward()
    torch.testing.assert_close(out32.double(), out64, **tolerance(torch.float32))
    for name, param in ours.named_parameters():
        expected = dict(reference.named_parameters())[name].grad
        scale = expected.abs().max()
        assert (param.grad.double() - expected).abs().max() / scale < 1e-5, name


def test_reused_saved_memory_with_lengths_matches_reference():
    """Saved tensors of 8 MB and more reuse the memory of the previous step's (not zeroed): a
    step over other data first, then packed sequences whose padded rows are never written."""
    reference = cellstate.LSTM(3, 64, backend="reference", dtype=torch.float64, peephole=True)
    ours = cellstate.LSTM(3, 64, backend="cpu", dtype=torch.float64, peephole=True)
    ours.load_state_dict(reference.state_dict())
    x = torch.randn(64, 64, 3, dtype=torch.float64)  # gates: 64 * 64 * 256 * 8 bytes = 8.4 MB
    ours(x * 100)[0].sum().backward()
    lengths = torch.randint(1, 65, (64,))
    packed = pack_padded_sequence(x, lengths, enforce_sorted=False)
    assert assert_modules_match(ours, reference, packed) < FLOAT64_BACKEND_WORST
