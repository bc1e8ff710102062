"""An empty batch (B = 0) gives what torch.nn.LSTM / torch.nn.RNN give: empty outputs and states
of the right shapes, and zero weight gradients, on every backend."""

import pytest
import torch

import cellstate

KWARGS = [
    {},
    {"num_layers": 2, "bidirectional": True},
    {"batch_first": True},
]


@pytest.mark.parametrize("backend", ["auto", "cpu", "reference"])
@pytest.mark.parametrize("kwargs", KWARGS, ids=["plain", "2-layer-bidirectional", "batch_first"])
@pytest.mark.parametrize("kind", ["LSTM", "RNN"])
def test_empty_batch_matches_torch(kind, kwargs, backend):
    theirs = getattr(torch.nn, kind)(3, 4, **kwargs)
    ours = getattr(cellstate, kind)(3, 4, backend=backend, **kwargs)
    ours.load_state_dict(theirs.state_dict())
    x = torch.randn((0, 5, 3) if kwargs.get("batch_first") else (5, 0, 3), requires_grad=True)
    expected, got = theirs(x), ours(x)
    leaves = torch.utils._pytree.tree_leaves
    for a, b in zip(leaves(got), leaves(expected), strict=True):
        assert a.shape == b.shape and a.dtype == b.dtype
    got[0].sum().backward()
    assert x.grad.shape == x.shape
    assert all(p.grad is not None and not p.grad.any() for p in ours.parameters())
