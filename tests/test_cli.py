"""The CLI skeleton: help texts, and user errors as one line on stderr with exit code 1."""

import subprocess
import sys

import pytest

from mars_eval.cli.main import main


def test_help_lists_commands(capsys):
    assert main(["--help"]) == 0
    out = capsys.readouterr().out
    assert "train" in out


def test_unknown_command_is_one_line_exit_1(capsys):
    with pytest.raises(SystemExit) as e:
        main(["no-such-command"])
    assert e.value.code == 1
    err = capsys.readouterr().err
    assert err.startswith("error: ") and err.count("\n") == 1


def test_console_script_runs_without_traceback():
    r = subprocess.run([sys.executable, "-c", "from mars_eval.cli.main import entry; entry()", "bogus"],
                       capture_output=True, text=True)
    assert r.returncode == 1
    assert "Traceback" not in r.stderr and r.stderr.count("\n") == 1
