"""The kernel is a pair of torch.library custom ops: torch.compile traces a layer without a graph
break, and torch.export captures it. The aot_eager backend keeps these to a few seconds (it runs
AOTAutograd, fake tensors and the registered backward, but no code generation)."""

import torch

import cellstate
from tests.differential import FLOAT64_SAME_KERNEL


def _lstm():
    return cellstate.LSTM(3, 4, num_layers=2, bidirectional=True, peephole=True, backend="cpu")


def test_compile_fullgraph_forward_and_backward_match_eager():
    torch._dynamo.reset()
    lstm = _lstm().double()
    x = torch.randn(5, 2, 3, dtype=torch.float64)
    compiled = torch.compile(lstm, fullgraph=True, backend="aot_eager")
    out, (h, c) = compiled(x)
    (out.sum() + c.sum()).backward()
    grads = {n: p.grad.clone() for n, p in lstm.named_parameters()}
    lstm.zero_grad()
    out_eager, (_, c_eager) = lstm(x)
    (out_eager.sum() + c_eager.sum()).backward()
    torch.testing.assert_close(out, out_eager, **FLOAT64_SAME_KERNEL)
    for name, param in lstm.named_parameters():
        torch.testing.assert_close(grads[name], param.grad, **FLOAT64_SAME_KERNEL)


def test_export_contains_the_custom_op_and_runs():
    lstm = _lstm().eval()
    x = torch.randn(5, 2, 3)
    exported = torch.export.export(lstm, (x,))
    targets = {str(node.target) for node in exported.graph.nodes if node.op == "call_function"}
    assert "cellstate.lstm_forward.default" in targets
    with torch.no_grad():
        torch.testing.assert_close(exported.module()(x)[0], lstm(x)[0])


def test_compile_fullgraph_with_zoneout_draws_the_eager_masks():
    """Zoneout's masks are traced (torch integer ops, not the kernel's C++ twin): a fresh draw
    per call, and the same masks as eager under the same seed, with the kernel loaded."""
    torch._dynamo.reset()
    lstm = cellstate.LSTM(3, 4, zoneout=0.3, backend="cpu").double().train()
    x = torch.randn(5, 2, 3, dtype=torch.float64)
    lstm(x)  # loads the kernel, whose C++ mask function dynamo cannot trace
    compiled = torch.compile(lstm, fullgraph=True, backend="aot_eager")
    first, _ = compiled(x)
    second, _ = compiled(x)
    assert not torch.equal(first, second)
    torch.manual_seed(1)
    eager, _ = lstm(x)
    torch.manual_seed(1)
    traced, _ = compiled(x)
    torch.testing.assert_close(traced, eager, **FLOAT64_SAME_KERNEL)
