"""`cellstate cache`: the kernel builds in the cache, and --clear (fake builds in a temporary
cache root; nothing is compiled)."""

import fcntl
import types

from cellstate.cli import cache as cache_cli
from cellstate.cli.main import main
from cellstate.kernels.cpu import build
from tests.kernels.test_cache_pruning import NOW, _fake_build, _key


def test_cache_lists_each_build_with_its_size_and_last_use(tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("CELLSTATE_CACHE_DIR", str(tmp_path))
    _fake_build(tmp_path, build.build_dir().name, days_ago=0)
    _fake_build(tmp_path, _key(1), days_ago=30)
    # The fake builds' times count from NOW, fixed when the tests were collected: the listing
    # must read its clock at NOW + 2 min, not whenever this test happens to run.
    monkeypatch.setattr(cache_cli, "time", types.SimpleNamespace(time=lambda: NOW + 120))
    assert main(["cache"]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert lines[0] == f"{tmp_path}: 2 kernel builds, 0.0 MB"
    assert " ".join(lines[1].split()) == (
        f"{build.build_dir().name} 0.0 MB used 2 min ago this torch, CPU and source"
    )
    assert " ".join(lines[2].split()) == f"{_key(1)} 0.0 MB used 30 days ago"


def test_cache_clear_removes_every_build_not_in_use(tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("CELLSTATE_CACHE_DIR", str(tmp_path))
    for n in (1, 2):
        _fake_build(tmp_path, _key(n), days_ago=0)
    with open(tmp_path / f"{_key(2)}.lock") as loading:
        fcntl.flock(loading, fcntl.LOCK_SH)
        assert main(["cache", "--clear"]) == 0
    out = capsys.readouterr().out
    assert f"removed 1 kernel build from {tmp_path}" in out and f"kept {_key(2)}: in use" in out
    assert sorted(p.name for p in tmp_path.iterdir()) == [_key(2), f"{_key(2)}.lock"]
