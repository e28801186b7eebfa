"""``ekl-python``'s start order: the plugin is spawned first, the dial to eKuiper and the
bookkeeping (status file) follow while it boots, and a failure in either still leaves no
process and no file behind. Real processes, real sockets, real signals.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path

import psutil

from ekl.launcher.host.instance import PluginInstance
from ekl.launcher.process import LaunchSpec
from ekl.launcher.settings import HostSettings
from ekuiper import protocol

EKL_PYTHON = str(Path(sys.executable).with_name("ekl-python"))


def relay_argv(folder: Path) -> list:
    exe = json.loads(next(folder.glob("*.json")).read_text())["executable"]
    return [EKL_PYTHON, "-u", str(folder / exe), protocol.encode_portable_config(1000)]


def plugin_procs(folder: Path) -> list:
    """Processes running the plugin's executable (the real plugin, not ekl-python)."""
    out = []
    for p in psutil.process_iter(["cmdline"]):
        cmd = p.info["cmdline"] or []
        if any(str(folder) in c for c in cmd) and not any("ekl-python" in c for c in cmd):
            out.append(p)
    return out


def test_the_plugin_is_spawned_before_the_dial_to_ekuiper_ends(plugin_copy, ipc_dir, tmp_path):
    """No eKuiper listens: the relay dials for its retry window (5 s); the plugin is already
    running meanwhile, and when the dial gives up both exit and nothing is left."""
    folder = plugin_copy("compat")
    status = tmp_path / "status"
    env = dict(os.environ, EKUIPER_IPC_DIR=ipc_dir, EKL_STATUS_DIR=str(status))
    proc = subprocess.Popen(relay_argv(folder), cwd=folder, env=env, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True)
    try:
        seen_running = False
        deadline = time.monotonic() + 30
        while proc.poll() is None and time.monotonic() < deadline:
            if plugin_procs(folder):
                seen_running = True
            time.sleep(0.05)
        _, err = proc.communicate(timeout=30)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    assert seen_running, "the plugin was not started while ekl-python dialed eKuiper"
    assert proc.returncode == 1
    assert "no eKuiper listening on" in err and "Traceback" not in err
    assert not plugin_procs(folder)
    assert not (status.exists() and list(status.glob("*.json")))  # no status file left


def test_a_status_folder_that_cannot_be_made_is_one_line_and_stops_the_plugin(plugin_copy,
                                                                             ipc_dir):
    folder = plugin_copy("compat")
    name = next(folder.glob("*.json")).stem
    env = dict(os.environ, EKUIPER_IPC_DIR=ipc_dir, EKL_STATUS_DIR="/dev/null/status")
    spec = LaunchSpec(name, tuple(relay_argv(folder)), str(folder), env)
    inst = PluginInstance(spec, HostSettings(ipc_dir=ipc_dir), ipc_dir=ipc_dir,
                          control_dir=ipc_dir)
    try:
        inst.start_process()  # the relay's handshake: eKuiper's side is up
        assert inst.process is not None
        assert inst.process.popen.wait(30) == 2
        tail = inst.process.tail(5)
    finally:
        inst.close()
    assert "status folder /dev/null/status: cannot create it" in tail and "EKL_STATUS_DIR" in tail
    assert "Traceback" not in tail
    deadline = time.monotonic() + 5
    while plugin_procs(folder) and time.monotonic() < deadline:
        time.sleep(0.05)
    assert not plugin_procs(folder)
