"""Zoneout's Bernoulli masks: the C++ hash and its torch spec give the same bits."""

import pytest
import torch

from cellstate.kernels import masks
from cellstate.kernels.cpu import build


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
@pytest.mark.parametrize("p", [0.0, 0.1, 0.5, 0.999, 1.0])
def test_cpp_mask_equals_torch_spec(p, dtype):
    like = torch.empty(0, dtype=dtype)
    for seed in (0, 12345, 2**61 + 7, 2**62 - 1):
        shape = (50, 7, 33)
        ours = build.load().bernoulli_mask(seed, list(shape), p, dtype)
        spec = masks.hashed_mask(seed, shape, p, like)
        assert ours.dtype == dtype and ours.shape == shape
        assert torch.equal(ours, spec)


def test_indices_beyond_32_bits_use_the_high_half():
    """Elements 2^32 apart differ (the high half of the index is mixed in), through the hash
    that hashed_mask uses (a mask of 2^32 elements would not fit in memory)."""
    k = torch.tensor([5, 5 + 2**32, 6, 6 + 2**32])
    h = masks.element_hash(99, k)
    assert h[0] != h[1] and h[2] != h[3]
    assert torch.equal(h[[0, 2]], masks.element_hash(99, torch.arange(7))[[5, 6]])


def test_mask_statistics_and_reproducibility():
    like = torch.empty(0)
    build.load()
    torch.manual_seed(3)
    a = masks.bernoulli_mask((1000, 32, 64), 0.3, like)
    b = masks.bernoulli_mask((1000, 32, 64), 0.3, like)
    torch.manual_seed(3)
    again = masks.bernoulli_mask((1000, 32, 64), 0.3, like)
    assert torch.equal(a, again) and not torch.equal(a, b)
    assert set(a.unique().tolist()) == {0.0, 1.0}
    assert abs(a.mean().item() - 0.3) < 0.002
    # neighbouring elements, steps and sequences are uncorrelated
    centred = a - a.mean()
    for dim in range(3):
        n = a.shape[dim] - 1
        lagged = (centred.narrow(dim, 0, n) * centred.narrow(dim, 1, n)).mean() / centred.var()
        assert abs(lagged.item()) < 0.01


def test_torch_path_without_a_built_kernel_gives_the_same_bits(monkeypatch):
    monkeypatch.setattr(build, "is_built", lambda: False)
    monkeypatch.setattr(build, "load", None)  # a mask never builds or loads the kernel itself
    torch.manual_seed(4)
    mask = masks.bernoulli_mask((20, 3, 5), 0.5, torch.empty(0, dtype=torch.float64))
    assert mask.dtype == torch.float64 and mask.shape == (20, 3, 5)
    monkeypatch.undo()
    torch.manual_seed(4)
    seed = int(torch.randint(0, 2**masks.SEED_BITS, ()))
    assert torch.equal(mask, build.load().bernoulli_mask(seed, [20, 3, 5], 0.5, torch.float64))
