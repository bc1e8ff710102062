"""cellstate.LSTM / RNN under torch.autocast("cpu", dtype=torch.bfloat16) against torch.nn.LSTM /
torch.nn.RNN with copied weights: the same output and state dtypes (autocast casts the input,
the states and the weights), values within bfloat16's tolerance, float32 parameter gradients.

CUDA autocast takes the same code path (layers/base.py casts by the tensor's own device type);
without a GPU here it is not run."""

import pytest
import torch
from torch import nn

import cellstate
from tests.differential import assert_close_labelled, flatten, scaled_tolerance, tolerance

T, B, D, H = 5, 3, 4, 6
BF16 = torch.bfloat16
OPTIONS = {
    "LSTM": [{}, {"num_layers": 2, "bidirectional": True}, {"proj_size": 3}],
    "RNN": [{}, {"num_layers": 2, "bidirectional": True}],
}
CASES = [(kind, options) for kind, all_options in OPTIONS.items() for options in all_options]


def _pair(kind: str, options: dict, backend: str):
    theirs = getattr(nn, kind)(D, H, **options)
    ours = getattr(cellstate, kind)(D, H, backend=backend, **options)
    ours.load_state_dict(theirs.state_dict())
    return ours, theirs


def _state(kind: str, module, dtype):
    layers = module.num_layers * (2 if module.bidirectional else 1)
    h = torch.randn(layers, B, getattr(module, "proj_size", 0) or H, dtype=dtype)
    return h if kind == "RNN" else (h, torch.randn(layers, B, H, dtype=dtype))


@pytest.mark.filterwarnings("ignore:LSTM with projections is not supported with oneDNN")
@pytest.mark.parametrize("backend", ["auto", "reference"])
@pytest.mark.parametrize("input_dtype", [torch.float32, BF16], ids=["f32_input", "bf16_input"])
@pytest.mark.parametrize(("kind", "options"), CASES, ids=[f"{k}{o}" for k, o in CASES])
def test_cpu_autocast_matches_torch(kind, options, input_dtype, backend):
    """A bfloat16 input (e.g. from a Linear before it under autocast) or a float32 one, with a
    float32 initial state: outputs as torch's in dtype and value, gradients float32."""
    ours, theirs = _pair(kind, options, backend)
    x = torch.randn(T, B, D, dtype=input_dtype)
    hx = _state(kind, theirs, torch.float32)
    results = []
    for module in (ours, theirs):
        with torch.autocast("cpu", dtype=BF16):
            result = module(x, hx)
        labelled = flatten(result)
        sum(out.float().pow(2).sum() for _, out in labelled).backward()
        grads = [(f"grad {n}", p.grad) for n, p in module.named_parameters()]
        results.append((labelled, grads))
    (ours_out, ours_grads), (torch_out, torch_grads) = results
    if options.get("proj_size"):
        # torch.nn.LSTM runs projections outside oneDNN, op by op under autocast, and its c_n
        # then keeps c_0's dtype (float32 here); cellstate follows the oneDNN path's rule.
        torch_out = [(name, t.to(BF16)) for name, t in torch_out]
    assert {t.dtype for _, t in torch_out} == {BF16}
    assert [t.dtype for _, t in ours_out] == [t.dtype for _, t in torch_out]
    assert_close_labelled(ours_out, torch_out, "autocast forward", **tolerance(BF16))
    for (name, ours_grad), (_, torch_grad) in zip(ours_grads, torch_grads, strict=True):
        assert ours_grad.dtype == torch_grad.dtype == torch.float32, name
        tol = scaled_tolerance(BF16, torch_grad)
        torch.testing.assert_close(ours_grad, torch_grad, **tol, msg=lambda m, n=name: f"{n}: {m}")


def test_bfloat16_input_without_autocast_still_raises():
    ours, theirs = _pair("LSTM", {}, "auto")
    x = torch.randn(T, B, D, dtype=BF16)
    for module in (ours, theirs):
        with pytest.raises(ValueError, match="input dtype"):
            module(x)


def test_float64_module_is_left_in_float64_as_torch_does():
    ours, theirs = _pair("LSTM", {}, "auto")
    ours.double(), theirs.double()
    x = torch.randn(T, B, D, dtype=torch.float64)
    with torch.autocast("cpu", dtype=BF16):
        assert ours(x)[0].dtype == theirs(x)[0].dtype == torch.float64
