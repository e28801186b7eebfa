"""``PluginInstance.spawn``: the process starts at once and ``start_process`` only waits.

``ekl-python`` spawns the plugin before it loads the relay's own parts, so these are the
rules it relies on: the spawned plugin is the one ``start_process`` (called later by the
watcher) adopts, and a spawned plugin nobody waited for is still killed by ``close``.
Real plugin processes over real sockets.
"""

from __future__ import annotations

import time

from ekl.launcher.process import is_gone
from ekuiper.protocol import FuncMeta


def test_spawn_then_start_process_adopts_the_same_process(host, plugin_copy):
    inst = host.start(plugin_copy("compat"), start=False)
    inst.spawn()
    inst.spawn()  # a second call while one waits does nothing
    assert inst.process is None  # not running until its handshake was seen
    t0 = time.monotonic()
    inst.start_process()
    assert time.monotonic() - t0 < 10
    pid = inst.pid
    assert pid is not None and inst.alive()
    fn = inst.start_function("echo")
    assert fn.exec(["abc"], FuncMeta("r", "op", 0, 0))["args"] == ["abc"]
    assert inst.pid == pid


def test_a_spawned_plugin_nobody_waited_for_is_killed_by_close(host, plugin_copy):
    inst = host.start(plugin_copy("compat"), start=False)
    inst.spawn()
    assert inst._spawned is not None
    proc = inst._spawned[0]
    pid = proc.pid
    assert pid is not None
    assert not inst.close()  # no survivors
    assert is_gone(pid)
    assert inst._spawned is None
