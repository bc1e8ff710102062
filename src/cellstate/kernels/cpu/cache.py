"""The kernel cache's directory: its builds, the lock each is built and loaded under, when each
was last used, and removing those nobody uses.

The cache root (``root()``) holds, per torch version, CPU capability and source hash (a *key*,
``<torch version>-<capability>-<hash>``):

* ``<key>/``: a complete build (build.py moves it there when finished). Its modification time
  is its last use: every load sets it, where the cache is writable (``record_use``);
* ``<key>.lock``: builders hold it exclusively (``fcntl.flock``), loaders shared, a remover
  exclusively and without waiting, so a build that is being built or loaded is never removed;
* ``<key>.building-<pid>/``: a build in progress, or what a killed one left.

After each successful build, ``prune`` removes the other builds not loaded for
``PRUNE_AFTER_DAYS`` days or beyond the ``KEEP_BUILDS`` most recently loaded (each is a few MB),
and what killed builds left. ``clear`` removes every build not in use. Only entries named as
above are considered, and a directory only when it holds nothing but files (no subdirectory,
no link), so nothing else that shares the root is touched. A remover deletes a lock file while
holding it; a process that waited on that file then locks the new one (``is_current``).
"""

from __future__ import annotations

import contextlib
import fcntl
import os
import re
import shutil
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO

PRUNE_AFTER_DAYS = 14
KEEP_BUILDS = 8  # besides the one just built
ENTRY = re.compile(r"(?P<key>[\w.]+-[A-Za-z0-9_]+-[0-9a-f]{12})(?P<suffix>\.lock|\.building-\d+)?")


def root() -> Path:
    """``$CELLSTATE_CACHE_DIR``, else ``$XDG_CACHE_HOME/cellstate``, else ``~/.cache/cellstate``."""
    if os.environ.get("CELLSTATE_CACHE_DIR"):
        return Path(os.environ["CELLSTATE_CACHE_DIR"])
    base = os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache"
    return Path(base) / "cellstate"


def lock_path(directory: Path) -> Path:
    return directory.with_name(directory.name + ".lock")


def is_current(lock: IO, path: Path) -> bool:
    """Whether the open (and locked) file ``lock`` is still the file at ``path``; not when a
    remover deleted it while this process waited for it: then the new file is the lock."""
    try:
        named = os.stat(path)
    except FileNotFoundError:
        return False
    held = os.fstat(lock.fileno())
    return (named.st_dev, named.st_ino) == (held.st_dev, held.st_ino)


def record_use(directory: Path) -> None:
    """Set the build's last use to now, unless the cache is read-only (nothing is written)."""
    if os.access(directory, os.W_OK):
        with contextlib.suppress(OSError):
            os.utime(directory)


@dataclass
class Build:
    """One key's entries in the cache root."""

    key: str
    paths: list[Path] = field(default_factory=list)  # the directories and the lock that exist
    built: bool = False  # whether <key>/ exists (a complete build, or a damaged one)
    last_used: float = 0.0  # <key>/'s modification time; else its newest entry's
    size: int = 0  # bytes


def builds(cache_root: Path) -> list[Build]:
    """The cache's builds, the most recently used first (none if the root does not exist)."""
    found: dict[str, Build] = {}
    with contextlib.suppress(FileNotFoundError), os.scandir(cache_root) as entries:
        for entry in entries:
            match = ENTRY.fullmatch(entry.name)
            if not match:
                continue
            build = found.setdefault(match["key"], Build(match["key"]))
            build.paths.append(Path(entry.path))
            with contextlib.suppress(OSError):
                mtime = entry.stat(follow_symlinks=False).st_mtime
                if match["suffix"] is None:
                    build.built, build.last_used = True, mtime
                elif not build.built:
                    build.last_used = max(build.last_used, mtime)
                build.size += _size(Path(entry.path))
    return sorted(found.values(), key=lambda b: b.last_used, reverse=True)


def _size(path: Path) -> int:
    if path.is_symlink() or not path.is_dir():
        return path.lstat().st_size
    return sum(p.lstat().st_size for p in path.iterdir())


@dataclass
class Removal:
    """What ``prune`` or ``clear`` did: the builds removed, those in use, those it could not
    remove and why."""

    cache_root: Path
    removed: list[Build] = field(default_factory=list)
    in_use: list[str] = field(default_factory=list)  # keys
    failed: list[tuple[str, str]] = field(default_factory=list)  # (key, why)

    def summary(self, why: str = "") -> str | None:
        """One line on what was removed (``why``: a phrase such as "unused for 14 days") and
        what could not be (not on builds in use), or None when neither."""
        parts = []
        if self.removed:
            n, megabytes = len(self.removed), sum(b.size for b in self.removed) / 1e6
            names = ", ".join(b.key for b in self.removed)
            builds = f"{n} kernel build{'s' if n != 1 else ''}{' ' + why if why else ''}"
            parts.append(f"removed {builds} from {self.cache_root} ({megabytes:.1f} MB): {names}")
        if self.failed:
            failed = ", ".join(f"{key} ({reason})" for key, reason in self.failed)
            parts.append(f"could not remove {failed}")
        return "; ".join(parts) or None


def prune(cache_root: Path, current: str, now: float | None = None) -> Removal:
    """Remove the builds other than ``current`` (a key) that were not loaded for
    PRUNE_AFTER_DAYS days or are beyond the KEEP_BUILDS most recently loaded, and what killed
    builds left (a lock, a ``.building-`` directory); never one that is locked."""
    stale = (time.time() if now is None else now) - PRUNE_AFTER_DAYS * 86400
    others = [b for b in builds(cache_root) if b.key != current]
    complete = [b for b in others if b.built]
    chosen = [b for k, b in enumerate(complete) if k >= KEEP_BUILDS or b.last_used < stale]
    return _remove(cache_root, chosen + [b for b in others if not b.built])


def clear(cache_root: Path) -> Removal:
    """Remove every build that is not being built or loaded now."""
    return _remove(cache_root, builds(cache_root))


def _remove(cache_root: Path, chosen: list[Build]) -> Removal:
    removal = Removal(cache_root)
    for build in chosen:
        try:
            removed = _remove_unless_in_use(cache_root, build)
        except OSError as error:
            removal.failed.append((build.key, error.strerror or str(error)))
            continue
        if removed:
            removal.removed.append(build)
        else:
            removal.in_use.append(build.key)
    return removal


def _remove_unless_in_use(cache_root: Path, build: Build) -> bool:
    """Remove the build's directories, then its lock file, holding that lock; False when another
    process holds it (building or loading) or has loaded the build since it was listed. Raises
    OSError naming what failed (a directory that is not a build's is NotADirectoryError)."""
    lock_file = cache_root / f"{build.key}.lock"
    with open(lock_file, "a+") as lock:
        try:
            fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            return False
        if not is_current(lock, lock_file):
            return False
        final = cache_root / build.key
        if os.path.lexists(final) and final.lstat().st_mtime > build.last_used:
            return False  # loaded since it was listed
        directories = [p for p in build.paths if p != lock_file and os.path.lexists(p)]
        for directory in directories:
            _check_is_build(directory, build.key)
        for directory in directories:
            shutil.rmtree(directory)
        lock_file.unlink()
    return True


def _check_is_build(directory: Path, key: str) -> None:
    """Raise unless directory is what a build makes: files only (the compiler's, ninja's, the
    library and its marker; no subdirectory, no link), empty or holding one of ours."""
    if directory.is_symlink() or not directory.is_dir():
        raise NotADirectoryError(f"{directory} is not a build directory")
    names = {p.name for p in directory.iterdir() if p.is_file() and not p.is_symlink()}
    library = f"cellstate_cpu_{key[-12:]}.so"
    ours = {"build.ninja", library, library + ".complete"}
    if len(names) != sum(1 for _ in directory.iterdir()) or (names and not names & ours):
        raise NotADirectoryError(f"{directory} holds more than a build's files")
