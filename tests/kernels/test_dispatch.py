"""Backend choice: "cpu" where it can run, the reference otherwise; status without compiling."""

import warnings

import pytest
import torch

import cellstate
from cellstate.kernels import dispatch, reference
from cellstate.kernels.cpu import build
from cellstate.kernels.cpu import ops as cpu


def test_cpu_is_a_backend_and_auto_uses_it():
    assert "cpu" in dispatch.BACKENDS
    assert dispatch.select("auto", torch.randn(2, 1, 1)) is cpu
    assert dispatch.select("auto", torch.randn(2, 1, 1, dtype=torch.float64)) is cpu
    assert dispatch.select("cpu", torch.randn(2, 1, 1)) is cpu


def test_auto_falls_back_silently_for_other_dtypes_and_cpu_raises():
    x = torch.randn(2, 1, 1, dtype=torch.complex64)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert dispatch.select("auto", x) is reference
    with pytest.raises(RuntimeError, match="float32, float64, bfloat16 and float16"):
        dispatch.select("cpu", x)


@pytest.fixture
def broken_build(monkeypatch):
    """A kernel that cannot be built (as without a compiler), in a fresh state."""

    def fail():
        raise RuntimeError("no C++ compiler ('c++' not found; set CXX or install g++)")

    monkeypatch.setattr(build, "_module", None)
    monkeypatch.setattr(build, "_failure", None)
    monkeypatch.setattr(build, "_build", fail)
    monkeypatch.setattr(dispatch, "_warned", False)


def test_auto_warns_once_naming_the_reason_when_it_cannot_build(broken_build):
    x = torch.randn(2, 1, 1)
    with pytest.warns(RuntimeWarning, match="no C.. compiler") as record:
        assert dispatch.select("auto", x) is reference
        assert dispatch.select("auto", x) is reference
    assert len(record) == 1
    with pytest.raises(RuntimeError, match="no C.. compiler"):
        dispatch.select("cpu", x)
    assert dispatch.backend_status()["cpu"].startswith("cannot build: no C++ compiler")
    lstm = cellstate.LSTM(1, 2)  # auto: still runs, on the reference
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        assert lstm(x)[0].shape == (2, 1, 2)


def test_status_does_not_compile(monkeypatch, tmp_path):
    monkeypatch.setenv("CELLSTATE_CACHE_DIR", str(tmp_path))
    monkeypatch.setattr(build, "_module", None)
    monkeypatch.setattr(build, "_failure", None)
    status = dispatch.backend_status()
    assert set(status) == {"reference", "cpu", "triton"}
    assert status["cpu"].startswith(("not built yet", "cannot build"))
    assert not any(tmp_path.iterdir())


def test_status_after_loading_says_built():
    build.load()
    assert dispatch.backend_status()["cpu"].startswith("built (")


def test_cache_directory_is_keyed_by_torch_capability_and_source():
    name = build.build_dir().name
    assert name.startswith(torch.__version__.replace("+", "_"))
    assert torch.backends.cpu.get_cpu_capability() in name


def test_kernel_loops_run_on_every_torch_thread():
    """The kernel's at::parallel_for really forks (it runs serially unless compiled with OpenMP)."""
    threads = torch.get_num_threads()
    try:
        for n in (1, 2, 3):
            torch.set_num_threads(n)
            assert build.load().parallel_threads() == n
            assert f"run on {n} of {n} threads" in dispatch.backend_status()["cpu"]
    finally:
        torch.set_num_threads(threads)
