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
    ("NaN", "numbers must be finite"),
    ("Infinity", "numbers must be finite"),
    ("1e999", "out of range"),
    ("[" * 5000 + "]" * 5000, "nested deeper than 512 levels"),
    ("[" * 600 + "]" * 600, "nested deeper than 512 levels"),
    ('{"a": ' * 600 + "1" + "}" * 600, "nested deeper than 512 levels"),
    ("abc", "is not JSON"),
])
def test_call_refuses_what_the_wire_cannot_carry(arg: str, words: str) -> None:
    cp = ekl("call", PYSAM, "revert", arg)
    assert cp.returncode == 2, cp.stderr
    assert "Traceback" not in cp.stderr and "starting plugin" not in cp.stderr
    lines = cp.stderr.strip().splitlines()
    assert len(lines) == 1 and words in lines[0] and len(lines[0]) < 300, lines
