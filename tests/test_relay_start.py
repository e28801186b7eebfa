"""``ekl-python``'s start order: the plugin is spawned first, the dial to eKuiper and the
bookkeeping (status file) follow while it boots, and a failure in either still leaves no
process and no file behind. Real processes, real sockets, real signals.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

from conftest import plugin_procs, run_watching
from ekuiper import protocol

EKL_PYTHON = str(Path(sys.executable).with_name("ekl-python"))


def relay_argv(folder: Path) -> list:
    exe = json.loads(next(folder.glob("*.json")).read_text())["executable"]
    return [EKL_PYTHON, "-u", str(folder / exe), protocol.encode_portable_config(1000)]


def test_the_plugin_is_spawned_before_the_dial_to_ekuiper_ends(plugin_copy, ipc_dir, tmp_path):
    """No eKuiper listens: the relay dials for its retry window (5 s); the plugin is already
    running meanwhile, and when the dial gives up both exit and nothing is left."""
    folder = plugin_copy("compat")
    status = tmp_path / "status"
    env = dict(os.environ, EKUIPER_IPC_DIR=ipc_dir, EKL_STATUS_DIR=str(status))
    code, err, seen_running = run_watching(relay_argv(folder), folder, cwd=folder, env=env)
    assert seen_running, "the plugin was not started while ekl-python dialed eKuiper"
    assert code == 1
    assert "no eKuiper listening on" in err and "Traceback" not in err
    assert not plugin_procs(folder)
    assert not (status.exists() and list(status.glob("*.json")))  # no status file left


def test_a_status_folder_that_cannot_be_made_stops_before_the_plugin_starts(plugin_copy,
                                                                            ipc_dir):
    """Bad input is found before anything is spawned, eKuiper listening or not."""
    folder = plugin_copy("compat")
    env = dict(os.environ, EKUIPER_IPC_DIR=ipc_dir, EKL_STATUS_DIR="/dev/null/status")
    code, err, seen_running = run_watching(relay_argv(folder), folder, cwd=folder, env=env)
    assert code == 2
    assert "status folder /dev/null/status: cannot create it" in err and "Traceback" not in err
    assert not seen_running and not plugin_procs(folder)


#: Modules none of which the start path (up to the plugin's spawn) may load: each cost
#: several ms of every ekl-python and ekl start (issue 16) and none is needed to decide
#: and spawn a cached start.
HEAVY = ("pynng", "psutil", "orjson", "random", "uuid", "datetime", "shutil", "tempfile",
         "hashlib", "zipfile", "yaml", "asyncio", "ssl", "ekl.envs", "ekuiper.runtime",
         # an adopted early start spawns nothing: Popen and its imports wait for a restart
         "subprocess",
         # value classes are records and annotations are not evaluated: dataclasses
         # (inspect, ast, dis) and typing cost every start about 50 ms (docs/performance.md)
         "dataclasses", "inspect", "typing")
#: Not loaded by any command (the CLI's verbs and the relay included) before it runs.
NEVER_AT_START = ("dataclasses", "inspect", "typing")
#: Not loaded with the relay either: the status file and the operator's socket load after
#: the dial to eKuiper, Popen at a restart.
RELAY_LATER = ("subprocess", "ekl.launcher.supervise.control", "ekl.launcher.supervise.status")


def loaded(modules: str, names: tuple) -> str:
    """Which of ``names`` a fresh interpreter has loaded after ``import modules``."""
    code = (f"import sys\nimport {modules}\n"
            f"print(','.join(m for m in {names!r} if m in sys.modules))")
    return subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                          check=True).stdout.strip()


def test_the_start_path_up_to_the_spawn_loads_no_heavy_module():
    out = loaded("ekl.launcher.pythonbin, ekl.launcher.start, ekl.launcher.host.instance",
                 HEAVY)
    assert out == "", f"loaded on the start path: {out}"


def test_the_relay_loads_its_bookkeeping_and_popen_later():
    out = loaded("ekl.launcher.commands, ekl.launcher.pythonbin.relay",
                 RELAY_LATER + NEVER_AT_START)
    assert out == "", f"loaded with the relay: {out}"


def test_no_command_loads_dataclasses_or_typing():
    """The CLI (every verb's parser and the modules ``call``, ``tail`` and ``run`` use) and
    the SDK's plugin runtime stay free of them too."""
    out = loaded("ekl.launcher.cli, ekl.launcher.cli.run, ekl.launcher.host.instance, "
                 "ekuiper.runtime.plugin", NEVER_AT_START)
    assert out == "", f"loaded: {out}"


def test_plugin_output_held_at_start_is_written_when_ekl_python_is_stopped(plugin_copy,
                                                                           ipc_dir, tmp_path):
    """ekl-python holds the plugin's output lines (INFO) until eKuiper's first command is
    answered, at most 1 s (docs/performance.md): a SIGTERM inside that second still writes
    them before it exits, and it exits at once, with 0, although its dial to eKuiper (no
    one listens here) had seconds of retries left. (A SIGKILL then loses them: nothing
    runs after it; at most the 256 lines ``lazylog.HOLD_MAX`` bounds.)"""
    import signal
    import time

    folder = plugin_copy("compat")
    exe = folder / "compat.py"
    exe.write_text('import sys\nprint("boot marker one", flush=True)\n'
                   'print("boot marker two", file=sys.stderr, flush=True)\n'
                   + exe.read_text())
    # no eKuiper: nothing is ever answered
    env = dict(os.environ, EKUIPER_IPC_DIR=ipc_dir, EKL_STATUS_DIR=str(tmp_path / "status"))
    proc = subprocess.Popen(relay_argv(folder), cwd=folder, env=env, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True)
    try:
        end = time.monotonic() + 5
        while not plugin_procs(folder) and time.monotonic() < end:
            time.sleep(0.01)
        time.sleep(0.3)  # the plugin prints its markers; ekl-python holds them
        proc.send_signal(signal.SIGTERM)
        t0 = time.monotonic()
        out, err = proc.communicate(timeout=10)
        took = time.monotonic() - t0
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    assert "boot marker one" in err and "boot marker two" in err, err  # stdout and stderr
    assert took < 3, f"ekl-python took {took:.1f} s to stop"  # the dial retried for 5 s
    assert proc.returncode == 0, err
    assert "Traceback" not in err and "no eKuiper listening" not in err
    assert not plugin_procs(folder)
