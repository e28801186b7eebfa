"""./bootstrap.sh's first run says what it does (issue 15, part 3), with real venv and pip.

The real project takes a minute to install, so the test runs the real script on a copy
with two tiny local projects in place of ekl and its SDK: the same commands, the same
output, in seconds of pip's time (slow-marked all the same: it builds two editable wheels).
"""

from __future__ import annotations

import shutil
import subprocess

import pytest

from conftest import REPO

PYPROJECT = """[build-system]
requires = ["setuptools"]
build-backend = "setuptools.build_meta"
[project]
name = "{name}"
version = "0"
[project.optional-dependencies]
dev = []
[tool.setuptools]
py-modules = []
"""


@pytest.mark.slow
def test_first_run_prints_one_line_then_a_line_per_step_and_later_runs_are_silent(tmp_path):
    shutil.copy(REPO / "bootstrap.sh", tmp_path / "bootstrap.sh")
    (tmp_path / "sdk").mkdir()
    (tmp_path / "pyproject.toml").write_text(PYPROJECT.format(name="firstrun"))
    (tmp_path / "sdk" / "pyproject.toml").write_text(PYPROJECT.format(name="firstrunsdk"))
    cp = subprocess.run(["/bin/sh", str(tmp_path / "bootstrap.sh")], capture_output=True,
                        text=True, timeout=600)
    assert cp.returncode == 0, cp.stderr
    ours = [ln for ln in cp.stderr.splitlines() if ln.startswith("ekl: ")]
    assert ours[0] == "ekl: setting up .venv (first run, about a minute; later runs start " \
                      "at once)..."
    assert [ln.split("]")[0] for ln in ours[1:4]] == ["ekl: [1/3", "ekl: [2/3", "ekl: [3/3"]
    assert ours[-1] == "ekl: .venv is ready"
    assert "Successfully installed firstrunsdk" in cp.stdout  # pip's own lines are shown
    again = subprocess.run(["/bin/sh", str(tmp_path / "bootstrap.sh")], capture_output=True,
                           text=True, timeout=120)
    assert again.returncode == 0 and again.stdout == "" and again.stderr == ""
