"""Stage B of the Triton backend (the persistent kernels, ``persistent_ops``) on CPU through
Triton's interpreter: selected with CELLSTATE_TRITON_STAGE=B, every LSTM variant against the
reference backend (outputs, final states, per-step states, every gradient) in float64 and
float32, 16-bit within the 16-bit reference's error, several programs, a gradcheck, and the
selection itself. Each test checks that the persistent kernels ran (not Stage A's loop)."""

import importlib.util
import json
import os
import subprocess
import sys
from dataclasses import replace
from pathlib import Path

import pytest
import torch

import cellstate
import tests.kernels.triton_interpreter  # noqa: F401 (sets TRITON_INTERPRET=1, or skips)
from cellstate.kernels import reference
from cellstate.kernels.triton import backend as triton_backend
from cellstate.kernels.triton import lstm_ops, persistent_ops
from tests.kernels.test_cpu_modules import LSTM_VARIANTS
from tests.kernels.test_triton import (
    H,
    _check,
    _everything,
    _inputs,
    _layer_results,
    _pair,
)
from tests.kernels.test_triton import (
    test_16_bit_is_as_close_to_float64_as_the_16_bit_reference as check_16_bit,
)

ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture
def stage_b(monkeypatch):
    """CELLSTATE_TRITON_STAGE=B, counting the persistent launches: the test must launch both."""
    monkeypatch.setenv(lstm_ops.STAGE_VARIABLE, "B")
    launches = {"forward": 0, "backward": 0}
    for name in launches:
        original = getattr(persistent_ops, name)

        def counted(*args, _name=name, _original=original, **kwargs):
            launches[_name] += 1
            return _original(*args, **kwargs)

        monkeypatch.setattr(persistent_ops, name, counted)
    yield launches
    assert launches["forward"] > 0 and launches["backward"] > 0, launches


# One bidirectional layer, packed (ragged lengths, a reverse direction): every variant in
# float64, and anchored to float64 in float32.
CASES = [(v, torch.float64) for v in LSTM_VARIANTS]
CASES += [(v, torch.float32) for v in ("plain", "layer_norm", "everything")]


@pytest.mark.parametrize(
    ("variant", "dtype"), CASES, ids=[f"{v}-{str(d)[6:]}" for v, d in CASES]
)  # fmt: skip
def test_lstm_matches_reference(stage_b, variant, dtype):
    kwargs = dict(LSTM_VARIANTS[variant], bidirectional=True)
    ours, ref = _pair(cellstate.LSTM, dtype, **kwargs)
    P = kwargs.get("proj_size") or H
    _check(ours, ref, _inputs("packed", dtype, False, [P, H]), dtype)


def _assert_layer_matches_reference(dtype, lengths, *shape):
    """Every result and gradient of one layer-direction with every variant (ragged lengths,
    reverse direction) against the reference; shape: T, B, D, H, P."""
    T, B, D, H, P = shape
    x, h0, c0, p, noise, _ = _everything(dtype, T=T, B=B, D=D, H=H, P=P)
    leaves = [x, h0, c0, p.w_ih, p.w_hh, p.b_ih, p.b_hh, p.w_hr, p.w_ci, p.w_cf, p.w_co]
    leaves += [p.ln_ih, p.ln_hh, p.ln_c_weight, p.ln_c_bias]
    results = {}
    for kernel in (triton_backend, reference):
        values = _layer_results(x, h0, c0, p, noise, lengths, kernel)
        loss = sum((v * torch.cos(torch.arange(v.numel()).view_as(v))).sum() for v in values)
        results[kernel] = [*values, *torch.autograd.grad(loss, leaves)]
    tol = {"rtol": 1e-10, "atol": 1e-12} if dtype == torch.float64 else {"rtol": 1e-4, "atol": 1e-5}
    for k, (a, b) in enumerate(zip(results[triton_backend], results[reference], strict=True)):
        torch.testing.assert_close(a, b, **tol, msg=lambda m, k=k: f"result {k}: {m}")


ROW_CASES = [(torch.float64, "16"), (torch.float64, "4"), (torch.float32, None)]


@pytest.mark.parametrize(
    ("dtype", "rows"), ROW_CASES, ids=["f64-16rows", "f64-4rows", "f32-default"]
)  # fmt: skip
def test_several_programs_with_every_variant(stage_b, monkeypatch, dtype, rows):
    """18 rows: two programs of 16 rows (tl.dot) or five of 4 (the FMA path), the last one
    mostly masked."""
    if rows is not None:
        monkeypatch.setenv(persistent_ops.ROWS_VARIABLE, rows)
    lengths = torch.randint(1, 4, (18,), generator=torch.Generator().manual_seed(0))
    _assert_layer_matches_reference(dtype, lengths, 3, 18, 2, 3, 2)


@pytest.mark.parametrize("rows", ["16", "4"])
def test_several_tiles_of_the_weights(stage_b, monkeypatch, rows):
    """H=20, P=17: the products loop over several (BLOCK_K, BLOCK_N) tiles of W_hh (80 gate
    rows: 2 column tiles of 64 forward, 2 of K backward with 16 rows; 2 K tiles of 16 with 4)
    and of W_hr, partly masked."""
    monkeypatch.setenv(persistent_ops.ROWS_VARIABLE, rows)
    _assert_layer_matches_reference(torch.float64, torch.tensor([2, 3, 1, 3, 2]), 3, 5, 3, 20, 17)


def test_gradcheck_of_the_driver(stage_b):
    """Every variant, lengths, reverse direction, per-step states: float64 gradcheck of the
    states and the recurrent and projection matrices (the other gradients are compared with
    the reference's above; each input here costs the interpreter two more runs)."""
    x, h0, c0, p, noise, lengths = _everything()

    def f(h0, c0, w_hh, w_hr):
        q = replace(p, w_hh=w_hh, w_hr=w_hr)
        results = _layer_results(x.detach(), h0, c0, q, noise, lengths)
        return torch.cat([r.flatten() for r in results])  # one output: one backward

    assert torch.autograd.gradcheck(f, (h0, c0, p.w_hh, p.w_hr), fast_mode=True)


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16], ids=["f16", "bf16"])
def test_16_bit_is_as_close_to_float64_as_the_16_bit_reference(stage_b, dtype):
    """16-bit weights (the recurrent products in 16-bit operands, float32 sums; bfloat16 is
    multiplied in float32 under the interpreter, whose bfloat16 dot is wrong): Stage A's check,
    every output and gradient within 3x the 16-bit reference's worst error against float64."""
    check_16_bit(dtype)


def test_stage_selection(monkeypatch):
    """A by default; B only when asked and the shape fits; a wrong value names the variable."""
    monkeypatch.delenv(lstm_ops.STAGE_VARIABLE, raising=False)
    assert lstm_ops.stage_for((1000, 32, 128, 128)) == "A"
    monkeypatch.setenv(lstm_ops.STAGE_VARIABLE, "B")
    assert lstm_ops.stage_for((1000, 32, 128, 128)) == "B"
    assert lstm_ops.stage_for((1000, 32, 256, 128)) == "B"
    assert lstm_ops.stage_for((100, 64, 512, 512)) == "A"
    assert lstm_ops.stage_for((100, 64, 512, 256)) == "A"  # H too large for B's tile
    assert "H=512" in persistent_ops.unsupported((100, 64, 512, 256))
    assert lstm_ops.stage_for((0, 32, 128, 128)) == "A"  # no steps: the last is run apart
    monkeypatch.setenv(lstm_ops.STAGE_VARIABLE, "b")
    with pytest.raises(ValueError, match="CELLSTATE_TRITON_STAGE must be A or B; got 'b'"):
        lstm_ops.stage_for((1, 1, 1, 1))


def test_rows_per_program(monkeypatch):
    """16 rows where tensor cores can run the products, 4 elsewhere, or what is asked for."""
    monkeypatch.delenv(persistent_ops.ROWS_VARIABLE, raising=False)
    assert persistent_ops.rows_per_program(torch.bfloat16, tf32=False) == 16
    assert persistent_ops.rows_per_program(torch.float32, tf32=False) == 4
    assert persistent_ops.rows_per_program(torch.float32, tf32=True) == 16
    assert persistent_ops.rows_per_program(torch.float64, tf32=True) == 4
    monkeypatch.setenv(persistent_ops.ROWS_VARIABLE, "8")
    assert persistent_ops.rows_per_program(torch.float16, tf32=False) == 8
    monkeypatch.setenv(persistent_ops.ROWS_VARIABLE, "3")
    with pytest.raises(ValueError, match="CELLSTATE_TRITON_STAGE_B_ROWS must be one of 1, 2"):
        persistent_ops.rows_per_program(torch.float16, tf32=False)


def test_stages_benchmark_smoke_run(stage_b, tmp_path):
    """benchmarks/gpu.py --stages --smoke (tiny, interpreter): Stage A, Stage B (float32: with
    4 rows per program and with 16) and torch.nn.LSTM timed for each row, and a winner line per
    row and mode, so that the GPU session gets a script that runs."""
    spec = importlib.util.spec_from_file_location("gpu_benchmark", ROOT / "benchmarks/gpu.py")
    gpu = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(gpu)
    out = tmp_path / "stages.json"
    assert gpu.main(["--stages", "--smoke", "--out", str(out)]) == 0
    data = json.loads(out.read_text())
    assert all(row["error"] is None and row["ms"] > 0 for row in data["rows"])
    impls = {(row["variant"], row["impl"]) for row in data["rows"]}
    assert impls == {
        ("plain", "triton A"), ("plain", "triton B"), ("plain", "triton B, 16 rows"),
        ("plain", "torch.nn.LSTM"), ("layer_norm", "triton A"), ("layer_norm", "triton B"),
        ("layer_norm", "triton B, 16 rows"),
    }  # fmt: skip
    wins = [line for line in data["winners"] if " wins, " in line]
    assert len(wins) == 4, data["winners"]


def test_gpu_check_script_runs_both_stages(tmp_path):
    """benchmarks/gpu_check.sh --dry-run lists its steps within the budget, Stage B's tests and
    the stages benchmark among them, and skips what the budget cannot hold."""
    script = str(ROOT / "benchmarks/gpu_check.sh")
    dry = subprocess.run(
        ["bash", script, "--dry-run", str(tmp_path / "a")], capture_output=True, text=True
    )
    assert dry.returncode == 0, dry.stderr
    steps = [line.split(" ")[0] for line in dry.stdout.splitlines()]
    assert steps[:4] == ["tests_stage_a", "tests_stage_b", "stages", "benchmark"]
    assert "--stages --out" in dry.stdout
    small = subprocess.run(
        ["bash", script, "--dry-run", str(tmp_path / "b")],
        capture_output=True, text=True, env={**os.environ, "BUDGET": "15"},
    )  # fmt: skip
    assert small.stdout.count("skipped, ") == len(steps), small.stdout


def test_kernels_compile_for_sm_90():
    """The persistent kernels are valid Triton for a GPU: compiled (not run) for sm_90 in a
    process without TRITON_INTERPRET, every variant, both product paths."""
    bundled = Path(importlib.util.find_spec("triton").origin).parent / "backends/nvidia/bin"
    if not (bundled / "ptxas").exists():
        pytest.skip(f"triton ships no ptxas here ({bundled}): cannot compile for a GPU")
    env = {k: v for k, v in os.environ.items() if k != "TRITON_INTERPRET"}
    env["PYTHONPATH"] = os.pathsep.join([str(ROOT / "src"), str(ROOT)])
    run = subprocess.run(
        [sys.executable, "-m", "tests.kernels.persistent_compile"],
        cwd=ROOT, env=env, capture_output=True, text=True,
    )  # fmt: skip
    assert run.returncode == 0, run.stderr[-3000:]
    assert run.stdout.count("compiled ") == 4, run.stdout
