"""``ekl-python`` driven the way eKuiper drives ``pythonBin``.

The host here is ekl's PluginInstance, which behaves like eKuiper's Go runtime: it listens
first, waits for the handshake, applies the stale-handshake rule, journals commands, and
stops the process it started with SIGKILL.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import psutil
import pytest

from conftest import short_id, wait_for
from ekl.launcher.host.instance import PluginInstance
from ekl.launcher.process import LaunchSpec, is_gone
from ekl.launcher.settings import HostSettings
from ekuiper import protocol
from ekuiper.protocol import Meta
from ekuiper.record import replace


def eKuiper_instance(spec: LaunchSpec, ipc_dir: str) -> PluginInstance:
    """A host that starts exactly ``spec`` as eKuiper would (no ekl start path), its sockets
    in ``ipc_dir`` (eKuiper's are in /tmp; the plugin learns the folder from EKUIPER_IPC_DIR)."""
    spec = replace(spec, env={**spec.env, protocol.IPC_DIR_ENV: ipc_dir})
    return PluginInstance(spec, HostSettings(ipc_dir=ipc_dir), ipc_dir=ipc_dir, control_dir=ipc_dir)

EKL_PYTHON = str(Path(sys.executable).with_name("ekl-python"))



class EKuiper:
    """Starts plugins as ``{pythonBin} -u EXE CONF`` and SIGKILLs them, like eKuiper."""

    def __init__(self, ipc_dir: str, status_dir: str) -> None:
        self.ipc_dir, self.status_dir = ipc_dir, status_dir
        self.started = []

    def start(self, folder: Path, python_bin: str = EKL_PYTHON, **env: str) -> PluginInstance:
        exe = json.loads(next(folder.glob("*.json")).read_text())["executable"]
        name = next(folder.glob("*.json")).stem
        e = dict(os.environ, EKL_STATUS_DIR=self.status_dir, **env)
        spec = LaunchSpec(name, (python_bin, "-u", str(folder / exe),
                                 protocol.encode_portable_config(1000)), str(folder), e)
        inst = eKuiper_instance(spec, self.ipc_dir)
        inst.start_process()
        self.started.append(inst)
        return inst

    def kill(self, inst: PluginInstance) -> list:
        """eKuiper's stop: SIGKILL on the process it started; returns the tree it had."""
        pid = inst.process.popen.pid
        tree = [pid] + [c.pid for c in psutil.Process(pid).children(recursive=True)]
        inst.process.popen.kill()
        inst.process.popen.wait()
        return tree

    def close(self) -> None:
        for inst in self.started:
            if inst.alive():
                self.kill(inst)
            inst.close()


@pytest.fixture
def ekuiper(ipc_dir, tmp_path):
    k = EKuiper(ipc_dir, str(tmp_path / "status"))
    yield k
    k.close()


def real_plugin(inst: PluginInstance) -> psutil.Process:
    """The plugin process under the relay (which answers eKuiper before it is up)."""
    def kids():
        out = []
        for c in psutil.Process(inst.pid).children():
            try:
                if any(a.endswith(".py") for a in c.cmdline()[1:3]):
                    out.append(c)
            except psutil.Error:  # the plugin just killed, a zombie until the relay reaps it
                continue
        return out
    assert wait_for(lambda: len(kids()) == 1), [c.pid for c in kids()]
    return kids()[0]


def test_source_keeps_delivering_across_a_plugin_crash(ekuiper, plugin_copy):
    inst = ekuiper.start(plugin_copy("compat"))
    relay_pid = inst.pid
    stream = inst.start_source("counter", Meta(f"r{short_id()}", "op", 0), "ds",
                               {"interval": 0.005})
    echo = inst.start_function("echo")
    assert stream.recv(5).message["ds"] == "ds"
    victim = real_plugin(inst)
    victim.kill()
    t0 = time.monotonic()
    # eKuiper's view: the same process, still running, and data flowing again.
    got = [stream.recv(10) for _ in range(20)]
    assert all(g.message["ds"] == "ds" for g in got)
    assert time.monotonic() - t0 < 10
    assert inst.pid == relay_pid and inst.alive()
    assert real_plugin(inst).pid != victim.pid
    assert echo.exec([4])["args"] == [4]


def test_ekuiper_sigkill_takes_the_plugin_tree_down_within_2s(ekuiper, plugin_copy):
    inst = ekuiper.start(plugin_copy("grandchild"))
    inst.start_function("pids").exec([])
    status = Path(ekuiper.status_dir) / f"{inst.name}.json"
    assert wait_for(lambda: status.exists() and json.loads(status.read_text())["plugins"][0]
                    ["state"] == "RUNNING")
    private = json.loads(status.read_text())["plugins"][0]["control_dir"]
    assert os.path.isdir(private)
    tree = ekuiper.kill(inst)
    assert len(tree) >= 4  # ekl-python, plugin, sh, sleep (and the lifeline watchdog)
    t0 = time.monotonic()
    assert wait_for(lambda: all(is_gone(p) for p in tree), timeout=3)
    assert time.monotonic() - t0 < 2.0
    assert wait_for(lambda: not os.path.exists(private), timeout=2)  # its socket folder too


def test_status_shows_plugins_run_by_ekl_python(ekuiper, plugin_copy, tmp_path):
    inst = ekuiper.start(plugin_copy("compat"))
    inst.start_function("echo")
    env = dict(os.environ, EKL_STATUS_DIR=ekuiper.status_dir)
    assert wait_for(lambda: list(Path(ekuiper.status_dir).glob("*.json")))

    def status():
        cp = subprocess.run([sys.executable, "-m", "ekl.launcher.cli", "status", "--json"],
                            capture_output=True, text=True, env=env, timeout=30)
        plugins = json.loads(cp.stdout)["plugins"]
        # LSB exit codes: 0 when every plugin is RUNNING, 3 when one is not
        assert cp.returncode == (0 if all(p["state"] == "RUNNING" for p in plugins) else 3)
        return plugins

    assert wait_for(lambda: status()[0]["state"] == "RUNNING" and status()[0]["symbols"])
    p = status()[0]
    assert p["name"] == inst.name and p["pid"] == real_plugin(inst).pid
    table = subprocess.run([sys.executable, "-m", "ekl.launcher.cli", "status"], env=env,
                           capture_output=True, text=True, timeout=30)
    assert inst.name in table.stdout and "RUNNING" in table.stdout
    ekuiper.kill(inst)
    assert status()[0]["state"] == "STOPPED"  # a SIGKILLed relay leaves a file marked stale


def test_official_sdk_environment_gets_eklss_sdk_in_front(ekuiper, plugin_copy, official_python):
    inst = ekuiper.start(plugin_copy("compat"), EKL_PYTHON_BIN=official_python)
    got = inst.start_function("where").exec([])
    assert got["executable"].startswith(str(Path(official_python).parent.parent))
    assert "/sdk/" in got["ekuiper"] and ".cache" not in got["ekuiper"].split("/sdk/")[0][-7:]


@pytest.mark.parametrize("args", [
    ["-c", "import sys; print(sys.argv[1:])", "a", "b"],
    ["--version"],
    ["-m", "json.tool", "--help"],
    ["-uB", "-c", "print(1+1)"],
])
def test_anything_but_a_plugin_start_behaves_like_python(args, tmp_path):
    ours = subprocess.run([EKL_PYTHON, *args], capture_output=True, text=True, timeout=30,
                          cwd=tmp_path)
    real = subprocess.run([sys.executable, *args], capture_output=True, text=True, timeout=30,
                          cwd=tmp_path)
    assert (ours.returncode, ours.stdout) == (real.returncode, real.stdout)


def test_a_plain_script_in_a_plugin_folder_runs_as_python(plugin_copy):
    folder = plugin_copy("compat")
    (folder / "hello.py").write_text("import sys\nprint('hello', sys.argv[1:])\n")
    cp = subprocess.run([EKL_PYTHON, "-u", "hello.py", "x"], capture_output=True, text=True,
                        cwd=folder, timeout=30)
    assert cp.returncode == 0 and cp.stdout == "hello ['x']\n"


def test_bad_ekl_section_is_one_line(plugin_copy):
    folder = plugin_copy("compat")
    jf = next(folder.glob("*.json"))
    d = json.loads(jf.read_text())
    d["ekl"] = {"restart": "sometimes"}
    jf.write_text(json.dumps(d))
    cp = subprocess.run([EKL_PYTHON, "-u", str(folder / "compat.py"), "{}"],
                        capture_output=True, text=True, cwd=folder, timeout=30)
    assert cp.returncode == 2
    assert "field 'ekl.restart' is 'sometimes'" in cp.stderr and "Traceback" not in cp.stderr


def test_relay_exits_when_ekuiper_goes_away(ekuiper, plugin_copy):
    inst = ekuiper.start(plugin_copy("compat"))
    plugin = real_plugin(inst)
    inst.control.close()  # eKuiper's control socket vanishes
    assert inst.process.popen.wait(10) == 0
    assert wait_for(lambda: is_gone(plugin.pid), timeout=3)
    inst.process = None  # already gone; nothing for the fixture to kill


def test_sigterm_stops_relay_and_plugin_cleanly(ekuiper, plugin_copy):
    inst = ekuiper.start(plugin_copy("compat"))
    plugin = real_plugin(inst)
    inst.process.popen.send_signal(signal.SIGTERM)
    assert inst.process.popen.wait(10) == 0
    assert is_gone(plugin.pid)


def test_environment_in_the_ekl_section_is_activated_without_conda_run(
        ekuiper, plugin_copy, bare_python):
    folder = plugin_copy("compat")
    jf = next(folder.glob("*.json"))
    d = json.loads(jf.read_text())
    d["ekl"] = {"virtualEnvType": "venv", "env": str(Path(bare_python).parent.parent)}
    jf.write_text(json.dumps(d))
    inst = ekuiper.start(folder)
    got = inst.start_function("where").exec([["VIRTUAL_ENV"]])
    assert got["executable"].startswith(str(Path(bare_python).parent.parent))
    assert got["env"]["VIRTUAL_ENV"] == str(Path(bare_python).parent.parent)


def test_ekl_python_dies_with_a_wrapper_that_ekuiper_kills(ipc_dir, plugin_copy, tmp_path):
    """eKuiper SIGKILLs `conda run`, not its child: ekl-python must not be orphaned."""
    folder = plugin_copy("compat")
    # A wrapper that stays the parent (like `conda run`): `; :` keeps sh from exec'ing.
    wrapper = ["/bin/sh", "-c", f'"{EKL_PYTHON}" -u "{folder / "compat.py"}" "{{}}"; :']
    e = dict(os.environ, EKL_STATUS_DIR=str(tmp_path))
    spec = LaunchSpec(folder.name, tuple(wrapper), str(folder), e)
    inst = eKuiper_instance(spec, ipc_dir)
    inst.start_process()
    try:
        relay = psutil.Process(inst.pid).children()[0]
        plugin = None
        assert wait_for(lambda: relay.children() and any(
            "compat.py" in " ".join(c.cmdline()) for c in relay.children()))
        plugin = [c for c in relay.children() if "compat.py" in " ".join(c.cmdline())][0]
        inst.process.popen.kill()  # eKuiper's stop, aimed at the wrapper
        inst.process.popen.wait()
        assert wait_for(lambda: is_gone(relay.pid) and is_gone(plugin.pid), timeout=3)
    finally:
        inst.close()
