"""Supervision with real processes and signals: crashes, hangs, memory, trees, replays."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time

import psutil
import pytest

from conftest import short_id, wait_for
from ekl.launcher.errors import CommandError, EklError, HostTimeout, PluginExited, PluginStartError
from ekl.launcher.process import is_gone
from ekl.launcher.supervise.states import State
from ekuiper.protocol import Meta
from ekuiper.record import replace

FAST = dict(backoff_initial_s=0.1, backoff_factor=2.0, backoff_max_s=1.0,
            health_interval_s=0.3, probe_timeout_s=1.0, startsecs=1.0)


def watch(host, folder, fail_fast=True, **kw):
    return host.watch(folder, {**FAST, **kw}, fail_fast, init_timeout_s=10)



def wait_restarted(w, old_pid, timeout=10.0):
    return wait_for(lambda: w.state == State.RUNNING and w.instance.pid not in (None, old_pid),
                    timeout)


def test_sigkill_restarts_and_replays_so_source_data_flows_again(host, plugin_copy):
    w, inst = watch(host, plugin_copy("compat"))
    m = Meta(f"r{short_id()}", "op", 0)
    stream = inst.start_source("counter", m, "ds", {"interval": 0.005})
    echo = inst.start_function("echo")
    assert stream.recv(5).message["ds"] == "ds"
    old = inst.pid
    os.kill(old, signal.SIGKILL)
    assert wait_restarted(w, old)
    stream.drain()
    assert stream.recv(5).message["ds"] == "ds"  # the source came back without being asked
    assert echo.exec([1])["args"] == [1]          # and so did the function
    rec = w.restarts[-1]
    assert "SIGKILL" in rec.reason
    assert {r["symbol"] for r in rec.replay if r["ok"]} == {"counter", "echo"}
    st = w.status()
    assert st["restarts"] == 1 and st["state"] == "RUNNING" and st["pid"] == inst.pid
    assert st["refCount"] == {m.rule_id: 1}


@pytest.mark.any_transport  # crashloop exits before dialing
def test_crash_loop_becomes_fatal_after_the_start_limit(host, plugin_copy):
    w, inst = watch(host, plugin_copy("crashloop"), fail_fast=False, start_limit=3,
                    start_limit_window_s=60)
    assert wait_for(lambda: w.state == State.FATAL, timeout=15)
    assert "start limit" in w.fatal_reason
    assert "could not connect to db:5432" in w.last_exit  # its last stderr line, quoted
    n = len(w._starts)
    time.sleep(0.5)
    assert w.state == State.FATAL and len(w._starts) == n  # not retried


def test_first_start_failure_reports_exit_code_and_stderr(host, plugin_copy):
    inst = host.start(plugin_copy("crashloop"), start=False)
    with pytest.raises(PluginStartError) as e:
        inst.start_process()
    assert "exited with code 3 before its handshake" in str(e.value)
    assert "connection refused" in str(e.value)


def test_sigstopped_plugin_is_detected_as_hung_and_restarted(host, plugin_copy):
    w, inst = watch(host, plugin_copy("compat"))
    old = inst.pid
    os.kill(old, signal.SIGSTOP)
    assert wait_restarted(w, old)
    assert "SIGSTOP" in w.restarts[-1].reason
    assert is_gone(old)


def test_blocked_control_thread_fails_the_ping_and_is_restarted(host, plugin_copy):
    w, inst = watch(host, plugin_copy("compat"))
    inst.settings = replace(inst.settings, command_timeout_s=1.0)
    old = inst.pid
    with pytest.raises(HostTimeout):
        inst.start_source("stuck", Meta(f"r{short_id()}", "op", 0))  # configure never returns
    assert wait_restarted(w, old)
    assert w.restarts[-1].reason.startswith("hung: no answer to ping")


def test_memory_hog_is_restarted_after_staying_over_max_rss(host, plugin_copy):
    w, inst = watch(host, plugin_copy("compat"), max_rss_mb=150, rss_strikes=2)
    old = inst.pid
    grow = inst.start_function("grow")
    try:
        grow.exec([200])
    except EklError:
        pass  # sampling near the limit may restart the plugin before grow answers
    assert wait_restarted(w, old, timeout=15)
    assert w.restarts[-1].reason.startswith("memory: rss")
    assert "max_rss 150 MB" in w.restarts[-1].reason


def test_stop_kills_children_and_grandchildren_that_ignore_sigterm(host, plugin_copy):
    w, inst = watch(host, plugin_copy("grandchild"))
    pid, child = inst.start_function("pids").exec([])
    tree = [pid, child] + [p.pid for p in psutil.Process(child).children(recursive=True)]
    assert len(tree) == 3
    inst.settings = replace(inst.settings, stop_timeout_s=1.0)
    assert w.stop() == []
    assert wait_for(lambda: all(is_gone(p) for p in tree), timeout=3)
    assert w.state == State.STOPPED


def test_on_failure_policy_leaves_a_clean_exit_alone(host, plugin_copy):
    w, inst = watch(host, plugin_copy("compat"), restart="on-failure")
    inst.start_function("echo")
    die = inst.start_function("die")
    with pytest.raises(PluginExited):
        die.exec([0])
    assert wait_for(lambda: w.state == State.EXITED)
    assert w.last_exit == "exited with code 0" and w.restarts == []


def test_never_policy_does_not_restart_a_crash(host, plugin_copy):
    w, inst = watch(host, plugin_copy("compat"), restart="never")
    os.kill(inst.pid, signal.SIGKILL)
    assert wait_for(lambda: w.state == State.EXITED)
    assert "SIGKILL" in w.last_exit


def test_backoff_grows_then_resets_after_startsecs(host, plugin_copy):
    w, inst = watch(host, plugin_copy("compat"), startsecs=0.5, backoff_initial_s=0.05)
    for expected in (1, 2):
        old = inst.pid
        os.kill(old, signal.SIGKILL)
        assert wait_restarted(w, old)
        assert w.consecutive_failures == expected
    assert w.backoff_delay() == pytest.approx(0.05 * 2)
    assert wait_for(lambda: w.consecutive_failures == 0, timeout=5)


def test_replay_result_is_recorded_when_a_symbol_cannot_come_back(host, plugin_copy, tmp_path):
    w, inst = watch(host, plugin_copy("compat"))
    m = Meta(f"r{short_id()}", "op", 0)
    inst.start_source("counter", m, "", {"interval": 0.01})
    # The restarted plugin refuses the replayed start: tamper with the journalled config.
    ctrl, _ = inst.journal.entries()[0]
    inst.journal.record_start(type(ctrl)(ctrl.symbol_name, ctrl.plugin_type, ctrl.meta, "",
                                         {"refuse": True}))
    old = inst.pid
    os.kill(old, signal.SIGKILL)
    assert wait_restarted(w, old)
    assert wait_for(lambda: w.restarts[-1].replay, timeout=5)
    r = w.restarts[-1].replay[0]
    assert r["ok"] is False and "refused by configure" in r["error"]


# --- the launcher process itself --------------------------------------------------------


def ekl(*args, **kw):
    return [sys.executable, "-m", "ekl.launcher.cli", *args]


def read_status(path):
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError):
        return None


def test_launcher_sigkilled_takes_its_plugins_down_within_2s(plugin_copy, tmp_path):
    status = tmp_path / "status.json"
    a, b = plugin_copy("grandchild"), plugin_copy("compat")
    proc = subprocess.Popen(ekl("supervise", str(a), str(b), "--status-file", str(status),
                                "--health-interval", "0.3"),
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    try:
        assert wait_for(lambda: (s := read_status(status)) and all(
            p["state"] == "RUNNING" for p in s["plugins"]) and len(s["plugins"]) == 2,
            timeout=20), proc.stderr and proc.poll()
        pids = [p["pid"] for p in read_status(status)["plugins"]]
        tree = []
        for pid in pids:
            tree += [pid] + [c.pid for c in psutil.Process(pid).children(recursive=True)]
        assert len(tree) >= 4
        dirs = [p["ipc_dir"] for p in read_status(status)["plugins"]]
        assert all(os.path.isdir(d) for d in dirs)
        proc.kill()
        proc.wait()
        t0 = time.monotonic()
        assert wait_for(lambda: all(is_gone(p) for p in tree), timeout=3)
        assert time.monotonic() - t0 < 2.0
        # and the private socket folders the dead launcher could not remove are gone too
        assert wait_for(lambda: not any(os.path.exists(d) for d in dirs), timeout=2)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()


def test_supervise_runs_many_plugins_writes_status_and_stops_all_on_sigterm(plugin_copy, tmp_path):
    status = tmp_path / "status.json"
    folders = [plugin_copy("compat"), plugin_copy("pysam", "pysam")]
    proc = subprocess.Popen(ekl("supervise", *map(str, folders), "--status-file", str(status),
                                "--health-interval", "0.3"),
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    try:
        assert wait_for(lambda: (s := read_status(status)) and len(s["plugins"]) == 2 and all(
            p["state"] == "RUNNING" and p["rss"] > 0 for p in s["plugins"]), timeout=20)
        s = read_status(status)
        p0 = s["plugins"][0]
        for key in ("name", "state", "pid", "started_at", "uptime", "restarts", "last_exit",
                    "rss", "cpu_percent", "threads", "open_files", "symbols", "refCount",
                    "interpreter", "environment"):
            assert key in p0
        table = subprocess.run(ekl("status", "--status-file", str(status)), capture_output=True,
                               text=True, timeout=20)
        assert table.returncode == 0 and "RUNNING" in table.stdout and "NAME" in table.stdout
        victim = s["plugins"][1]["pid"]
        os.kill(victim, signal.SIGKILL)
        assert wait_for(lambda: (s2 := read_status(status)) and s2["plugins"][1]["restarts"] == 1
                        and s2["plugins"][1]["state"] == "RUNNING", timeout=10)
        pids = [p["pid"] for p in read_status(status)["plugins"]]
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(15) == 0
        assert all(is_gone(p) for p in pids)
        assert all(p["state"] == "STOPPED" for p in read_status(status)["plugins"])
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()


def test_ekl_run_survives_a_plugin_crash_and_reaches_its_count(tmp_path, plugin_copy):
    folder = plugin_copy("pysam", "pysam")
    err_path = tmp_path / "stderr.txt"
    # stderr to a file and stdout read through one reader: communicate() after readline()
    # would read the pipe past the lines readline() had already buffered, losing them
    with open(err_path, "w") as err_file:
        proc = subprocess.Popen(ekl("run", str(folder), "--count", "25", "--config",
                                    '{"interval": 0.02}'),
                                stdout=subprocess.PIPE, stderr=err_file, text=True)
    try:
        first = proc.stdout.readline()
        assert json.loads(first)["revert"] == "nosjyp"
        kids = [c for c in psutil.Process(proc.pid).children()
                if any("pysam.py" in a for a in c.cmdline())]
        assert len(kids) == 1
        kids[0].kill()
        out = proc.stdout.read()  # to EOF: ekl exits once it printed its count
        proc.wait(timeout=60)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
        proc.stdout.close()
    err = err_path.read_text()
    records = [json.loads(x) for x in [first] + out.splitlines()]
    assert proc.returncode == 0, err
    assert len(records) == 25
    assert "killed by SIGKILL" in err and "replayed" in err


def test_command_to_a_dead_plugin_names_the_exit(host, plugin_copy):
    inst = host.start(plugin_copy("compat"))
    die = inst.start_function("die")
    with pytest.raises(PluginExited, match="died during Exec"):
        die.exec([7])
    with pytest.raises(CommandError, match="exited with code 7"):
        inst.start_function("echo")


def test_sink_socket_of_a_killed_official_plugin_is_removed(host, plugin_copy, official_python):
    """The official SDK listens in /tmp and cannot unlink its socket when it is killed."""
    inst = host.start(plugin_copy("compat"), python=official_python)
    m = Meta(f"r{short_id()}", "sink", 0)
    writer = inst.start_sink("collector", m, {})
    path = writer.url[len("ipc://"):]
    assert path.startswith("/tmp/") and os.path.exists(path)
    os.kill(inst.pid, signal.SIGKILL)
    inst.close()
    assert not os.path.exists(path)


# --- supervision never stops silently (issue 11) -----------------------------------------


@pytest.mark.any_transport  # the launcher's status writers race
def test_twenty_plugins_sigkilled_at_once_all_restart_and_status_never_lies(plugin_copy,
                                                                            tmp_path):
    """The status-file race: one writer per file, so no watcher dies and none is lost."""
    status = tmp_path / "status.json"
    folders = [plugin_copy("compat") for _ in range(20)]
    proc = subprocess.Popen(ekl("supervise", *map(str, folders), "--status-file", str(status),
                                "--health-interval", "0.5", "--start-limit", "10"),
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)

    def all_running(restarts):
        s = read_status(status)
        return s and len(s["plugins"]) == 20 and all(
            p["state"] == "RUNNING" and p["restarts"] == restarts for p in s["plugins"])

    try:
        for rnd in (1, 2):  # a second round proves every watcher survived the first
            assert wait_for(lambda r=rnd: all_running(r - 1), timeout=90), proc.poll()
            pids = [p["pid"] for p in read_status(status)["plugins"]]
            killed_at = time.time()
            for pid in pids:
                os.kill(pid, signal.SIGKILL)
            lies = []
            end = time.monotonic() + 90
            while time.monotonic() < end and not all_running(rnd):
                s = read_status(status)
                if s and s["written_at"] > killed_at + 0.2:
                    lies += [p for p in s["plugins"]
                             if p["state"] == "RUNNING" and p["pid"] in pids]
                time.sleep(0.02)
            assert all_running(rnd), read_status(status)
            assert not lies, lies[:2]
            assert all(is_gone(p) for p in pids)
        s = read_status(status)
        assert all(p["internal_errors"] == 0 for p in s["plugins"])
        assert proc.poll() is None
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(30) == 0
        assert all(p["state"] == "STOPPED" for p in read_status(status)["plugins"])
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()


def test_an_exception_in_the_watcher_loop_restarts_the_plugin_and_supervision_goes_on(
        host, plugin_copy, caplog):
    w, inst = watch(host, plugin_copy("compat"))
    old = inst.pid
    real = w._check
    calls = []

    def broken():
        calls.append(1)
        if len(calls) == 1:
            raise KeyError("injected")
        return real()

    w._check = broken
    with caplog.at_level("ERROR", logger="ekl"):
        assert wait_restarted(w, old)
    assert w.internal_errors == 1 and w.restart_count == 1
    assert w.restarts[-1].reason == "supervisor error: KeyError: 'injected'"
    assert any(r.exc_info and "injected" in r.getMessage() for r in caplog.records)
    assert w._thread.is_alive()
    # and it still supervises: a crash afterwards is restarted too
    old = inst.pid
    os.kill(old, signal.SIGKILL)
    assert wait_restarted(w, old)
    assert w.restart_count == 2 and w.status()["restarts"] == 2


@pytest.mark.any_transport  # crashloop exits before dialing
def test_restarts_before_the_handshake_are_counted(host, plugin_copy):
    w, inst = watch(host, plugin_copy("crashloop"), fail_fast=False, start_limit=3,
                    start_limit_window_s=60)
    assert wait_for(lambda: w.state == State.FATAL, timeout=15)
    assert len(w._starts) == 3 and w.status()["restarts"] == 2
    assert w.restarts[-1].reason.startswith("start failed: plugin")


def test_a_killed_watchdog_is_respawned_at_the_next_health_check(host, plugin_copy):
    w, inst = watch(host, plugin_copy("compat"))
    lifeline = inst.lifeline
    first = lifeline.watchdog_pid
    os.kill(first, signal.SIGKILL)
    assert wait_for(lambda: lifeline.watchdog_pid not in (None, first)
                    and psutil.pid_exists(lifeline.watchdog_pid), timeout=5)
