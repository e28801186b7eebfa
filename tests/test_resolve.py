"""Choosing the interpreter: precedence, probing, hosting the SDK, and clear refusals."""

from __future__ import annotations

import json
import logging
import os
import subprocess
import sys
from pathlib import Path

import pytest

from ekl.envs.probe import probe
from ekl.launcher.errors import EklError
from ekl.launcher.plugin import load
from ekl.launcher.settings import LaunchOptions
from ekl.launcher.start.resolve import resolve


def with_env(folder: Path, **fields) -> Path:
    jf = next(folder.glob("*.json"))
    d = json.loads(jf.read_text())
    d.update(fields)
    jf.write_text(json.dumps(d))
    return folder


def prefix_of(python: str) -> str:
    return str(Path(python).parent.parent)


def test_plugin_without_env_runs_on_ekls_own_interpreter(plugin_copy):
    res = resolve(load(plugin_copy("compat")))
    assert res.interpreter == sys.executable and res.origin.startswith("the interpreter")
    assert res.argv[1] == "-u" and res.argv[2].endswith("compat.py")
    assert json.loads(res.argv[-1]) == {"sendTimeout": 1000}
    assert res.ekl_sdk  # ekl's SDK is installed there


def test_precedence_python_flag_then_env_var_then_kuiper_yaml_then_plugin_env(
        plugin_copy, tmp_path, monkeypatch, bare_python, official_python, empty_python):
    folder = with_env(plugin_copy("compat"), virtualEnvType="venv", env=prefix_of(bare_python))
    m = load(folder)
    kuiper = tmp_path / "kuiper.yaml"
    kuiper.write_text(f"portable:\n  pythonBin: {official_python}\n  initTimeout: 5000\n")
    monkeypatch.delenv("EKL_PYTHON_BIN", raising=False)
    assert resolve(m).interpreter.startswith(prefix_of(bare_python))
    assert resolve(m, LaunchOptions(ekuiper_conf=str(kuiper))).interpreter == official_python
    monkeypatch.setenv("EKL_PYTHON_BIN", sys.executable)
    r = resolve(m, LaunchOptions(ekuiper_conf=str(kuiper)))
    assert r.interpreter == sys.executable and r.origin == "$EKL_PYTHON_BIN"
    r = resolve(m, LaunchOptions(python=official_python, ekuiper_conf=str(kuiper)))
    assert r.interpreter == official_python and r.origin == "--python"
    assert r.ekl_sdk is False  # the official SDK hard-codes /tmp


def test_sdk_is_hosted_into_an_env_without_one(host, plugin_copy, bare_python):
    folder = plugin_copy("compat")
    res = resolve(load(folder), LaunchOptions(python=bare_python))
    assert res.sdk == "hosted"
    hosted = res.env["PYTHONPATH"]
    assert sorted(os.listdir(hosted)) == ["ekuiper"]  # the SDK alone, no site-packages
    inst = host.start(folder, python=bare_python)
    got = inst.start_function("where").exec([["PYTHONPATH"]])
    assert got["executable"].startswith(prefix_of(bare_python))
    assert got["ekuiper"].startswith(hosted)
    assert not any("site-packages" in p and ".venv" in p and "/work" in p for p in got["path"]
                   if not p.startswith(prefix_of(bare_python)))


def test_env_with_nothing_installed_runs_on_the_hosted_sdk_without_pynng(host, plugin_copy,
                                                                         empty_python):
    folder = plugin_copy("compat")
    res = resolve(load(folder), LaunchOptions(python=empty_python))
    assert res.sdk == "hosted" and probe(res.interpreter, dict(res.env)).pynng is None
    inst = host.start(folder, python=empty_python)
    assert inst.start_function("echo").exec(["no compiled dependency"])["args"] == [
        "no compiled dependency"]


def test_pynng_transport_without_pynng_is_refused_with_the_install_command(
        plugin_copy, empty_python, monkeypatch):
    monkeypatch.setenv("EKUIPER_TRANSPORT", "pynng")
    with pytest.raises(EklError) as e:
        resolve(load(plugin_copy("compat")), LaunchOptions(python=empty_python))
    msg = str(e.value)
    assert "cannot import pynng" in msg and "EKUIPER_TRANSPORT=pynng asks for it" in msg
    assert f"{empty_python} -m pip install pynng" in msg and "\n" not in msg


def test_official_sdk_that_cannot_import_gets_ekls_in_front(plugin_copy, host, caplog,
                                                            official_no_pynng_python):
    folder = plugin_copy("compat")
    with caplog.at_level(logging.WARNING, logger="ekl"):
        res = resolve(load(folder), LaunchOptions(python=official_no_pynng_python))
    assert res.sdk == "hosted"
    assert "ekuiper SDK that cannot be imported" in caplog.text and "pynng" in caplog.text
    inst = host.start(folder, python=official_no_pynng_python)
    assert "/sdk/" in inst.start_function("where").exec([])["ekuiper"]


def test_too_old_python_is_refused(plugin_copy):
    old = Path("/root/.pyenv/versions/3.7.16/bin/python3.7")
    if not old.exists():
        pytest.skip("no Python 3.7 on this machine")
    with pytest.raises(EklError, match="is Python 3.7.16 .* need Python 3.8 or newer"):
        resolve(load(plugin_copy("compat")), LaunchOptions(python=str(old)))


def test_missing_and_non_python_interpreters_are_refused(plugin_copy):
    m = load(plugin_copy("compat"))
    with pytest.raises(EklError, match="does not exist"):
        resolve(m, LaunchOptions(python="/nope/python"))
    with pytest.raises(EklError, match="not on PATH"):
        resolve(m, LaunchOptions(python="no-such-python-anywhere"))
    with pytest.raises(EklError, match="failed to start|not a Python"):
        resolve(m, LaunchOptions(python="/bin/false"))


def test_kuiper_yaml_pitfalls(plugin_copy, tmp_path, caplog):
    m = load(plugin_copy("compat"))
    k = tmp_path / "kuiper.yaml"
    k.write_text(f"portable:\n  pythonBin: {sys.executable}\n")
    with caplog.at_level(logging.WARNING, logger="ekl"):
        resolve(m, LaunchOptions(ekuiper_conf=str(k)))
    assert "initTimeout is missing" in caplog.text and "nanoseconds" in caplog.text
    assert caplog.text.count("initTimeout is missing") == 1
    k.write_text("basic:\n  port: 1\n")
    with pytest.raises(EklError, match="has no 'portable' section"):
        resolve(m, LaunchOptions(ekuiper_conf=str(k)))


def test_conda_run_needs_conda_and_a_conda_env(plugin_copy, monkeypatch):
    m = load(with_env(plugin_copy("compat"), virtualEnvType="conda", env="myenv"))
    monkeypatch.setenv("PATH", "/usr/bin:/bin")
    with pytest.raises(EklError, match="--conda-run needs a conda binary on PATH"):
        resolve(m, LaunchOptions(conda_run=True))
    with pytest.raises(EklError, match="has no \"virtualEnvType\": \"conda\""):
        resolve(load(plugin_copy("compat")), LaunchOptions(conda_run=True))


def test_conda_run_builds_ekuipers_command_with_no_capture_output(plugin_copy, tmp_path,
                                                                  monkeypatch):
    # A stand-in `conda` on PATH (no real conda exists on these machines).
    fake = tmp_path / "bin"
    fake.mkdir()
    (fake / "conda").write_text("#!/bin/sh\nexit 0\n")
    (fake / "conda").chmod(0o755)
    monkeypatch.setenv("PATH", f"{fake}:/usr/bin:/bin")
    m = load(with_env(plugin_copy("compat"), virtualEnvType="conda", env="myenv"))
    argv = list(resolve(m, LaunchOptions(conda_run=True)).argv)
    assert argv[:6] == [str(fake / "conda"), "run", "--no-capture-output", "-n", "myenv", "python"]
    assert argv[6] == str(m.executable) and json.loads(argv[7]) == {"sendTimeout": 1000}


def test_probe_is_cached_but_notices_a_newly_installed_package(tmp_path, monkeypatch):
    monkeypatch.setenv("EKL_CACHE_DIR", str(tmp_path / "cache"))
    venv = tmp_path / "v"
    subprocess.run([sys.executable, "-m", "venv", "--without-pip", str(venv)], check=True)
    py = str(venv / "bin" / "python")
    first = probe(py)
    assert first.pynng is None and first.ekuiper is None
    assert list((tmp_path / "cache" / "probe").glob("*.json"))
    site = next(venv.glob("lib/python*/site-packages"))
    (site / "pynng").mkdir()
    (site / "pynng" / "__init__.py").write_text("__version__ = '9.9-test'\n")
    assert probe(py).pynng == "9.9-test"
