"""Folders in /tmp that another local user may have made first: ekl refuses to use them.

Reproduced before the fix: ``ekl-python`` wrote its status into ``/tmp/ekl-status`` even
when another user had created it, through a predictable temporary name that followed
symlinks, so a local user could make a root-run ``ekl-python`` overwrite any file.
"""

from __future__ import annotations

import os
import stat
import subprocess
import sys
from pathlib import Path

import pytest

from conftest import make_plugin

EKL_PYTHON = str(Path(sys.executable).with_name("ekl-python"))
NOBODY = 65534


def _run_ekl_python(folder: Path, status_dir: Path, **env: str) -> subprocess.CompletedProcess:
    e = dict(os.environ, EKL_STATUS_DIR=str(status_dir), **env)
    return subprocess.run([EKL_PYTHON, "-u", str(folder / "compat.py"), '{"sendTimeout":1000}'],
                          cwd=str(folder), env=e, capture_output=True, text=True, timeout=60)


@pytest.mark.skipif(os.geteuid() != 0, reason="chown to another user needs root")
def test_ekl_python_refuses_a_status_folder_owned_by_another_user(tmp_path: Path) -> None:
    folder = make_plugin(tmp_path, "compat")
    foreign = tmp_path / "status"
    foreign.mkdir(mode=0o700)
    os.chown(foreign, NOBODY, NOBODY)
    target = tmp_path / "precious"
    target.write_text("keep me")
    (foreign / "compat.json").symlink_to(target)  # what an attacker would plant
    cp = _run_ekl_python(folder, foreign)
    assert cp.returncode == 2, cp.stderr
    lines = [ln for ln in cp.stderr.splitlines() if ln.startswith("ekl-python:")]
    assert len(lines) == 1 and str(foreign) in lines[0] and "Traceback" not in cp.stderr
    assert target.read_text() == "keep me"


def test_ekl_python_refuses_a_world_writable_status_folder(tmp_path: Path) -> None:
    folder = make_plugin(tmp_path, "compat")
    shared = tmp_path / "status"
    shared.mkdir()
    shared.chmod(0o777)
    cp = _run_ekl_python(folder, shared)
    assert cp.returncode == 2 and str(shared) in cp.stderr and "Traceback" not in cp.stderr
    assert list(shared.iterdir()) == []


def test_status_folder_and_file_are_private_under_umask_000(tmp_path: Path, ipc_dir: str) -> None:
    """``ekl supervise --status-file`` under umask 000: the file is 0600 all the same."""
    status = tmp_path / "s" / "status.json"
    status.parent.mkdir()
    folder = make_plugin(tmp_path, "compat")
    code = ("import os, sys; os.umask(0); from ekl.launcher.cli import main; "
            "sys.exit(main(sys.argv[1:]))")
    p = subprocess.Popen([sys.executable, "-c", code, "-q", "supervise", str(folder),
                          "--status-file", str(status), "--ipc-dir", ipc_dir],
                         stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    try:
        from conftest import wait_for

        assert wait_for(lambda: status.is_file() and '"RUNNING"' in status.read_text(),
                        timeout=30)
        assert stat.S_IMODE(status.stat().st_mode) == 0o600
    finally:
        p.terminate()
        p.wait(30)
    assert not [f for f in status.parent.iterdir() if f.name != "status.json"]  # no temp files


def test_cache_folder_is_private_under_umask_000(tmp_path: Path) -> None:
    cache = tmp_path / "cache"
    code = ("import os, sys; os.umask(0); from ekl.launcher.cli import main; "
            "sys.exit(main(sys.argv[1:]))")
    folder = make_plugin(tmp_path, "compat")
    cp = subprocess.run([sys.executable, "-c", code, "-q", "call", str(folder), "echo", "1",
                         "--python", sys.executable], env=dict(os.environ, EKL_CACHE_DIR=str(cache)),
                        capture_output=True, text=True, timeout=60)
    assert cp.returncode == 0, cp.stderr
    assert stat.S_IMODE(cache.stat().st_mode) == 0o700


@pytest.mark.skipif(os.geteuid() != 0, reason="chown to another user needs root")
def test_a_cache_folder_owned_by_another_user_is_refused(tmp_path: Path) -> None:
    """Plugins import ekl's SDK from the cache: a folder someone else controls is refused."""
    cache = tmp_path / "cache"
    cache.mkdir(mode=0o700)
    os.chown(cache, NOBODY, NOBODY)
    empty = tmp_path / "bare"
    subprocess.run([sys.executable, "-m", "venv", "--without-pip", str(empty)], check=True)
    folder = make_plugin(tmp_path, "compat")  # a bare venv: ekl's SDK is lent from the cache
    cp = subprocess.run([sys.executable, "-m", "ekl.launcher.cli", "call", str(folder), "echo",
                         "1", "--python", str(empty / "bin" / "python")],
                        env=dict(os.environ, EKL_CACHE_DIR=str(cache)), capture_output=True,
                        text=True, timeout=60)
    assert cp.returncode == 2 and "Traceback" not in cp.stderr, cp.stderr
    assert str(cache) in cp.stderr and cp.stderr.count("\n") == 1
