"""Operating running launchers: ``ekl status`` exit codes and probes, and the control verbs
(``ekl restart/stop/start/reset``) against a real ``ekl supervise`` and a real ``ekl-python``
over their control sockets."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from pathlib import Path
from typing import Iterator, List

import psutil
import pytest

from conftest import make_plugin, short_id, wait_for
from ekl.launcher.cli.operate import render_table
from ekuiper.protocol import Meta


def ekl(*args: str, env: dict = None) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "ekl.launcher.cli", *args], text=True,
                          capture_output=True, timeout=90, env=env)


def plugins_in(status: Path) -> dict:
    return {p["name"]: p for p in json.loads(status.read_text())["plugins"]}


@pytest.fixture
def supervised(tmp_path: Path, ipc_dir: str) -> Iterator[tuple]:
    names = [f"op{short_id()}", f"op{short_id()}"]
    folders = [make_plugin(tmp_path, "compat", n) for n in names]
    status = tmp_path / "status.json"
    p = subprocess.Popen([sys.executable, "-m", "ekl.launcher.cli", "-q", "supervise",
                          *map(str, folders), "--status-file", str(status), "--ipc-dir", ipc_dir,
                          "--health-interval", "0.5"],
                         stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    try:
        assert wait_for(lambda: status.is_file() and len(plugins_in(status)) == 2 and all(
            v["state"] == "RUNNING" for v in plugins_in(status).values()), timeout=30)
        yield names, status, p
    finally:
        if p.poll() is None:
            p.terminate()
            p.wait(30)


def test_status_exit_codes_and_probe(supervised) -> None:
    names, status, _ = supervised
    sf = ["--status-file", str(status)]
    assert ekl("status", *sf).returncode == 0
    cp = ekl("status", *sf, "--check", *names)
    assert cp.returncode == 0 and cp.stdout == "" and cp.stderr == ""
    cp = ekl("stop", names[0], *sf)
    assert cp.returncode == 0 and f"{names[0]}: STOPPED" in cp.stdout, cp.stderr
    assert plugins_in(status)[names[0]]["state"] == "STOPPED"
    assert ekl("status", *sf).returncode == 3  # one is not running
    assert ekl("status", *sf, names[1]).returncode == 0  # only the listed ones count
    cp = ekl("status", *sf, "--check", *names)
    assert cp.returncode == 3 and cp.stdout == ""
    assert cp.stderr.strip().startswith(f"ekl: plugin {names[0]} is STOPPED: ")  # how it ended
    assert cp.stderr.count("\n") == 1
    cp = ekl("status", *sf, "--check", "nosuch")
    assert cp.returncode == 4 and "nosuch" in cp.stderr
    assert ekl("status", "--status-file", str(status.with_name("none.json"))).returncode == 4
    cp = ekl("start", names[0], *sf)
    assert cp.returncode == 0 and f"{names[0]}: RUNNING" in cp.stdout, cp.stderr
    assert ekl("status", *sf, "--check", *names).returncode == 0


def test_restart_all_and_reset_and_bad_names(supervised) -> None:
    names, status, _ = supervised
    sf = ["--status-file", str(status)]
    before = {n: p["pid"] for n, p in plugins_in(status).items()}
    cp = ekl("restart", "--all", *sf)
    assert cp.returncode == 0, cp.stderr
    assert wait_for(lambda: all(p["state"] == "RUNNING" and p["pid"] not in before.values()
                                for p in plugins_in(status).values()), timeout=15)
    assert all(not psutil.pid_exists(pid) or psutil.Process(pid).status() == "zombie"
               for pid in before.values())
    reasons = [p["last_restarts"][-1]["reason"] for p in plugins_in(status).values()]
    assert reasons == ["restart requested (ekl restart)"] * 2
    assert ekl("reset", names[1], *sf).returncode == 0
    cp = ekl("restart", "nosuch", *sf)
    assert cp.returncode == 2 and cp.stderr.count("\n") == 1 and "nosuch" in cp.stderr
    cp = ekl("restart", *sf)
    assert cp.returncode == 2 and "--all" in cp.stderr


def test_a_launcher_that_is_gone_is_one_line(supervised) -> None:
    names, status, proc = supervised
    proc.kill()  # its status file stays behind, naming a socket nobody serves
    proc.wait(10)
    cp = ekl("restart", names[0], "--status-file", str(status))
    assert cp.returncode == 4 and "Traceback" not in cp.stderr
    assert cp.stderr.count("\n") == 1 and "nobody listens" in cp.stderr


def test_sighup_ends_supervise_with_status_stopped(supervised) -> None:
    _, status, proc = supervised
    proc.send_signal(signal.SIGHUP)
    assert proc.wait(30) == 0
    assert all(p["state"] == "STOPPED" for p in plugins_in(status).values())


def test_restart_of_an_ekl_python_plugin_is_transparent_to_ekuiper(ipc_dir, plugin_copy,
                                                                   tmp_path) -> None:
    from test_pythonbin import EKuiper, real_plugin

    k = EKuiper(ipc_dir, str(tmp_path / "st"))
    try:
        inst = k.start(plugin_copy("compat"))
        stream = inst.start_source("counter", Meta(f"r{short_id()}", "op", 0), "ds",
                                   {"interval": 0.005})
        assert stream.recv(5).message["ds"] == "ds"
        old = real_plugin(inst).pid
        env = dict(os.environ, EKL_STATUS_DIR=str(tmp_path / "st"))
        cp = ekl("restart", inst.name, env=env)
        assert cp.returncode == 0 and f"{inst.name}: RUNNING" in cp.stdout, cp.stderr
        assert wait_for(lambda: real_plugin(inst).pid != old)
        got = [stream.recv(10) for _ in range(5)]  # the rule never noticed
        assert all(g.message["ds"] == "ds" for g in got) and inst.alive()
        cp = ekl("status", "--check", inst.name, env=env)
        assert cp.returncode == 0 and cp.stdout == ""
        doc = json.loads(next((tmp_path / "st").glob("*.json")).read_text())
        private = [os.path.dirname(doc["control"]), doc["plugins"][0]["control_dir"]]
        assert all(os.path.isdir(d) for d in private)
    finally:
        k.close()
    # the relay's tree was stopped by its host: its watchdog still removed its folders
    assert wait_for(lambda: not any(os.path.exists(d) for d in private), timeout=5), private


def test_table_wraps_long_reasons_instead_of_cutting_them() -> None:
    reason = "plugin x exited with code 1 before its handshake: " + "word " * 40 + "END"
    status = {"written_at": 0, "launcher_pid": 1, "plugins": [{
        "name": "x", "state": "FATAL", "pid": None, "uptime": 0, "restarts": 3, "rss": 0,
        "cpu_percent": 0.0, "symbols": [], "fatal_reason": reason, "containment": "cgroup"}]}
    narrow = render_table(status, width=80).splitlines()
    assert all(len(line) <= 80 for line in narrow[:-1]) and len(narrow) > 3
    joined = " ".join(w for line in narrow for w in line.split())
    assert "END" in joined and "cgroup" in joined
    wide: List[str] = render_table(status, width=None).splitlines()
    assert reason in wide[1]
