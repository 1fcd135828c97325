"""`segcli --help`, `segcli plugins` and `segcli list` must not import torch."""

import os
import subprocess
import sys

import pytest

PROBE = """
import sys
sys.argv = ["segcli", *{args!r}]
from segcli.cli import main
try:
    main()
except SystemExit:
    pass
heavy = sorted(m for m in ("torch", "torchvision") if m in sys.modules)
print("HEAVY:" + ",".join(heavy), file=sys.stderr)
"""


@pytest.mark.parametrize(
    "args",
    [["--help"], ["plugins"], ["plugins", "--json"], ["list", "models"], ["prepare", "--help"]],
)
def test_light_commands_do_not_import_torch(args):
    result = subprocess.run(
        [sys.executable, "-c", PROBE.format(args=args)],
        capture_output=True,
        text=True,
        env={**os.environ, "COLUMNS": "100"},
        timeout=60,
    )
    heavy = result.stderr.strip().splitlines()[-1]
    assert heavy == "HEAVY:", f"{args} imported {heavy}"
