"""Build the C++ kernels on first use (torch.utils.cpp_extension + ninja) and cache them.

The cache lives in ``$CELLSTATE_CACHE_DIR`` or ``$XDG_CACHE_HOME/cellstate`` (default
``~/.cache/cellstate``), one directory per torch version, CPU capability and source hash
(``<torch version>-<capability>-<hash>``), so a source or flag change rebuilds.

The kernels are compiled with -O3 and the vector ISA that torch itself uses on this machine
(``torch.backends.cpu.get_cpu_capability()``: AVX512, AVX2 or the baseline), so that g++ can
vectorise the gate math. That is why the capability is part of the cache key: a home directory
shared between machines of different CPUs keeps one build per ISA, never running AVX-512 code
on a CPU without it.
"""

from __future__ import annotations

import hashlib
import os
import platform
import re
import shutil
import sys
import threading
import time
from pathlib import Path
from types import ModuleType

import torch

SOURCES = ("lstm.cpp", "masks.cpp", "bindings.cpp")
DEFAULT_BUILD_SECONDS = 60  # what the message says before any build has been timed
ISA_FLAGS = {
    "AVX512": ["-mavx512f", "-mavx512dq", "-mavx512bw", "-mavx512vl", "-mavx2", "-mfma"],
    "AVX2": ["-mavx2", "-mfma"],
}

_lock = threading.Lock()
_module: ModuleType | None = None
_failure: str | None = None


def _capability() -> str:
    return torch.backends.cpu.get_cpu_capability()


def _flags() -> list[str]:
    # -fopenmp: at::parallel_for is a header template that only forks when _OPENMP is defined
    # where it is compiled; without it every "threaded" loop of the kernel runs on one thread.
    return ["-O3", "-fopenmp", *ISA_FLAGS.get(_capability(), [])]


def _cache_root() -> Path:
    if os.environ.get("CELLSTATE_CACHE_DIR"):
        return Path(os.environ["CELLSTATE_CACHE_DIR"])
    base = os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache"
    return Path(base) / "cellstate"


def _source_hash() -> str:
    digest = hashlib.sha256()
    for name in SOURCES:
        digest.update((Path(__file__).parent / name).read_bytes())
    digest.update(" ".join(_flags()).encode())
    digest.update(f"{sys.version_info[:2]} {platform.machine()}".encode())
    return digest.hexdigest()[:12]


def _name() -> str:
    return f"cellstate_cpu_{_source_hash()}"


def build_dir() -> Path:
    """Where this torch version, CPU capability and source build lives."""
    safe_version = re.sub(r"[^\w.]", "_", torch.__version__)
    return _cache_root() / f"{safe_version}-{_capability()}-{_source_hash()}"


def _library_path() -> Path:
    return build_dir() / f"{_name()}.so"


def _missing_tool() -> str | None:
    """Why a build cannot even start (no compiler, no ninja), or None."""
    compiler = os.environ.get("CXX", "c++")
    if shutil.which(compiler) is None:
        return f"no C++ compiler ({compiler!r} not found; set CXX or install g++)"
    from torch.utils.cpp_extension import is_ninja_available

    if not is_ninja_available():
        return "ninja is not installed (pip install ninja)"
    return None


def _expected_seconds() -> int:
    try:
        return int(float((_cache_root() / "last_build_seconds").read_text()))
    except (OSError, ValueError):
        return DEFAULT_BUILD_SECONDS


def status() -> str:
    """The kernel's state, without compiling: built / not built yet / cannot build: why."""
    if _module is not None:
        used, threads = _module.parallel_threads(), torch.get_num_threads()
        return f"built ({_library_path()}; its loops run on {used} of {threads} threads)"
    if _failure is not None:
        return f"cannot build: {_failure}"
    if _library_path().exists():
        return f"built ({_library_path()}; loads on first use)"
    missing = _missing_tool()
    if missing:
        return f"cannot build: {missing}"
    return f"not built yet (compiles on first use, ~{_expected_seconds()} s)"


def failure() -> str | None:
    """The reason the kernel cannot be built in this process, once a build was tried."""
    return _failure


def is_loaded() -> bool:
    return _module is not None


def is_built() -> bool:
    """Whether a build for this torch, CPU and source is in the cache (loading it is quick)."""
    return _module is not None or (_failure is None and _library_path().exists())


def load() -> ModuleType:
    """The compiled kernel module: built (once, with a line on stderr) or loaded from the cache.

    Raises RuntimeError naming the reason when it cannot be built.
    """
    global _module, _failure
    if _module is not None:
        return _module
    with _lock:
        if _module is not None:
            return _module
        if _failure is not None:
            raise RuntimeError(f"cellstate CPU kernel: {_failure}")
        try:
            _module = _build()
        except Exception as error:  # noqa: BLE001 - any build failure becomes the stated reason
            _failure = _reason(error)
            raise RuntimeError(f"cellstate CPU kernel: {_failure}") from error
    return _module


def _build() -> ModuleType:
    missing = _missing_tool()
    if missing:
        raise RuntimeError(missing)
    from torch.utils.cpp_extension import load as load_extension

    directory = build_dir()
    directory.mkdir(parents=True, exist_ok=True)
    compiling = not _library_path().exists()
    if compiling:
        print(
            f"cellstate: compiling the CPU kernel (once, ~{_expected_seconds()} s)…",
            file=sys.stderr,
            flush=True,
        )
    start = time.perf_counter()
    module = load_extension(
        name=_name(),
        sources=[str(Path(__file__).parent / name) for name in SOURCES],
        extra_cflags=_flags(),
        extra_ldflags=["-fopenmp"],
        build_directory=str(directory),
        verbose=False,
    )
    if compiling:
        seconds = time.perf_counter() - start
        (_cache_root() / "last_build_seconds").write_text(f"{seconds:.0f}\n")
    return module


def _reason(error: Exception) -> str:
    """A one-line reason from a build error (the compiler's first error line when there is one)."""
    lines = str(error).splitlines() or [type(error).__name__]
    compiler_errors = [line for line in lines if "error:" in line]
    return (compiler_errors or lines)[0].strip()[:300]
