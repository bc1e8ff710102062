"""The CPU kernel's float32 -> bfloat16 rounding (kernels/cpu/bf16_round.h): to nearest even,
NaN as 0x7FC0, in every form it has: AVX512-BF16's vcvtneps2bf16 where the CPU has it (chosen
at run time), the AVX-512F form, the scalar one. The instruction flushes denormal inputs to zero
and keeps a NaN's sign and payload; the kernel routes such lanes through the other form, so
all forms must give the same bits, and a bfloat16 LSTM the same results with the instruction
switched off (set_native_bf16(False), the forced fallback)."""

import numpy as np
import pytest
import torch

import cellstate
from cellstate.kernels.cpu import build

BF16 = torch.bfloat16


def _kernel():
    return build.load()


def _native_supported() -> bool:
    kernel = _kernel()
    try:
        previous = kernel.set_native_bf16(True)
    except RuntimeError:
        return False
    kernel.set_native_bf16(previous)
    return True


def _reference_bits(x: torch.Tensor) -> torch.Tensor:
    """bf16_round's definition on the bit patterns (int64 arithmetic): round to nearest even by
    adding 0x7FFF plus the kept part's lowest bit, then truncating; every NaN as 0x7FC0."""
    bits = torch.from_numpy(x.numpy().view(np.uint32).astype(np.int64))
    rounded = (bits + 0x7FFF + ((bits >> 16) & 1)) >> 16
    rounded = torch.where(torch.isnan(x), torch.full_like(rounded, 0x7FC0), rounded)
    return rounded.to(torch.int32)


def _bits(values) -> torch.Tensor:
    """float32 values given as uint32 bit patterns."""
    return torch.from_numpy(np.array(values, dtype=np.uint32).view(np.float32))


EDGES = torch.cat(
    [
        # ties (halfway between two bfloat16 values: even below, even above), one ulp either side
        _bits([0x3F808000, 0x3F818000, 0x3F808001, 0x3F807FFF, 0xBF808000, 0xBF818000]),
        torch.tensor([1.0, -1.0, 0.0, -0.0, 0.5, -0.5, 3.0e38, -3.0e38]),
        # the largest float32 (rounds to inf), inf
        _bits([0x7F7FFFFF, 0xFF7FFFFF, 0x7F800000, 0xFF800000]),
        # subnormals: the smallest, the largest, a tie, negative ones; the smallest normal
        _bits([0x00000001, 0x007FFFFF, 0x00008000, 0x00018000, 0x80000001, 0x807FFFFF]),
        _bits([0x00800000, 0x80800000]),
        # NaNs: quiet, signalling, negative, with payloads
        _bits([0x7FC00000, 0xFFC00000, 0x7F800001, 0xFF800001, 0x7FBFFFFF, 0x7FC12345]),
        # gates near 1 and the saved complements -(1 - sigma) (bf16_cell.h)
        torch.tensor([1 - 2**-24, 1 - 2**-9, 0.999, 0.9990234, -(2**-24), -(2**-9), -0.001]),
        torch.tensor([-(1 - 0.999), -(1 - 0.99999), 0.50000006, -0.49999997]),
    ]
)


def _forms() -> list[bool]:
    return [False, True] if _native_supported() else [False]


@pytest.mark.parametrize("native", [False, True], ids=["avx512f_or_scalar", "avx512bf16"])
def test_bf16_rounding_gives_the_reference_bits(native):
    """Edge values (ties, subnormals, inf, NaN, values near 1 and the saved complements) and
    2^16 random bit patterns of every class, in lengths that leave a partial vector: each form
    gives bf16_round's bits; and torch's own rounding wherever that is not NaN (torch's
    vectorised conversion writes NaN as 0xFFFF)."""
    if native and not _native_supported():
        pytest.skip("this CPU (or build) has no AVX512-BF16")
    gen = torch.Generator().manual_seed(0)
    random = torch.randint(0, 2**32, (2**16 + 5,), generator=gen, dtype=torch.int64)
    random = torch.from_numpy(random.numpy().astype(np.uint32).view(np.float32))
    for x in (EDGES, random, EDGES[:13]):
        ours = _kernel().bf16_round_bits(x, native).to(torch.int32) & 0xFFFF
        assert torch.equal(ours, _reference_bits(x))
        finite = ~torch.isnan(x)
        torch_bits = x[finite].to(BF16).view(torch.int16).to(torch.int32) & 0xFFFF
        assert torch.equal(ours[finite], torch_bits)


def test_native_bf16_switch():
    """set_native_bf16 returns the previous setting; on a CPU without AVX512-BF16 switching it
    on is an error, and it starts off."""
    kernel = _kernel()
    if not _native_supported():
        assert kernel.set_native_bf16(False) is False
        with pytest.raises(RuntimeError, match="no AVX512-BF16"):
            kernel.set_native_bf16(True)
        with pytest.raises(RuntimeError, match="no AVX512-BF16"):
            kernel.bf16_round_bits(torch.ones(3), True)
        return
    assert kernel.set_native_bf16(True) is True  # on by default where supported
    assert kernel.set_native_bf16(False) is True
    assert kernel.set_native_bf16(True) is False


def _training_results(module, x):
    """Output, states and records, then the gradients of x and of every parameter."""
    module.zero_grad(set_to_none=True)
    x = x.detach().clone().requires_grad_()
    out, (h, c), *states = module(x)
    results = [out, h, c]
    if states:
        results += [getattr(states[0], n) for n in ("c", "i", "f", "g", "o")]
    gen = torch.Generator().manual_seed(1)
    sum((r.float() * torch.randn(r.shape, generator=gen)).sum() for r in results).backward()
    return results + [x.grad] + [p.grad for p in module.parameters()]


@pytest.mark.parametrize(
    "kwargs",
    [
        {},
        {"return_states": True},
        {"layer_norm": True, "return_states": True},
        {"peephole": True, "forget_gate": False},
        {"proj_size": 24, "num_layers": 2},
    ],
    ids=["plain", "records", "layer_norm", "peephole_no_forget", "proj_stacked"],
)
def test_bf16_lstm_same_bits_without_avx512bf16(kwargs):
    """A bfloat16 LSTM (bfloat16 products: the vectorised cell, its saved gates, the rounded
    operands of every product) trains to the same bits with the AVX512-BF16 rounding as with
    the forced fallback; the records and layer norm on c read the float32 gates the cell keeps
    for them."""
    if not _native_supported():
        pytest.skip("this CPU (or build) has no AVX512-BF16: only the fallback runs")
    torch.manual_seed(0)
    module = cellstate.LSTM(32, 48, backend="cpu", **kwargs).to(BF16)
    x = torch.randn(7, 8, 32).to(BF16)
    kernel = _kernel()
    native = _training_results(module, x)
    previous = kernel.set_native_bf16(False)
    try:
        fallback = _training_results(module, x)
    finally:
        kernel.set_native_bf16(previous)
    assert len(native) == len(fallback)
    for k, (a, b) in enumerate(zip(native, fallback, strict=True)):
        assert a.dtype == b.dtype and torch.equal(a, b), k
