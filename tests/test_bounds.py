"""Bounded resources: plugin output lines cut at 64 KiB (never buffered whole), error texts
in the status capped at 4 KiB, and a plugin growing 100 MB/s restarted before it doubles
--max-rss. Real plugins; RSS read with psutil from the real processes."""

from __future__ import annotations

import json
import logging
import re
import subprocess
import sys
import threading
import time

import psutil
import pytest

from conftest import wait_for
from ekl.launcher.process import CUT_MARKER, cap_text
from ekl.launcher.settings import ERROR_TEXT_MAX_CHARS, OUTPUT_LINE_MAX_BYTES, SupervisorSettings
from ekl.launcher.supervise.states import State
from ekl.launcher.supervise.watcher import Watcher

FAST = dict(backoff_initial_s=0.05, backoff_max_s=0.5, health_interval_s=0.5,
            probe_timeout_s=1.0, startsecs=0.5)


class Peak:
    """Samples a process's RSS every 20 ms in a thread; ``peak`` in bytes."""

    def __init__(self, pid):
        self.p = psutil.Process(pid)
        self.peak = 0
        self._stop = threading.Event()
        self._t = threading.Thread(target=self._run, daemon=True)
        self._t.start()

    def _run(self):
        while not self._stop.wait(0.02):
            try:
                self.peak = max(self.peak, self.p.memory_info().rss)
            except psutil.Error:
                return

    def stop(self):
        self._stop.set()
        self._t.join()
        return self.peak


@pytest.mark.parametrize("stream", ["stdout", "stderr"])
def test_a_100_mb_line_is_cut_and_never_held_whole(plugin_copy, stream):
    proc = subprocess.Popen([sys.executable, "-m", "ekl.launcher.cli", "call",
                             str(plugin_copy("hostile")), "bigline", "100", f'"{stream}"'],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    peak = Peak(proc.pid)
    out, err = proc.communicate(timeout=120)
    rss = peak.stop()
    assert proc.returncode == 0, err[-500:]
    assert json.loads(out) == 100
    cut = [ln for ln in err.splitlines() if b"[ekl: line cut at" in ln]
    assert len(cut) == 1
    assert len(cut[0]) < OUTPUT_LINE_MAX_BYTES + 200
    marker = CUT_MARKER.format(limit=OUTPUT_LINE_MAX_BYTES,
                               skipped=100 * 1024 * 1024 - OUTPUT_LINE_MAX_BYTES + 1)
    assert cut[0].endswith(marker.encode())
    assert rss < 100 * 1024 * 1024  # the launcher never held the 100 MB line


def test_cap_text():
    assert cap_text("abc") == "abc" and cap_text(None) is None
    long = cap_text("x" * 10_000)
    assert len(long) == ERROR_TEXT_MAX_CHARS and long.endswith("[ekl: text cut]")


def test_a_loud_crash_before_the_handshake_keeps_the_status_small(host, plugin_copy, caplog):
    folder = plugin_copy("hostile")
    (folder / "crashloud").touch()
    inst = host.start(folder, start=False)
    w = Watcher(inst, SupervisorSettings(**FAST, start_limit=2))
    caplog.set_level(logging.CRITICAL, logger="ekl")  # the 64 KiB lines, not the test's
    w.start(fail_fast=False)
    try:
        assert wait_for(lambda: w.state == State.FATAL, timeout=30)
        st = w.status()
        assert len(st["last_exit"]) <= ERROR_TEXT_MAX_CHARS
        assert len(st["fatal_reason"]) <= ERROR_TEXT_MAX_CHARS
        assert all(len(r["reason"]) <= ERROR_TEXT_MAX_CHARS for r in st["last_restarts"])
        assert len(json.dumps(st)) < 4 * ERROR_TEXT_MAX_CHARS * 2
        assert st["restarts"] == 1  # two starts: one restart, both before the handshake
    finally:
        w.stop()


def test_a_plugin_growing_100_mb_per_s_is_restarted_before_it_doubles_max_rss(host,
                                                                              plugin_copy):
    inst = host.start(plugin_copy("hostile"), start=False)
    # a health check every 2 s as by default: the fast sampling near the limit does the work
    w = Watcher(inst, SupervisorSettings(**{**FAST, "health_interval_s": 2.0},
                                         max_rss_mb=150))
    w.start(fail_fast=True)
    try:
        old = inst.pid
        t0 = time.monotonic()
        inst.start_function("grow").exec([10])  # 10 MB every 0.1 s
        assert wait_for(lambda: w.restart_count >= 1 and inst.pid != old, timeout=30)
        reason = w.restarts[0].reason
        m = re.match(r"memory: rss (\d+) MB above max_rss 150 MB", reason)
        assert m, reason
        assert int(m.group(1)) < 300
        assert time.monotonic() - t0 < 20
    finally:
        w.stop()


def test_the_last_words_of_a_process_that_dies_at_once_are_in_its_tail(tmp_path):
    """One thread is started per process; it starts the two output readers itself (a
    ``Thread.start`` on the start path costs up to 1.5 ms while a plugin boots). A process
    may exit before that thread has started them: ``tail`` (the line error messages quote)
    waits for the readers to exist, then to finish, so the last line is never lost."""
    from ekl.launcher.process import LaunchSpec, PluginProcess

    for i in range(20):
        argv = ("/bin/sh", "-c", f"echo last words {i} >&2; exit 3")
        proc = PluginProcess(LaunchSpec("quick", argv, str(tmp_path), {}))
        proc.start()
        deadline = time.monotonic() + 10
        while proc.alive() and time.monotonic() < deadline:
            pass  # as a handshake wait sees the death: by poll, before ``exited`` is set
        assert proc.tail() == f"last words {i}"
        assert proc.exit_description() == "exited with code 3"
