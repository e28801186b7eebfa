"""Signals and exits: Ctrl-C and SIGTERM end tail/run/feed/call in every state (idle
source, a source whose open() raised, a plugin still starting, a hung call) with 130/143
and nothing left behind; SIGHUP stops ``ekl supervise`` cleanly; unwritable file options
are one line. Real processes and real signals; timing goals are in bench/, not here."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time

import psutil
import pytest

from conftest import wait_for
from ekl.launcher.process import is_gone

CODES = {signal.SIGINT: 130, signal.SIGTERM: 143}


def ekl_popen(*args, stdin=subprocess.DEVNULL):
    return subprocess.Popen([sys.executable, "-m", "ekl.launcher.cli", *args], stdin=stdin,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def plugin_kids(proc, name):
    out = []
    for c in psutil.Process(proc.pid).children(recursive=True):
        try:
            if c.status() != psutil.STATUS_ZOMBIE and any(name in a for a in c.cmdline()):
                out.append(c.pid)
        except psutil.Error:
            pass
    return out


STATES = {
    "tail-idle-source": (lambda f: ["tail", f, "quiet"], None),
    "tail-plugin-still-starting": (lambda f: ["tail", f, "quiet"], "slowstart"),
    "run-idle-source": (lambda f: ["run", f, "--source", "quiet"], None),
    "feed-waiting-for-stdin": (lambda f: ["feed", f, "null"], None),
    "call-hung-function": (lambda f: ["call", f, "hang", "1", "--call-timeout", "60"], None),
}


# every state with Ctrl-C; SIGTERM (same code path, another exit code) in two of them
CASES = [(state, signal.SIGINT) for state in STATES] + [
    ("tail-idle-source", signal.SIGTERM), ("tail-plugin-still-starting", signal.SIGTERM)]


@pytest.mark.parametrize("state, sig", CASES,
                         ids=[f"{st}-{signal.Signals(sg).name}" for st, sg in CASES])
def test_interrupt_in_every_state_exits_with_its_code_and_leaves_nothing(plugin_copy, sig,
                                                                         state):
    folder = plugin_copy("hostile")
    argv, marker = STATES[state]
    if marker:
        (folder / marker).touch()
    proc = ekl_popen(*argv(str(folder)), stdin=subprocess.PIPE)
    try:
        assert wait_for(lambda: plugin_kids(proc, "hostile.py"), timeout=30), proc.poll()
        kids = plugin_kids(proc, "hostile.py")
        time.sleep(0.3 if marker else 1.0)  # starting / settled into its idle wait
        proc.send_signal(sig)
        _, err = proc.communicate(timeout=15)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    assert proc.returncode == CODES[sig], err
    assert "interrupted; plugin stopped" in err and "Traceback" not in err
    assert wait_for(lambda: all(is_gone(k) for k in kids), timeout=3)


def read_status(path):
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError):
        return None


def test_sighup_stops_supervise_cleanly_and_the_status_says_stopped(plugin_copy, tmp_path):
    status = tmp_path / "status.json"
    proc = ekl_popen("supervise", str(plugin_copy("hostile")), "--status-file", str(status),
                     "--health-interval", "0.3")
    try:
        assert wait_for(lambda: (s := read_status(status)) and s["plugins"]
                        and s["plugins"][0]["state"] == "RUNNING", timeout=30), proc.poll()
        pid = read_status(status)["plugins"][0]["pid"]
        proc.send_signal(signal.SIGHUP)
        _, err = proc.communicate(timeout=15)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    assert proc.returncode == 0, err
    assert read_status(status)["plugins"][0]["state"] == "STOPPED"
    assert is_gone(pid)


@pytest.mark.parametrize("verb, option, path, fragment", [
    ("supervise", "--status-file", "/nonexistent/x.json",
     "--status-file /nonexistent/x.json: folder /nonexistent does not exist"),
    ("supervise", "--status-file", "/", "--status-file /: is a folder"),
    ("supervise", "--log-file", "/nonexistent/p.log",
     "--log-file /nonexistent/p.log: folder /nonexistent does not exist"),
    ("call", "--log-file", "/proc/p.log", "--log-file /proc/p.log: cannot write it"),
])
def test_an_unwritable_file_option_is_one_line(plugin_copy, verb, option, path, fragment):
    folder = str(plugin_copy("hostile"))
    args = [verb, folder] + (["echo", "1"] if verb == "call" else []) + [option, path]
    cp = subprocess.run([sys.executable, "-m", "ekl.launcher.cli", *args],
                        capture_output=True, text=True, timeout=60)
    assert cp.returncode == 2
    lines = cp.stderr.strip().splitlines()
    assert len(lines) == 1 and fragment in lines[0] and lines[0].startswith("ekl: ")
    assert os.path.basename(path) not in os.listdir("/tmp")
