"""``ekl env ...`` as a user runs it: a real process, one-line errors, exit codes 0/1/2."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Dict

import pytest

from ekl.envs.lock import current_subdir

from .envs_testlib import make_conda_prefix, rattler_install, write_conda_lock, write_plugin

SUB = current_subdir()
REPO = Path(__file__).resolve().parents[2]


def env_cli(*args: str, timeout: float = 60) -> subprocess.CompletedProcess:
    env: Dict[str, str] = dict(os.environ)
    return subprocess.run([sys.executable, "-m", "ekl.launcher.cli", "env", *args],
                          capture_output=True, text=True, timeout=timeout, env=env, cwd="/")


def one_line_error(cp: subprocess.CompletedProcess, code: int) -> str:
    assert cp.returncode == code, (cp.stdout, cp.stderr)
    assert "Traceback" not in cp.stderr
    errors = [ln for ln in cp.stderr.splitlines() if ln.startswith("ekl: error: ")]
    assert len(errors) == 1 and cp.stderr.strip().splitlines()[-1] == errors[0], cp.stderr
    return errors[0]


def lend_launcher_site(prefix: Path) -> None:
    """Give a stand-in env pynng by pointing it at the launcher venv's site-packages (a real
    conda env would have pynng installed from conda-forge)."""
    import pynng

    site = next(prefix.glob("lib/python*/site-packages"))
    (site / "ekl-test-lend.pth").write_text(str(Path(pynng.__file__).parents[1]) + "\n")


def test_list_json(myenv: Path, conda_root: Path) -> None:
    cp = env_cli("list", "--json")
    assert cp.returncode == 0, cp.stderr
    rows = {r["prefix"]: r for r in json.loads(cp.stdout)}
    row = rows[str(myenv)]
    assert row["name"] == "myenv" and row["kind"] == "conda"
    assert row["version"] == ".".join(map(str, sys.version_info[:3]))
    assert rows[str(conda_root)]["name"] == "base"
    text = env_cli("list")
    assert "myenv" in text.stdout and str(myenv) in text.stdout


def test_check_exit_codes(myenv: Path, channel, tmp_path: Path) -> None:
    d = write_plugin(tmp_path / "demo")
    one_line_error(env_cli("check", str(d)), 2)  # no lock
    write_conda_lock(d / "conda-lock.yml",
                     [channel.get("ekl-hello", "1.0"), channel.get("ekl-data", "0.1")], SUB)
    cp = env_cli("check", str(d / "demo.json"))
    assert cp.returncode == 0 and "matches" in cp.stdout
    rattler_install(myenv, [channel.get("ekl-hello", "1.1"), channel.get("ekl-data", "0.1")],
                    tmp_path / "rc2")
    cp = env_cli("check", str(d))
    assert cp.returncode == 1
    assert "changed: ekl-hello 1.0 -> 1.1" in cp.stdout
    cp = env_cli("check", str(d), "--json")
    assert cp.returncode == 1 and json.loads(cp.stdout)["changed"] == ["ekl-hello 1.0 -> 1.1"]


def test_doctor(myenv: Path, channel, tmp_path: Path) -> None:
    d = write_plugin(tmp_path / "demo")
    cp = env_cli("doctor", str(d), "--json")
    checks = {c["name"]: c for c in json.loads(cp.stdout)["checks"]}
    assert checks["interpreter"]["status"] == "ok", cp.stdout
    # issue 13 item 15: no pynng and no SDK is a fact, not a failure: the launcher lends
    # its own SDK over the native transport, and doctor asks the launcher for that verdict
    assert checks["pynng"]["status"] == "info"
    assert "sdk" in checks, cp.stdout
    assert checks["sdk"]["status"] == "ok" and "lends" in checks["sdk"]["detail"]
    assert checks["transport"]["detail"].startswith("native")
    assert checks["start"]["status"] == "ok", checks["start"]
    assert checks["lock"]["status"] == "skip"
    assert cp.returncode == 0, cp.stdout
    lend_launcher_site(myenv)
    write_conda_lock(d / "conda-lock.yml", [channel.get("ekl-hello", "1.0")], SUB)
    cp = env_cli("doctor", str(d))
    assert cp.returncode == 1, cp.stdout
    assert "[  ok] pynng: pynng" in cp.stdout
    assert "[fail] lock:" in cp.stdout and "1 extra" in cp.stdout
    assert f"fix: rm -r {myenv} && ekl env create {d}" in cp.stdout


def test_create_install_and_errors(conda_root: Path, channel, tmp_path: Path) -> None:
    d = write_plugin(tmp_path / "demo", env="built")
    write_conda_lock(d / "conda-lock.yml", [channel.get("ekl-hello", "1.0")], SUB)
    cp = env_cli("create", str(d))
    assert cp.returncode == 0, cp.stderr
    assert cp.stdout.strip() == str(conda_root / "envs" / "built")
    assert "ekl: [1/1] verified" in cp.stderr
    one_line_error(env_cli("create", str(d)), 2)  # exists already
    # install is pip -r requirements.txt in the env (tests/envs/test_install_sh.py has more)
    make_conda_prefix(conda_root / "envs" / "myenv", channel, cache=tmp_path / "rc")
    d2 = write_plugin(tmp_path / "p2")
    assert "no such requirements file" in one_line_error(env_cli("install", str(d2)), 2)
    one_line_error(env_cli("doctor", str(tmp_path / "nowhere")), 2)
    (tmp_path / "bad").mkdir()
    (tmp_path / "bad" / "bad.json").write_text("{not json")
    assert "not valid JSON" in one_line_error(env_cli("check", str(tmp_path / "bad")), 2)
    d3 = write_plugin(tmp_path / "p3", env="absent")
    assert "not found; searched:" in one_line_error(env_cli("check", str(d3)), 2)


def test_register_into_a_parent_parser() -> None:
    import argparse

    from ekl.launcher.cli.env import register

    p = argparse.ArgumentParser(prog="ekl")
    register(p.add_subparsers(dest="command"))
    args = p.parse_args(["env", "pack", "x", "-o", "y.tar.gz"])
    assert callable(args.func) and args.output == "y.tar.gz"
    with pytest.raises(SystemExit):
        p.parse_args(["env"])
