"""Other ways in: a zip, a Go-style executable, a log file, and the oldest/newest Pythons."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from conftest import EXAMPLES

PYSAM = EXAMPLES / "pysam"


def ekl(*args: str, **kw) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "ekl.launcher.cli", *args], capture_output=True,
                          text=True, timeout=120, **kw)


def test_a_packaged_zip_runs_directly(tmp_path, monkeypatch):
    monkeypatch.setenv("EKL_CACHE_DIR", str(tmp_path / "cache"))
    z = tmp_path / "pysam.zip"
    cp = ekl("package", str(PYSAM), "-o", str(z), "--no-run")
    assert cp.returncode == 0, cp.stderr
    env = dict(os.environ, EKL_CACHE_DIR=str(tmp_path / "cache"))
    cp = ekl("call", str(z), "revert", '"zip"', env=env)
    assert cp.returncode == 0, cp.stderr
    assert json.loads(cp.stdout) == "piz"


def test_go_language_plugins_run_their_executable_directly(plugin_copy, host):
    """eKuiper runs a Go plugin as ``EXE CONF``; any executable speaking the protocol works."""
    folder = plugin_copy("compat")
    exe = folder / "plugin-bin"
    exe.write_text(f"#!{sys.executable}\n" + (folder / "compat.py").read_text())
    exe.chmod(0o755)
    jf = next(folder.glob("*.json"))
    d = json.loads(jf.read_text())
    d.update(language="go", executable="plugin-bin")
    jf.write_text(json.dumps(d))
    inst = host.start(folder)
    assert inst.spec.argv[0] == str(exe) and json.loads(inst.spec.argv[1]) == {"sendTimeout": 1000}
    got = inst.start_function("where").exec([])
    assert got["argv"][0] == str(exe)


def test_plugin_output_goes_to_a_rotated_log_file(tmp_path):
    log = tmp_path / "pysam.log"
    cp = ekl("run", str(PYSAM), "--count", "3", "--config", '{"interval": 0.01}',
             "--log-file", str(log))
    assert cp.returncode == 0, cp.stderr
    text = log.read_text()
    assert "[pysam] receive:" in text and "plugin pysam serving" in text


@pytest.mark.parametrize("version", ["3.8.18", "3.13.0"])
def test_the_sdk_runs_on_the_oldest_and_newest_pythons(version, tmp_path):
    """A bare venv of that Python (no pip, no pynng): ekl hosts its pure-Python SDK there."""
    base = Path(f"/root/.pyenv/versions/{version}/bin/python3")
    if not base.exists():
        pytest.skip(f"no Python {version} on this machine")
    venv = tmp_path / "v"
    subprocess.run([str(base), "-m", "venv", "--without-pip", str(venv)], check=True,
                   env={k: v for k, v in os.environ.items() if not k.startswith("PYENV")})
    py = str(venv / "bin" / "python")
    cp = ekl("run", str(PYSAM), "--count", "3", "--config", '{"interval": 0.01}',
             "--python", py)
    assert cp.returncode == 0, cp.stderr
    assert [json.loads(x)["revert"] for x in cp.stdout.splitlines()] == ["nosjyp"] * 3
    assert f"hosting ekl's SDK for {py}" in cp.stderr
