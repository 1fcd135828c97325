"""The command line's edge never shows a traceback: a standard output that cannot be written
(a full disk, a closed pipe) and Ctrl-C while segcli is still importing end in one line (or,
for a closed pipe, quietly) with a documented exit code."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest

DEV_FULL = Path("/dev/full")


def _run(code: str, **kwargs) -> subprocess.CompletedProcess:
    environment = {k: v for k, v in os.environ.items() if not k.startswith("SEGCLI_")}
    return subprocess.run(
        [sys.executable, "-c", code], text=True, env=environment, timeout=120, **kwargs
    )


RUN_SEGCLI = "import sys; from segcli.cli import main; sys.argv = ['segcli', *{args!r}]; main()"


@pytest.mark.skipif(not DEV_FULL.exists(), reason="needs /dev/full")
@pytest.mark.parametrize(
    "args",
    [["list", "models"], ["list", "models", "--json"], ["--version"], ["plugins", "--json"]],
    ids=" ".join,
)
def test_a_full_standard_output_is_a_resource_error(args):
    with DEV_FULL.open("w") as full:
        result = _run(RUN_SEGCLI.format(args=args), stdout=full, stderr=subprocess.PIPE)
    assert result.returncode == 7, result.stderr
    assert "Traceback" not in result.stderr and "Exception ignored" not in result.stderr
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: disk full writing the standard output")


def test_a_closed_pipe_ends_quietly_with_the_sigpipe_code():
    # the reader is gone before segcli writes: every write meets EPIPE
    read_end, write_end = os.pipe()
    os.close(read_end)
    try:
        result = _run(
            RUN_SEGCLI.format(args=["list", "models", "--json"]),
            stdout=write_end,
            stderr=subprocess.PIPE,
        )
    finally:
        os.close(write_end)
    assert result.returncode == 128 + signal.SIGPIPE, result.stderr
    assert result.stderr == ""


# Ctrl-C lands while `main` is still importing the command line: a finder raises it at the
# first import of typer, which happens before any command runs.
CTRL_C_WHILE_IMPORTING = """
import sys

class CtrlCOnImport:
    def find_spec(self, name, path=None, target=None):
        if name == "typer":
            raise KeyboardInterrupt
        return None

sys.meta_path.insert(0, CtrlCOnImport())
from segcli.cli import main
sys.argv = ["segcli", "list", "models"]
main()
"""


def test_ctrl_c_while_importing_is_one_line():
    result = _run(CTRL_C_WHILE_IMPORTING, capture_output=True)
    assert result.returncode == 130, result.stderr
    assert "Traceback" not in result.stderr
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: interrupted"), lines
