"""The kernel cache after faults: a build stopped by Ctrl-C or killed, a truncated or garbage
library, a read-only cache. Each runs in its own process against a temporary CELLSTATE_CACHE_DIR,
under a timeout, so that a hang fails the test instead of blocking the suite.

One real build runs here (in the module fixture, after two builds stopped midway); the other
tests copy its result and stand in a copy of the finished library for the compiler.
"""

import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import pytest

import cellstate

SRC = str(Path(cellstate.__file__).parents[1])
BUILD_TIMEOUT = 600  # a real build takes ~1 min on a quiet machine, several under load

# Runs a layer on backend "auto" as a training loop does, its SIGINT/SIGTERM handler set: the
# kernel if it loads, else the reference.
RUN_LAYER = """
import warnings, torch, cellstate
from cellstate.kernels.cpu import build
from cellstate.training.interrupt import GracefulStop
warnings.simplefilter("always")
with GracefulStop():
    cellstate.LSTM(2, 3)(torch.randn(4, 1, 2))
print("ran on", "the kernel" if build.is_loaded() else "the reference", flush=True)
"""

# Loads the kernel with a stand-in compiler that copies a finished library ($PRISTINE).
LOAD_WITH_STAND_IN = """
import os, shutil
from cellstate.kernels.cpu import build
compiled = []
def stand_in(directory):
    compiled.append(directory)
    shutil.copy(os.environ["PRISTINE"], directory / f"{build._name()}.so")
    return build._import(directory)
if hasattr(build, "_compile"):
    build._compile = stand_in
try:
    module = build.load()
    print("loaded; compiled", len(compiled), "times;", build.status())
except RuntimeError as error:
    print("failed:", error)
"""


def _env(cache: Path, **extra) -> dict:
    return {**os.environ, "CELLSTATE_CACHE_DIR": str(cache), "PYTHONPATH": SRC, **extra}


def _start(script: str, cache: Path) -> subprocess.Popen:
    return subprocess.Popen(
        [sys.executable, "-c", script],
        env=_env(cache),
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        start_new_session=True,  # its own process group, as a terminal's foreground job
    )


def _wait_for_compiler(process: subprocess.Popen) -> str:
    """Until the process has compiled for a few seconds; what it printed until then."""
    printed = ""
    while "compiling the CPU kernel" not in printed:
        line = process.stdout.readline()
        assert line, f"it ended before compiling:\n{printed}"
        printed += line
    time.sleep(5)
    return printed


def _finish(process: subprocess.Popen, timeout: float, printed: str = "") -> tuple[int | None, str]:
    """(exit code, output), or (None, output so far) after killing it at the timeout."""
    try:
        output, _ = process.communicate(timeout=timeout)
        return process.returncode, printed + output
    except subprocess.TimeoutExpired:
        os.killpg(process.pid, signal.SIGKILL)
        return None, printed + process.communicate()[0]


@pytest.fixture(scope="module")
def faults(tmp_path_factory) -> dict:
    """A first build stopped by Ctrl-C (SIGINT to its process group, as a terminal sends it), a
    second killed by SIGKILL (its compiler left running), then a third run in the same cache."""
    cache = tmp_path_factory.mktemp("cache")
    first = _start(RUN_LAYER, cache)
    printed = _wait_for_compiler(first)
    os.killpg(first.pid, signal.SIGINT)
    ctrl_c = _finish(first, 120, printed)
    second = _start(RUN_LAYER, cache)
    _wait_for_compiler(second)
    second.kill()
    second.wait()
    third = _finish(_start(RUN_LAYER, cache), timeout=BUILD_TIMEOUT)
    return {"cache": cache, "ctrl_c": ctrl_c, "after_kill": third}


def test_ctrl_c_during_the_first_build_stops_the_program(faults):
    code, output = faults["ctrl_c"]
    assert code not in (0, None), f"exit {code}; output:\n{output}"
    assert "ran on" not in output and "BuildInterrupted: SIGINT" in output, output


def test_a_killed_build_does_not_block_the_next_one(faults):
    code, output = faults["after_kill"]
    assert code is not None, f"still waiting after {BUILD_TIMEOUT} s (a stale lock?):\n{output}"
    assert code == 0 and "ran on the kernel" in output, output
    assert not list(faults["cache"].glob("*.building-*")), "a killed build's directory is left"


@pytest.fixture
def copy_of_build(faults, tmp_path) -> tuple[Path, Path, Path]:
    """(cache root, its build directory, a pristine copy of the library) of the fixture's build."""
    (built,) = [p for p in faults["cache"].iterdir() if p.is_dir()]
    cache = tmp_path / "cache"
    shutil.copytree(built, cache / built.name)
    (library,) = built.glob("*.so")
    pristine = shutil.copy(library, tmp_path / "pristine.so")
    return cache, cache / built.name, Path(pristine)


def _load(cache: Path, pristine: Path, *prefix: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        [*prefix, sys.executable, "-c", LOAD_WITH_STAND_IN],
        env=_env(cache, PRISTINE=str(pristine)),
        capture_output=True,
        text=True,
        timeout=300,
    )


@pytest.mark.parametrize("damage", ["truncated", "garbage", "empty"])
def test_a_damaged_library_is_rebuilt_not_loaded(copy_of_build, damage):
    """Truncated (its ELF header intact: loading it was a SIGBUS), garbage or empty: rebuilt."""
    cache, directory, pristine = copy_of_build
    (library,) = directory.glob("*.so")
    data = library.read_bytes()
    library.write_bytes(
        {"truncated": data[: len(data) // 2], "garbage": os.urandom(len(data)), "empty": b""}[
            damage
        ]
    )
    result = _load(cache, pristine)
    assert result.returncode == 0, f"exit {result.returncode}: {result.stdout}{result.stderr}"
    assert "loaded; compiled 1 times; built" in result.stdout, result.stdout + result.stderr
    assert library.read_bytes() == pristine.read_bytes()


def test_a_complete_build_loads_from_a_read_only_cache(copy_of_build):
    """Nothing is written: no lock, no rebuild. As root (who may write anywhere) the loading
    process runs as nobody; otherwise the copy is made read-only."""
    _, directory, pristine = copy_of_build
    cache = Path(tempfile.mkdtemp())
    try:
        shutil.copytree(directory, cache / directory.name)
        for path in [cache, *cache.rglob("*")]:
            path.chmod(0o555 if path.is_dir() else 0o444)
        before = sorted((str(p), p.stat().st_mtime_ns) for p in cache.rglob("*"))
        as_nobody = ("setpriv", "--reuid=65534", "--regid=65534", "--clear-groups")
        result = _load(cache, pristine, *(as_nobody if os.geteuid() == 0 else ()))
        assert "loaded; compiled 0 times; built" in result.stdout, result.stdout + result.stderr
        assert sorted((str(p), p.stat().st_mtime_ns) for p in cache.rglob("*")) == before
    finally:
        for path in [cache, *cache.rglob("*")]:
            path.chmod(0o755)
        shutil.rmtree(cache)
