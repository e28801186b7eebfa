"""``ekl-python`` under eKuiper's treatment, with a hostile plugin: a hung function is
restarted (call_timeout_s from the JSON's ``ekl`` section) and eKuiper's SIGKILL of
``ekl-python`` leaves no setsid child or double-forked daemon behind."""

from __future__ import annotations

import json
import threading

import pytest
from test_pythonbin import EKuiper, real_plugin

from conftest import wait_for
from ekl.launcher.errors import EklError
from ekl.launcher.process import is_gone


@pytest.fixture
def ekuiper(ipc_dir, tmp_path):
    k = EKuiper(ipc_dir, str(tmp_path / "status"))
    yield k
    k.close()


def with_ekl_section(folder, **section):
    j = next(folder.glob("*.json"))
    data = json.loads(j.read_text())
    data["ekl"] = section
    j.write_text(json.dumps(data))
    return folder


def test_a_hung_function_is_restarted_and_ekuiper_calls_work_again(ekuiper, plugin_copy):
    folder = with_ekl_section(plugin_copy("hostile"), call_timeout_s=1, health_interval_s=0.3)
    inst = ekuiper.start(folder)
    echo = inst.start_function("echo")
    hang = inst.start_function("hang")
    victim = real_plugin(inst)

    def call():
        try:
            hang.exec([1])
        except Exception:  # noqa: BLE001 - its timeout, or the socket closed at the end
            pass  # eKuiper's own recvTimeout; the relay restarts the plugin meanwhile

    threading.Thread(target=call, daemon=True).start()
    assert wait_for(lambda: is_gone(victim.pid), timeout=15)
    assert wait_for(lambda: real_plugin(inst).pid != victim.pid, timeout=15)
    assert wait_for(lambda: _echo(echo) == [5], timeout=15)  # replayed: eKuiper's calls work


def _echo(echo):
    try:
        return echo.exec([5])
    except EklError:
        return None


def test_ekuiper_sigkill_of_ekl_python_leaves_no_escaped_descendant(ekuiper, plugin_copy):
    folder = plugin_copy("hostile")
    (folder / "escape").touch()
    inst = ekuiper.start(folder)
    plugin = real_plugin(inst)
    f = folder / f"pids-{plugin.pid}.txt"
    assert wait_for(f.exists, timeout=10)
    pids = [int(x) for x in f.read_text().split()]
    tree = ekuiper.kill(inst)
    assert wait_for(lambda: all(is_gone(p) for p in tree + pids), timeout=3), pids
