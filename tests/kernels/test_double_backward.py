"""Second-order gradients (backward with create_graph=True) through the CPU kernel: a WGAN-GP
gradient penalty through another layer and directly, against torch.nn.LSTM / torch.nn.RNN with
copied weights, and torch.autograd.gradgradcheck in float64 for every variant and option."""

import pytest
import torch
from torch import nn
from torch.func import functional_call
from torch.nn.utils.rnn import pack_padded_sequence, pad_packed_sequence

import cellstate
from tests.differential import assert_close_labelled, tolerance

F64 = torch.float64
T, B, D, H = 4, 3, 3, 4
LENGTHS = torch.tensor([4, 2, 3])
TORCH_OPTIONS = {
    "plain": {},
    "two_layers": {"num_layers": 2},
    "bidirectional": {"bidirectional": True},
    "no_bias": {"bias": False},
    "packed": {},
}


def _pair(kind: str, options: dict, dtype=F64):
    theirs = getattr(nn, kind)(D, H, dtype=dtype, **options)
    ours = getattr(cellstate, kind)(D, H, dtype=dtype, backend="cpu", **options)
    ours.load_state_dict(theirs.state_dict())
    return ours, theirs


def _run(module, x, packed: bool):
    """The module's output (T, B, X) for x, through a PackedSequence when packed."""
    if not packed:
        return module(x)[0]
    out = module(pack_padded_sequence(x, LENGTHS, enforce_sorted=False))[0]
    return pad_packed_sequence(out)[0]


def _penalty_gradients(module, before: nn.Module, x, packed: bool) -> list:
    """WGAN-GP: penalty = (|d critic / dx| - 1)^2 with critic = sum(module(before(x))^2);
    returns the labelled gradients of the penalty for x and every parameter."""
    x = x.detach().clone().requires_grad_()
    critic = _run(module, before(x), packed).pow(2).sum()
    (dx,) = torch.autograd.grad(critic, x, create_graph=True)
    penalty = (dx.norm() - 1) ** 2
    named = [("x", x), *before.named_parameters(), *module.named_parameters()]
    grads = torch.autograd.grad(penalty, [t for _, t in named], allow_unused=True)
    return [(f"grad {name}", g) for (name, _), g in zip(named, grads, strict=True)]


@pytest.mark.parametrize("through", ["linear", "direct"])
@pytest.mark.parametrize("option", list(TORCH_OPTIONS))
@pytest.mark.parametrize("kind", ["LSTM", "RNN"])
def test_gradient_penalty_matches_torch(kind, option, through):
    """The penalty's gradients (second order in the LSTM) equal torch.nn.LSTM's: before the
    fix the LSTM's parameter gradients were None and the linear layer's were wrong."""
    ours, theirs = _pair(kind, TORCH_OPTIONS[option])
    before = nn.Linear(D, D, dtype=F64) if through == "linear" else nn.Identity()
    x = torch.randn(T, B, D, dtype=F64)
    packed = option == "packed"
    expected = _penalty_gradients(theirs, before, x, packed)
    assert all(g is not None for _, g in expected)
    assert_close_labelled(
        _penalty_gradients(ours, before, x, packed), expected, "penalty", **tolerance(F64)
    )


def test_lstm_with_projection_penalty_matches_torch():
    ours, theirs = _pair("LSTM", {"proj_size": 2, "num_layers": 2, "bidirectional": True})
    x = torch.randn(T, B, D, dtype=F64)
    expected = _penalty_gradients(theirs, nn.Identity(), x, False)
    assert_close_labelled(
        _penalty_gradients(ours, nn.Identity(), x, False), expected, "penalty", **tolerance(F64)
    )


@pytest.mark.parametrize("kind", ["LSTM", "RNN"])
def test_first_order_gradients_under_create_graph_are_the_kernels(kind):
    """create_graph=True changes nothing in the first-order values (float32, where the kernel
    and the reference round differently): they are bit for bit those of a plain backward."""
    ours, _ = _pair(kind, {"num_layers": 2}, dtype=torch.float32)
    x = torch.randn(T, B, D, requires_grad=True)
    results = []
    for create_graph in (False, True):
        out = ours(x)[0]
        results.append(
            torch.autograd.grad(out.sum(), [x, *ours.parameters()], create_graph=create_graph)
        )
    for plain, with_graph in zip(*results, strict=True):
        assert torch.equal(plain, with_graph.detach())


LSTM_VARIANTS = {
    "plain": {},
    "two_layers_bidirectional": {"num_layers": 2, "bidirectional": True},
    "proj": {"proj_size": 1},
    "peephole": {"peephole": True},
    "layer_norm": {"layer_norm": True},
    "no_forget_gate": {"forget_gate": False},
    "zoneout": {"zoneout": (0.3, 0.5)},
    "zoneout_eval": {"zoneout": (0.3, 0.5), "train": False},
    "recurrent_dropout": {"recurrent_dropout": 0.4},
    "return_states": {"return_states": True},
    "everything_packed": {
        "proj_size": 1,
        "peephole": True,
        "layer_norm": True,
        "forget_gate": False,
        "zoneout": (0.2, 0.4),
        "recurrent_dropout": 0.3,
        "bidirectional": True,
        "packed": True,
    },
}
RNN_VARIANTS = {
    "tanh": {},
    "relu_bidirectional_packed": {"nonlinearity": "relu", "bidirectional": True, "packed": True},
    "two_layers": {"num_layers": 2},
}


SMALL = 2  # D and H of the gradgradcheck modules: its cost grows with the parameters squared


def _gradgradcheck(module, packed: bool):
    """gradgradcheck of module's results as a function of (x, *parameters); the masks of
    zoneout and recurrent dropout are redrawn from the same seed at every call."""
    names = [n for n, _ in module.named_parameters()]

    def fn(x, *params):
        torch.manual_seed(7)
        inp = pack_padded_sequence(x, LENGTHS, enforce_sorted=False) if packed else x
        result = functional_call(module, dict(zip(names, params, strict=True)), (inp,))
        output, state = result[0], result[1]
        output = pad_packed_sequence(output)[0] if packed else output
        states = state if isinstance(state, tuple) else (state,)
        records = (result[2].h, result[2].c, result[2].f) if len(result) > 2 else ()
        return (output, *states, *records)

    x = torch.randn(T, B, SMALL, dtype=F64)
    inputs = [t.detach().clone().requires_grad_() for t in (x, *module.parameters())]
    assert torch.autograd.gradgradcheck(fn, inputs)


@pytest.mark.parametrize("variant", list(LSTM_VARIANTS))
def test_lstm_gradgradcheck(variant):
    options = dict(LSTM_VARIANTS[variant])
    train, packed = options.pop("train", True), options.pop("packed", False)
    module = cellstate.LSTM(SMALL, SMALL, dtype=F64, backend="cpu", **options).train(train)
    _gradgradcheck(module, packed)


@pytest.mark.parametrize("variant", list(RNN_VARIANTS))
def test_rnn_gradgradcheck(variant):
    options = dict(RNN_VARIANTS[variant])
    packed = options.pop("packed", False)
    _gradgradcheck(cellstate.RNN(SMALL, SMALL, dtype=F64, backend="cpu", **options), packed)
