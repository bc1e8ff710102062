"""Pruning the kernel cache (kernels/cpu/cache.py): which builds go, that a locked one, a
killed build's leftovers in progress and anything that is not a build stay, and that a build
prunes once it succeeds, saying so in one line, without failing when pruning fails. Fake build
directories in a temporary cache root; nothing is compiled."""

import fcntl
import os
import threading
import time
from pathlib import Path

import pytest

from cellstate.kernels.cpu import build, cache

NOW = time.time()
DAY = 86400
CURRENT = "2.13.0_cpu-AVX512-000000000000"


def _key(n: int) -> str:
    return f"2.13.0_cpu-AVX512-{n:012x}"


def _fake_build(root: Path, key: str, days_ago: float) -> Path:
    """A complete-looking build of key, last used days_ago, with its lock file."""
    directory = root / key
    directory.mkdir(parents=True)
    (directory / f"cellstate_cpu_{key[-12:]}.so").write_bytes(b"\0" * 1000)
    (directory / "lstm.o").write_bytes(b"\0" * 500)
    (root / f"{key}.lock").write_text("process 1 on host")
    when = NOW - days_ago * DAY
    os.utime(directory, (when, when))
    return directory


def _names(root: Path) -> set[str]:
    return {p.name for p in root.iterdir()}


def test_the_entry_pattern_names_this_build_its_lock_and_work_directories():
    name = build.build_dir().name
    for entry in (name, f"{name}.lock", f"{name}.building-1234"):
        assert cache.ENTRY.fullmatch(entry)["key"] == name
    for other in ("last_build_seconds", f"{name}.old", f"{name}.building-", "notes-2.13-x"):
        assert not cache.ENTRY.fullmatch(other)


def test_prune_removes_builds_unused_for_days_with_their_locks(tmp_path):
    _fake_build(tmp_path, CURRENT, days_ago=400)  # just built: never pruned, however dated
    _fake_build(tmp_path, _key(1), days_ago=cache.PRUNE_AFTER_DAYS - 1)
    _fake_build(tmp_path, _key(2), days_ago=cache.PRUNE_AFTER_DAYS + 1)
    _fake_build(tmp_path, _key(3), days_ago=90)
    (tmp_path / "last_build_seconds").write_text("60\n")
    removal = cache.prune(tmp_path, CURRENT, now=NOW)
    assert [b.key for b in removal.removed] == [_key(2), _key(3)]
    assert _names(tmp_path) == {
        CURRENT,
        f"{CURRENT}.lock",
        _key(1),
        f"{_key(1)}.lock",
        "last_build_seconds",
    }
    assert removal.summary("unused") == (
        f"removed 2 kernel builds unused from {tmp_path} (0.0 MB): {_key(2)}, {_key(3)}"
    )


def test_prune_keeps_only_the_most_recently_used_builds(tmp_path):
    _fake_build(tmp_path, CURRENT, days_ago=0)
    for n in range(1, cache.KEEP_BUILDS + 4):
        _fake_build(tmp_path, _key(n), days_ago=n / 24)  # key 1 the most recent
    removal = cache.prune(tmp_path, CURRENT, now=NOW)
    oldest = [_key(n) for n in range(cache.KEEP_BUILDS + 1, cache.KEEP_BUILDS + 4)]
    assert [b.key for b in removal.removed] == oldest
    assert {b.key for b in cache.builds(tmp_path)} == {CURRENT} | {
        _key(n) for n in range(1, cache.KEEP_BUILDS + 1)
    }


@pytest.mark.parametrize("holder", [fcntl.LOCK_SH, fcntl.LOCK_EX], ids=["loading", "building"])
def test_a_build_whose_lock_is_held_is_never_removed(holder, tmp_path):
    stale = _fake_build(tmp_path, _key(1), days_ago=100)
    with open(tmp_path / f"{_key(1)}.lock") as lock:
        fcntl.flock(lock, holder)
        removal = cache.prune(tmp_path, CURRENT, now=NOW)
        assert removal.in_use == [_key(1)] and not removal.removed
        assert (stale / f"cellstate_cpu_{_key(1)[-12:]}.so").exists()
    assert [b.key for b in cache.prune(tmp_path, CURRENT, now=NOW).removed] == [_key(1)]


def test_a_build_loaded_since_it_was_listed_is_kept(tmp_path, monkeypatch):
    stale = _fake_build(tmp_path, _key(1), days_ago=100)
    listed = cache.builds(tmp_path)
    cache.record_use(stale)  # a process loads it between the listing and the lock
    monkeypatch.setattr(cache, "builds", lambda root: listed)
    assert cache.prune(tmp_path, CURRENT, now=NOW).in_use == [_key(1)]
    assert stale.exists()


def test_killed_builds_leftovers_go_unless_a_build_is_in_progress(tmp_path):
    """A .building- directory (any age) goes when its lock is free, stays while it is held."""
    for n in (1, 2):
        work = tmp_path / f"{_key(n)}.building-{4000 + n}"
        work.mkdir()
        (work / "build.ninja").write_text("rule cxx\n")
        (tmp_path / f"{_key(n)}.lock").write_text("process 4000 on host")
    (tmp_path / f"{_key(3)}.lock").write_text("")  # a lock alone: a build stopped before mkdir
    with open(tmp_path / f"{_key(2)}.lock") as in_progress:
        fcntl.flock(in_progress, fcntl.LOCK_EX)
        removal = cache.prune(tmp_path, CURRENT, now=NOW)
    assert sorted(b.key for b in removal.removed) == [_key(1), _key(3)]
    assert _names(tmp_path) == {f"{_key(2)}.building-4002", f"{_key(2)}.lock"}


def test_nothing_that_is_not_a_build_is_touched(tmp_path):
    """Other names are never looked at; a build-named directory holding a directory, or a
    link, is reported and left whole (and a link is not followed)."""
    outside = tmp_path / "outside"
    (outside / "data").mkdir(parents=True)
    (outside / "data" / "precious").write_text("keep me")
    root = tmp_path / "cache"
    root.mkdir()
    (root / "notes").mkdir()
    (root / "2.13.0_cpu-AVX512-zzzzzzzzzzzz").mkdir()  # not a source hash
    nested = _fake_build(root, _key(1), days_ago=100)
    (nested / "subdirectory").mkdir()
    (root / _key(2)).symlink_to(outside, target_is_directory=True)
    for path in root.iterdir():  # all of them unused for 100 days
        os.utime(path, (NOW - 100 * DAY,) * 2, follow_symlinks=False)
    removal = cache.prune(root, CURRENT, now=NOW)
    assert not removal.removed
    assert [key for key, _ in removal.failed] == [_key(1), _key(2)]
    assert removal.summary().startswith(f"could not remove {_key(1)} ({root / _key(1)} holds")
    assert (nested / "subdirectory").is_dir() and (root / _key(2)).is_symlink()
    assert (outside / "data" / "precious").read_text() == "keep me"
    assert {"notes", "2.13.0_cpu-AVX512-zzzzzzzzzzzz"} <= _names(root)


def test_a_waiter_on_a_removed_lock_file_locks_the_new_one(tmp_path, capsys):
    """A remover deletes a lock file while holding it: a builder that waited on it must not go
    on holding the deleted file (then a third process could take the new one at once)."""
    final = tmp_path / _key(1)
    path = cache.lock_path(final)
    held = []
    with open(path, "a+") as remover:
        fcntl.flock(remover, fcntl.LOCK_EX)
        waiter = threading.Thread(
            target=lambda: held.append(build._take_turn(final, fcntl.LOCK_EX)), daemon=True
        )
        waiter.start()
        while "waiting for" not in capsys.readouterr().err:
            time.sleep(0.01)
        path.unlink()
    waiter.join(timeout=30)
    assert held, "the waiter is still waiting"
    with held[0] as lock:
        assert cache.is_current(lock, path)
        with open(path) as third, pytest.raises(BlockingIOError):
            fcntl.flock(third, fcntl.LOCK_EX | fcntl.LOCK_NB)


@pytest.fixture
def stand_in_build(tmp_path, monkeypatch) -> Path:
    """The cache root of a build whose compiler is a stand-in writing a fake library."""
    monkeypatch.setenv("CELLSTATE_CACHE_DIR", str(tmp_path))
    monkeypatch.setattr(build, "_missing_tool", lambda: None)

    def stand_in(directory: Path) -> str:
        (directory / f"{build._name()}.so").write_bytes(b"\0" * 1000)
        return "the module"

    monkeypatch.setattr(build, "_compile", stand_in)
    return tmp_path


def test_a_successful_build_prunes_and_says_so_in_one_line(stand_in_build, capsys):
    _fake_build(stand_in_build, _key(1), days_ago=1)
    _fake_build(stand_in_build, _key(2), days_ago=cache.PRUNE_AFTER_DAYS + 1)
    assert build._build() == "the module"
    assert {b.key for b in cache.builds(stand_in_build)} == {build.build_dir().name, _key(1)}
    lines = [line for line in capsys.readouterr().err.splitlines() if "removed" in line]
    assert lines == [
        f"cellstate: removed 1 kernel build unused for {cache.PRUNE_AFTER_DAYS} days or beyond "
        f"the {cache.KEEP_BUILDS} most recently used from {stand_in_build} (0.0 MB): {_key(2)}"
    ]


def test_loading_a_finished_build_records_its_use(stand_in_build, monkeypatch):
    build._build()
    final = build.build_dir()
    os.utime(final, (NOW - 100 * DAY,) * 2)
    monkeypatch.setattr(build, "_import", lambda directory: "loaded")
    assert build._build() == "loaded"
    assert final.stat().st_mtime > NOW - DAY


def test_a_build_is_not_removed_while_it_loads(stand_in_build, monkeypatch):
    build._build()
    final, removals = build.build_dir(), []

    def import_while_clearing(directory):
        removals.append(cache.clear(stand_in_build))  # another process's `cellstate cache --clear`
        return "loaded"

    monkeypatch.setattr(build, "_import", import_while_clearing)
    assert build._build() == "loaded"
    assert removals[0].in_use == [final.name] and build._is_complete(final)


def test_a_failing_prune_does_not_fail_the_build(stand_in_build, monkeypatch, capsys):
    def broken(*args, **kwargs):
        raise PermissionError(13, "Permission denied", str(stand_in_build))

    monkeypatch.setattr(cache, "prune", broken)
    assert build._build() == "the module"
    assert f"cellstate: could not prune the kernel cache {stand_in_build}:" in (
        capsys.readouterr().err
    )
