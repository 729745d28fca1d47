"""The command line as a user reaches it: the ``ropetool`` script and ``python -m ropetool``."""

import shutil
import subprocess
import sys
from pathlib import Path

import pytest

COMMANDS = ["extend", "convert", "quantize", "inspect", "set-rope", "set", "unset", "diff", "check", "eval"]


def _run(argv):
    return subprocess.run(argv, capture_output=True, text=True, timeout=60)


@pytest.mark.parametrize("how", ["python -m ropetool", "ropetool script"])
def test_every_command_is_listed(how):
    if how == "ropetool script":
        script = shutil.which("ropetool", path=str(Path(sys.executable).parent))
        assert script, "the ropetool console script is installed beside this interpreter"
        argv = [script]
    else:
        argv = [sys.executable, "-m", "ropetool"]
    proc = _run(argv + ["--help"])
    assert proc.returncode == 0, proc.stderr
    listed = {line.split()[0] for line in proc.stdout.split("Commands:")[1].splitlines() if line.strip()}
    assert listed == set(COMMANDS)
    for command in COMMANDS:
        sub = _run(argv + [command, "--help"])
        assert sub.returncode == 0 and sub.stdout.startswith("Usage:"), (command, sub.stderr)


def test_windows_gets_a_one_line_error(monkeypatch, capsys):
    from ropetool import cli

    monkeypatch.setattr(cli.os, "name", "nt")
    with pytest.raises(SystemExit) as e:
        cli.main()
    assert e.value.code != 0 and str(e.value).startswith("Error: ") and "\n" not in str(e.value)
