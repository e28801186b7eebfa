"""Hostile command-line arguments: one line each, exit 2, and the plugin never started."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent
PYSAM = str(REPO / "examples" / "pysam")


def ekl(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "ekl.launcher.cli", *args], text=True,
                          capture_output=True, timeout=60)


@pytest.mark.parametrize("arg,words", [
    ("NaN", "NaN is not a JSON number"),
    ("Infinity", "Infinity is not a JSON number"),
    ("1e999", "use a finite number"),
    ("[" * 5000 + "]" * 5000, "nests deeper than 100 levels"),
    ("[" * 150 + "]" * 150, "nests deeper than 100 levels"),
    ('{"a": ' * 200 + "1" + "}" * 200, "nests deeper than 100 levels"),
])
def test_call_refuses_what_the_wire_cannot_carry(arg: str, words: str) -> None:
    cp = ekl("call", PYSAM, "revert", arg)
    assert cp.returncode == 2, cp.stderr
    assert "Traceback" not in cp.stderr and "starting plugin" not in cp.stderr
    lines = cp.stderr.strip().splitlines()
    assert len(lines) == 1 and words in lines[0] and len(lines[0]) < 300, lines
