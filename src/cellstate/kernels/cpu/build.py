"""Build the C++ kernels on first use (torch.utils.cpp_extension + ninja) and cache them.

The cache lives in ``$CELLSTATE_CACHE_DIR`` or ``$XDG_CACHE_HOME/cellstate`` (default
``~/.cache/cellstate``), one directory per torch version, CPU capability and source hash
(``<torch version>-<capability>-<hash>``), so a source or flag change rebuilds.

The kernels are compiled with -O3 and the vector ISA that torch itself uses on this machine
(``torch.backends.cpu.get_cpu_capability()``: AVX512, AVX2 or the baseline), so that g++ can
vectorise the gate math. That is why the capability is part of the cache key: a home directory
shared between machines of different CPUs keeps one build per ISA, never running AVX-512 code
on a CPU without it.

A build survives faults. It is compiled in a private directory beside its final place and moved
there only when complete, with a marker holding the library's size and SHA-256; a library whose
marker does not match (a truncated or garbage file) is never loaded but rebuilt. Builders take
turns through ``<build dir>.lock`` (an ``fcntl.flock``, which the kernel releases when its owner
dies, so a killed build never blocks the next); loaders hold it shared, so that no other
process removes the build while it loads. Loading a complete build writes only its last use (the
directory's modification time), and nothing in a read-only cache, which works. After a
successful build the cache is pruned: other builds unused for a while go (``cache.py``, which
also says how the root is laid out). SIGINT/SIGTERM during a build stop the program
(BuildInterrupted), rather than going on with the slow reference backend.
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import importlib.util
import os
import platform
import re
import shutil
import signal
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from types import ModuleType
from typing import IO

import torch

from cellstate.kernels.cpu import cache

SOURCES = ("lstm.cpp", "masks.cpp", "bindings.cpp")
# The headers lstm.cpp includes: hashed with the sources, so that editing one rebuilds.
HEADERS = tuple(sorted(path.name for path in Path(__file__).parent.glob("*.h")))
DEFAULT_BUILD_SECONDS = 60  # what the message says before any build has been timed
ISA_FLAGS = {
    "AVX512": ["-mavx512f", "-mavx512dq", "-mavx512bw", "-mavx512vl", "-mavx2", "-mfma"],
    "AVX2": ["-mavx2", "-mfma"],
}

_lock = threading.Lock()


class BuildInterrupted(KeyboardInterrupt):
    """SIGINT or SIGTERM arrived while the kernel was compiling: the program stops."""

    def __init__(self, signal_name: str) -> None:
        super().__init__(f"{signal_name} while compiling the cellstate CPU kernel")
        self.signal_name = signal_name


_module: ModuleType | None = None
_failure: str | None = None


def _capability() -> str:
    return torch.backends.cpu.get_cpu_capability()


def _flags() -> list[str]:
    # -fopenmp: at::parallel_for is a header template that only forks when _OPENMP is defined
    # where it is compiled; without it every "threaded" loop of the kernel runs on one thread.
    return ["-O3", "-fopenmp", *ISA_FLAGS.get(_capability(), [])]


def _source_hash() -> str:
    digest = hashlib.sha256()
    for name in SOURCES + HEADERS:
        digest.update((Path(__file__).parent / name).read_bytes())
    digest.update(" ".join(_flags()).encode())
    digest.update(f"{sys.version_info[:2]} {platform.machine()}".encode())
    return digest.hexdigest()[:12]


def _name() -> str:
    return f"cellstate_cpu_{_source_hash()}"


def build_dir() -> Path:
    """Where this torch version, CPU capability and source build lives."""
    safe_version = re.sub(r"[^\w.]", "_", torch.__version__)
    return cache.root() / f"{safe_version}-{_capability()}-{_source_hash()}"


def _library_path() -> Path:
    return build_dir() / f"{_name()}.so"


def _marker_path(directory: Path) -> Path:
    return directory / f"{_name()}.so.complete"


def _fingerprint(library: Path) -> str:
    """The library's size and SHA-256, as the completion marker holds them."""
    data = library.read_bytes()
    return f"{len(data)} {hashlib.sha256(data).hexdigest()}\n"


def _is_complete(directory: Path) -> bool:
    """Whether ``directory`` holds a finished build: its marker matches the library."""
    library = directory / f"{_name()}.so"
    try:
        return _marker_path(directory).read_text() == _fingerprint(library)
    except OSError:
        return False


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
        return int(float((cache.root() / "last_build_seconds").read_text()))
    except (OSError, ValueError):
        return DEFAULT_BUILD_SECONDS


def status() -> str:
    """The kernel's state, without compiling: built / not built yet / cannot build: why."""
    if _module is not None:
        used, threads = _module.parallel_threads(), torch.get_num_threads()
        return f"built ({_library_path()}; its loops run on {used} of {threads} threads)"
    if _failure is not None:
        return f"cannot build: {_failure}"
    if _is_complete(build_dir()):
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
    return _module is not None or (_failure is None and _is_complete(build_dir()))


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
    """Load the finished build, or build it (one process at a time) and load it."""
    final = build_dir()
    with _interruptible():
        return _load_finished(final) or _build_and_load(final)


def _load_finished(final: Path) -> ModuleType | None:
    """The finished build in ``final``, imported holding its lock shared (where there is a lock
    file or one can be made), its use recorded; None when there is none."""
    try:
        lock = _take_turn(final, fcntl.LOCK_SH)
    except OSError:  # a read-only cache without a lock file: nobody can remove the build
        lock = contextlib.nullcontext()
    with lock:
        if not _is_complete(final):
            return None
        cache.record_use(final)
        return _import(final)


def _build_and_load(final: Path) -> ModuleType:
    """Build into ``final`` holding its lock (unless another process built it meanwhile), load
    it, then prune the cache."""
    missing = _missing_tool()
    if missing:
        raise RuntimeError(missing)
    root = cache.root()
    try:
        root.mkdir(parents=True, exist_ok=True)
        lock = _take_turn(final, fcntl.LOCK_EX)
    except OSError as error:
        raise RuntimeError(
            f"the kernel cache {root} is not writable ({error.strerror}); "
            "set CELLSTATE_CACHE_DIR to a writable directory"
        ) from error
    with lock:
        if _is_complete(final):  # another process built it while this one waited
            cache.record_use(final)
            return _import(final)
        for stale in root.glob(f"{final.name}.building-*"):  # killed builds' leftovers
            shutil.rmtree(stale, ignore_errors=True)
        shutil.rmtree(final, ignore_errors=True)  # a truncated or garbage build
        work = root / f"{final.name}.building-{os.getpid()}"
        work.mkdir()
        print(
            f"cellstate: compiling the CPU kernel (once, ~{_expected_seconds()} s)…",
            file=sys.stderr,
            flush=True,
        )
        start = time.perf_counter()
        module = _compile(work)
        _marker_path(work).write_text(_fingerprint(work / f"{_name()}.so"))
        work.rename(final)
        (root / "last_build_seconds").write_text(f"{time.perf_counter() - start:.0f}\n")
    _prune(root, final.name)
    return module


def _prune(root: Path, current: str) -> None:
    """Remove the builds nobody used for a while (cache.prune), saying so in one line; a failure
    is said too, and never fails the build that just succeeded."""
    try:
        removal = cache.prune(root, current)
        line = removal.summary(
            f"unused for {cache.PRUNE_AFTER_DAYS} days or beyond the {cache.KEEP_BUILDS} most "
            "recently used"
        )
    except Exception as error:  # noqa: BLE001 - pruning is housekeeping; the build is done
        line = f"could not prune the kernel cache {root}: {error}"
    if line:
        print(f"cellstate: {line}", file=sys.stderr, flush=True)


def _compile(directory: Path) -> ModuleType:
    """Compile and link the kernel in ``directory`` and import it (torch.utils.cpp_extension)."""
    from torch.utils.cpp_extension import load as load_extension

    return load_extension(
        name=_name(),
        sources=[str(Path(__file__).parent / name) for name in SOURCES],
        extra_cflags=_flags(),
        extra_ldflags=["-fopenmp"],
        build_directory=str(directory),
        verbose=False,
    )


def _import(directory: Path) -> ModuleType:
    """Import the finished build in ``directory`` (writes nothing)."""
    name = _name()
    spec = importlib.util.spec_from_file_location(name, directory / f"{name}.so")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _take_turn(final: Path, operation: int) -> IO:
    """``final``'s lock file, open and locked (LOCK_EX to build, LOCK_SH to load): at once, or
    after saying who is building. Raises OSError when it can be neither opened nor created."""
    path = cache.lock_path(final)
    said = False
    while True:
        try:
            lock = open(path, "a+")  # noqa: SIM115 - returned locked
        except PermissionError:
            if operation != fcntl.LOCK_SH:
                raise
            lock = open(path)  # noqa: SIM115 - a read-only cache's lock file, if it has one
        try:
            said = _flock(lock, operation, said, final) or said
        except BaseException:
            lock.close()
            raise
        if cache.is_current(lock, path):  # else a remover deleted it: lock the new file
            break
        lock.close()
    if operation == fcntl.LOCK_EX:
        lock.seek(0)
        lock.truncate()
        lock.write(f"process {os.getpid()} on {platform.node()}")
        lock.flush()
    return lock


def _flock(lock: IO, operation: int, said: bool, final: Path) -> bool:
    """Lock at once, or wait, saying who builds unless said already; whether it waited."""
    try:
        fcntl.flock(lock, operation | fcntl.LOCK_NB)
        return False
    except BlockingIOError:
        if not said:
            lock.seek(0)
            owner = lock.read().strip() or "another process"
            print(
                f"cellstate: waiting for {owner}, which is compiling the CPU kernel in "
                f"{final.parent}…",
                file=sys.stderr,
                flush=True,
            )
        fcntl.flock(lock, operation)
        return True


@contextlib.contextmanager
def _interruptible() -> Iterator[None]:
    """While building, SIGINT/SIGTERM raise BuildInterrupted (in the main thread): the compiler
    stops, and so does the program, whatever handler (such as a training loop's) was set."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return

    def stop(signum, frame) -> None:
        raise BuildInterrupted(signal.Signals(signum).name)

    previous = {sig: signal.signal(sig, stop) for sig in (signal.SIGINT, signal.SIGTERM)}
    try:
        yield
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)


def _reason(error: Exception) -> str:
    """A one-line reason from a build error (the compiler's first error line when there is one)."""
    lines = str(error).splitlines() or [type(error).__name__]
    compiler_errors = [line for line in lines if "error:" in line]
    return (compiler_errors or lines)[0].strip()[:300]
