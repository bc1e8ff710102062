"""`cellstate info` and the bare `cellstate` command."""

import subprocess
import sys

from cellstate.cli.main import main


def test_info_lists_versions_and_backends(capsys):
    assert main(["info"]) == 0
    out = capsys.readouterr().out
    for needle in ("torch", "threads", "cpu capability", "reference", "triton"):
        assert needle in out


def test_console_script_runs_without_arguments():
    result = subprocess.run(
        [sys.executable, "-m", "cellstate.cli.main"], capture_output=True, text=True
    )
    assert result.returncode == 2 and "info" in result.stdout
