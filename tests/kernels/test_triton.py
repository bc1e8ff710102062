"""The Triton backend on CPU through Triton's interpreter (TRITON_INTERPRET=1, set here before
triton is imported): cellstate.LSTM / RNN with backend="triton" against the reference backend
(outputs, final states, per-step states, every gradient) for every variant and input form, a
gradcheck of the driver, bit-identical gradients run to run, the custom ops' registrations
(opcheck, torch.compile, torch.export) and the backend choice. Shapes are tiny: the interpreter
runs each kernel launch in numpy (a few ms each)."""

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from torch.nn.utils.rnn import pack_padded_sequence

import cellstate
import tests.kernels.triton_interpreter  # noqa: F401 (sets TRITON_INTERPRET=1, or skips)
from cellstate.cli.main import main
from cellstate.kernels import dispatch, reference
from cellstate.kernels.params import LSTMLayerParams, StepNoise
from cellstate.kernels.triton import backend as triton_backend
from cellstate.kernels.triton import runtime as triton_runtime
from tests.differential import (
    FLOAT64_BACKEND_WORST,
    FLOAT64_KERNEL,
    FLOAT64_SAME_KERNEL,
    assert_modules_match,
)
from tests.kernels.test_cpu_modules import (
    FORMS,
    LSTM_VARIANTS,
    SameNoise,
    _assert_as_close_to_float64,
)

T, B, D, H = 6, 3, 4, 5
GPU_VARIANTS = (
    "peephole", "layer_norm", "no_forget_gate", "proj", "zoneout", "recurrent_dropout",
    "return_states",
)  # fmt: skip


def _inputs(form: str, dtype, batch_first: bool, state_sizes: list[int], layers: int = 1):
    """The input of one call in the given form; "hx" gives states for ``layers`` layers of a
    bidirectional module."""
    x = torch.randn(B, T, D, dtype=dtype) if batch_first else torch.randn(T, B, D, dtype=dtype)
    if form == "packed":
        return (pack_padded_sequence(x, torch.tensor([6, 2, 4]), enforce_sorted=False),)
    if form == "unbatched":
        return (x[:, 0],)
    if form == "hx":
        states = tuple(torch.randn(2 * layers, B, size, dtype=dtype) for size in state_sizes)
        return (x, states if len(states) > 1 else states[0])
    return (x,)


def _pair(cls, dtype, train=True, num_layers=1, **kwargs):
    ref = cls(D, H, num_layers=num_layers, backend="reference", dtype=dtype, **kwargs)
    ours = cls(D, H, num_layers=num_layers, backend="triton", dtype=dtype, **kwargs)
    ours.load_state_dict(ref.state_dict())
    return SameNoise(ours).train(train), SameNoise(ref).train(train)


def _check(ours, ref, args, dtype):
    if dtype == torch.float32:
        _assert_as_close_to_float64(ours, ref, args)
    else:
        assert assert_modules_match(ours, ref, *args) < FLOAT64_BACKEND_WORST


# One bidirectional layer (both directions; a second layer adds nothing the kernels see).
# float64: every variant packed (ragged lengths, reverse) and with given states; every form for
# "everything"; float32 (anchored to float64): every variant packed. The input forms exercise
# the layer, which tests/kernels/test_cpu_modules.py covers in full; the interpreter is slow.
CASES = [(v, f, torch.float64) for v in LSTM_VARIANTS for f in ("packed", "hx")]
CASES += [("everything", f, torch.float64) for f in FORMS if f not in ("packed", "hx")]
CASES += [(v, "packed", torch.float32) for v in LSTM_VARIANTS]


@pytest.mark.parametrize(
    ("variant", "form", "dtype"), CASES, ids=[f"{v}-{f}-{str(d)[6:]}" for v, f, d in CASES]
)
def test_lstm_matches_reference(variant, form, dtype):
    kwargs = dict(LSTM_VARIANTS[variant], bidirectional=True, batch_first=form == "batch_first")
    ours, ref = _pair(cellstate.LSTM, dtype, **kwargs)
    P = kwargs.get("proj_size") or H
    _check(ours, ref, _inputs(form, dtype, kwargs["batch_first"], [P, H]), dtype)


def test_two_layers_with_everything_match_reference():
    kwargs = dict(LSTM_VARIANTS["everything"], bidirectional=True)
    ours, ref = _pair(cellstate.LSTM, torch.float64, num_layers=2, **kwargs)
    _check(ours, ref, _inputs("hx", torch.float64, False, [3, H], layers=2), torch.float64)


RNN_CASES = [("packed", torch.float64), ("hx", torch.float64), ("packed", torch.float32)]


@pytest.mark.parametrize(("form", "dtype"), RNN_CASES, ids=["packed-f64", "hx-f64", "packed-f32"])
@pytest.mark.parametrize("nonlinearity", ["tanh", "relu"])
def test_rnn_matches_reference(nonlinearity, form, dtype):
    kwargs = {"nonlinearity": nonlinearity, "bidirectional": True, "return_states": True}
    kwargs["batch_first"] = form == "batch_first"
    ours, ref = _pair(cellstate.RNN, dtype, **kwargs)
    _check(ours, ref, _inputs(form, dtype, kwargs["batch_first"], [H]), dtype)


def test_rnn_without_bias_matches_reference():
    ours, ref = _pair(cellstate.RNN, torch.float64, bias=False)
    x = torch.randn(6, 3, D, dtype=torch.float64)
    assert assert_modules_match(ours, ref, x) < FLOAT64_BACKEND_WORST


@pytest.mark.parametrize("variant", ["plain", "zoneout", "everything"])
def test_lstm_eval_mode_matches_reference(variant):
    """Evaluation: zoneout is the scalar expectation, recurrent dropout is off."""
    ours, ref = _pair(cellstate.LSTM, torch.float64, train=False, **LSTM_VARIANTS[variant])
    x = torch.randn(6, 3, D, dtype=torch.float64)
    assert assert_modules_match(ours, ref, x) < FLOAT64_BACKEND_WORST


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16], ids=["f16", "bf16"])
def test_16_bit_is_as_close_to_float64_as_the_16_bit_reference(dtype):
    """16-bit tensors with float32 state math: every output and gradient within 3x the 16-bit
    reference's worst error against float64 (relative to each tensor's largest value)."""
    weights = cellstate.LSTM(D, H, dtype=torch.float64, layer_norm=True).state_dict()
    x = torch.randn(T, B, D, dtype=dtype)
    results = {}
    for name, backend, dt in (
        ("ours", "triton", dtype),
        ("reference", "reference", dtype),
        ("float64", "reference", torch.float64),
    ):
        lstm = cellstate.LSTM(D, H, backend=backend, dtype=dt, layer_norm=True)
        lstm.load_state_dict({k: v.to(dtype).to(dt) for k, v in weights.items()})
        out, (h, c) = lstm(x.to(dt))
        assert out.dtype == h.dtype == c.dtype == dt
        (out.float().sum() + c.float().sum()).backward()
        results[name] = [out, *(q.grad for q in lstm.parameters())]
    assert all(r.dtype == dtype for r in results["ours"])

    def error(a, exact):
        return ((a.double() - exact).abs().max() / exact.abs().max()).item()

    ours, theirs, exact = results.values()
    bar = 3 * max(error(b, e) for b, e in zip(theirs, exact, strict=True))
    for k, (a, e) in enumerate(zip(ours, exact, strict=True)):
        assert error(a, e) <= bar, f"result {k}: {error(a, e):.1e} > {bar:.1e}"


def _everything(dtype=torch.float64, T=3, B=2, D=2, H=3, P=2):
    """Inputs of one layer-direction with every variant on, as leaves requiring grad."""

    def leaf(*shape):
        return torch.randn(*shape, dtype=dtype).requires_grad_(True)

    G = 4 * H
    p = LSTMLayerParams(
        w_ih=leaf(G, D), w_hh=leaf(G, P), b_ih=leaf(G), b_hh=leaf(G), w_hr=leaf(P, H),
        w_ci=leaf(H), w_cf=leaf(H), w_co=leaf(H), ln_ih=leaf(G), ln_hh=leaf(G),
        ln_c_weight=leaf(H), ln_c_bias=leaf(H),
    )  # fmt: skip
    noise = StepNoise(
        zoneout_h=(torch.rand(T, B, P) < 0.3).to(dtype),
        zoneout_c=(torch.rand(T, B, H) < 0.5).to(dtype),
        recurrent_mask=(torch.rand(B, P) < 0.7).to(dtype) / 0.7,
    )
    return leaf(T, B, D), leaf(B, P), leaf(B, H), p, noise, torch.tensor([3, 2])


def _layer_results(x, h0, c0, p, noise, lengths, kernel=triton_backend):
    out, h, c, states = kernel.lstm_layer(x, h0, c0, p, noise, lengths, True, True)
    return (out, h, c, *states.values())


def test_gradcheck_of_the_driver():
    """Every variant, lengths, reverse direction, per-step states: float64 gradcheck."""
    x, h0, c0, p, noise, lengths = _everything()
    params = [p.w_ih, p.w_hh, p.b_ih, p.w_hr, p.w_ci, p.w_cf, p.w_co, p.ln_ih, p.ln_hh]
    params += [p.ln_c_weight, p.ln_c_bias]

    def f(x, h0, c0, *tensors):
        q = LSTMLayerParams(*tensors[:3], p.b_hh, *tensors[3:])
        return _layer_results(x, h0, c0, q, noise, lengths)

    assert torch.autograd.gradcheck(f, (x, h0, c0, *params), fast_mode=True)


def test_gradients_are_bit_identical_run_to_run():
    x, h0, c0, p, noise, lengths = _everything(torch.float32, T=4, B=3, H=8, P=5)
    lengths = torch.tensor([4, 2, 3])
    leaves = [x, h0, c0, p.w_ih, p.w_hh, p.b_ih, p.w_hr, p.w_ci, p.ln_hh, p.ln_c_weight]

    def grads():
        results = _layer_results(x, h0, c0, p, noise, lengths)
        loss = sum((r * torch.linspace(-1, 1, r.numel()).view_as(r)).sum() for r in results)
        return torch.autograd.grad(loss, leaves)

    first, second = grads(), grads()
    for a, b in zip(first, second, strict=True):
        assert torch.equal(a, b)


def test_matches_reference_with_every_variant_and_lengths():
    """One layer-direction, every variant, ragged lengths and reverse: each result and gradient
    (the module tests go through the layer's packing; this one calls the kernels directly)."""
    x, h0, c0, p, noise, lengths = _everything()
    leaves = [x, h0, c0, p.w_ih, p.w_hh, p.b_ih, p.b_hh, p.w_hr, p.w_ci, p.w_cf, p.w_co]
    leaves += [p.ln_ih, p.ln_hh, p.ln_c_weight, p.ln_c_bias]
    results = {}
    for kernel in (triton_backend, reference):
        values = _layer_results(x, h0, c0, p, noise, lengths, kernel)
        loss = sum((v * torch.cos(torch.arange(v.numel()).view_as(v))).sum() for v in values)
        results[kernel] = [*values, *torch.autograd.grad(loss, leaves)]
    for a, b in zip(results[triton_backend], results[reference], strict=True):
        torch.testing.assert_close(a, b, **FLOAT64_KERNEL)


def test_double_backward_raises_naming_the_reference_backend():
    lstm = cellstate.LSTM(2, 3, backend="triton", dtype=torch.float64)
    rnn = cellstate.RNN(2, 3, backend="triton", dtype=torch.float64)
    x = torch.randn(3, 1, 2, dtype=torch.float64, requires_grad=True)
    for module in (lstm, rnn):
        with pytest.raises(RuntimeError, match="no double backward.*backend='reference'"):
            torch.autograd.grad(module(x)[0].sum(), x, create_graph=True)


def test_opcheck_of_the_custom_ops():
    """Schema, fake implementations (shapes, dtypes), autograd registration, AOT dispatch."""
    x, h0, c0, p, noise, lengths = _everything(T=2, B=2)
    xa = torch.randn(2, 2, 12, dtype=torch.float64, requires_grad=True)
    args = (xa, h0, c0, p.w_hh, p.w_hr, p.w_ci, p.w_cf, p.w_co, p.ln_hh, p.ln_c_weight)
    args += (p.ln_c_bias, noise.zoneout_h, noise.zoneout_c, noise.recurrent_mask, lengths, True)
    torch.library.opcheck(torch.ops.cellstate.triton_lstm_forward.default, args)
    rnn_args = (
        torch.randn(2, 2, 3, dtype=torch.float64, requires_grad=True),
        h0[:, :1].expand(2, 3).contiguous(),
        torch.randn(3, 3, dtype=torch.float64, requires_grad=True),
        lengths,
        False,
    )
    torch.library.opcheck(torch.ops.cellstate.triton_rnn_forward.default, rnn_args)


def test_compile_fullgraph_and_export():
    torch._dynamo.reset()
    lstm = cellstate.LSTM(3, 4, peephole=True, layer_norm=True, backend="triton").double()
    x = torch.randn(3, 2, 3, dtype=torch.float64)
    compiled = torch.compile(lstm, fullgraph=True, backend="aot_eager")
    out, (_, c) = compiled(x)
    (out.sum() + c.sum()).backward()
    grads = {n: q.grad.clone() for n, q in lstm.named_parameters()}
    lstm.zero_grad()
    eager, (_, c_eager) = lstm(x)
    (eager.sum() + c_eager.sum()).backward()
    torch.testing.assert_close(out, eager, **FLOAT64_SAME_KERNEL)
    for name, param in lstm.named_parameters():
        torch.testing.assert_close(grads[name], param.grad, **FLOAT64_SAME_KERNEL)
    exported = torch.export.export(lstm.eval(), (x,))
    targets = {str(n.target) for n in exported.graph.nodes if n.op == "call_function"}
    assert "cellstate.triton_lstm_forward.default" in targets


def test_dispatch_chooses_and_explains(monkeypatch):
    x = torch.randn(2, 1, 1)
    assert "triton" in dispatch.BACKENDS
    assert dispatch.select("triton", x) is triton_backend
    assert dispatch.select("auto", x) is not triton_backend  # CPU tensors: the CPU kernel
    with pytest.raises(RuntimeError, match="backend='triton'.*CUDA tensors; got a meta"):
        dispatch.select("triton", torch.empty(2, 1, 1, device="meta"))
    monkeypatch.setenv("TRITON_INTERPRET", "0")
    with pytest.raises(RuntimeError, match="backend='triton'.*TRITON_INTERPRET=1"):
        dispatch.select("triton", x)
    monkeypatch.setenv("TRITON_INTERPRET", "1")
    assert "interpreter" in dispatch.backend_status()["triton"]


def test_gpu_benchmark_smoke_run(tmp_path, capsys):
    """cellstate bench --smoke (the GPU benchmark, tiny, on CPU through the interpreter)
    measures every row and states every target, so the one GPU session gets a script that
    runs."""
    out = tmp_path / "gpu.json"
    assert main(["bench", "--smoke", "--out", str(out)]) == 0
    data = json.loads(out.read_text())
    variants = {row["variant"] for row in data["rows"]}
    assert variants == {"plain", "packed", "vs reference", *GPU_VARIANTS}
    assert all(row["ms"] > 0 for row in data["rows"])
    assert sum(line.startswith(("met", "MISSED")) for line in data["verdicts"]) == 2 + 7 + 1
    assert "meaningless" in capsys.readouterr().out
    assert main(["bench", "--verdicts", str(out)]) == 0  # the targets of a saved (partial) run
    assert capsys.readouterr().out.splitlines() == data["verdicts"][1:]


def test_auto_without_triton_warns_once_and_triton_raises(monkeypatch):
    """Where triton is missing, "auto" on a GPU tensor says why (once) and runs the reference;
    "triton" raises naming the reason."""
    missing = "triton is not installed (test)"
    monkeypatch.setattr(triton_runtime, "TRITON_MISSING", missing)
    monkeypatch.setattr(dispatch, "_warned_triton", False)
    x = torch.randn(2, 1, 1)
    with pytest.warns(RuntimeWarning, match=r"reference backend on the GPU because triton is no"):
        assert dispatch._triton("auto", x) is reference
        assert dispatch._triton("auto", x) is reference
    with pytest.raises(RuntimeError, match=r"backend='triton'.*triton is not installed \(test\)"):
        dispatch.select("triton", x)
    assert missing in dispatch.backend_status()["triton"]


def test_interpreter_asked_for_after_triton_was_imported_raises_naming_the_order():
    """Triton makes its own @jit functions (tl.sum among them) interpreted or compiled when it is
    imported: with TRITON_INTERPRET=1 set after `import triton` the interpreter failed inside the
    kernel ("Cannot call @triton.jit'd outside of the scope of a kernel"); now the call says why
    and what to do."""
    code = (
        "import os, torch, triton.language, cellstate\n"
        "os.environ['TRITON_INTERPRET'] = '1'\n"
        "try:\n"
        "    cellstate.LSTM(2, 3, backend='triton')(torch.randn(4, 1, 2))\n"
        "except RuntimeError as error:\n"
        "    print(error)\n"
    )
    env = {k: v for k, v in os.environ.items() if k != "TRITON_INTERPRET"}
    env["PYTHONPATH"] = str(Path(__file__).resolve().parents[2] / "src")
    run = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True)
    assert run.returncode == 0, run.stderr[-3000:]
    assert "backend='triton'" in run.stdout and "set after triton was imported" in run.stdout
