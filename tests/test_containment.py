"""Containment: no process a plugin started survives its death (crash, stop, restart,
launcher SIGKILL, launcher SIGKILL after the watchdog was killed), and none pile up.

The hostile plugin starts a ``setsid`` child and a double-forked daemon (which leave the
process group and the process tree); everything here is real processes and signals.
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

from conftest import wait_for
from ekl.launcher.process import containment, is_gone
from ekl.launcher.settings import SupervisorSettings
from ekl.launcher.supervise.states import State
from ekl.launcher.supervise.watcher import Watcher

FAST = dict(backoff_initial_s=0.05, backoff_max_s=0.5, health_interval_s=0.3,
            probe_timeout_s=1.0, startsecs=0.5)


def escapees(folder: Path, plugin_pid: int) -> list:
    f = folder / f"pids-{plugin_pid}.txt"
    assert wait_for(f.exists, timeout=10), f"{f} not written"
    return [int(x) for x in f.read_text().split()]


def all_escapees(folder: Path) -> list:
    return [int(x) for f in folder.glob("pids-*.txt") for x in f.read_text().split()]


def leaves_group_and_tree(plugin_pid: int, pids: list) -> None:
    """The escapees really escaped: other session, not in the plugin's tree."""
    tree = {c.pid for c in psutil.Process(plugin_pid).children(recursive=True)}
    child, daemon = pids
    assert os.getsid(child) != os.getsid(plugin_pid)
    assert os.getsid(daemon) != os.getsid(plugin_pid) and daemon not in tree


def test_mode_is_detected_and_reported(host, plugin_copy):
    assert containment.mode() == ("subreaper" if sys.platform == "linux" else "token")
    assert isinstance(containment.cgroup_v2_writable(), bool)  # detected, not used yet
    inst = host.start(plugin_copy("hostile"), start=False)
    w = Watcher(inst, SupervisorSettings(**FAST))
    w.start(fail_fast=True)
    try:
        assert w.status()["containment"] == containment.mode()
    finally:
        w.stop()


def test_stop_kills_setsid_child_and_double_forked_daemon(host, plugin_copy):
    folder = plugin_copy("hostile")
    (folder / "escape").touch()
    inst = host.start(folder, start=False)
    w = Watcher(inst, SupervisorSettings(**FAST))
    w.start(fail_fast=True)
    pids = escapees(folder, inst.pid)
    leaves_group_and_tree(inst.pid, pids)
    assert w.stop() == []
    assert wait_for(lambda: all(is_gone(p) for p in pids), timeout=3), pids


def test_three_crash_restarts_leave_nothing_behind(host, plugin_copy):
    folder = plugin_copy("hostile")
    (folder / "escape").touch()
    inst = host.start(folder, start=False)
    w = Watcher(inst, SupervisorSettings(**FAST))
    w.start(fail_fast=True)
    try:
        for _ in range(3):
            old = inst.pid
            current = escapees(folder, old)
            os.kill(old, signal.SIGKILL)
            assert wait_for(lambda o=old: w.state == State.RUNNING
                            and inst.pid not in (None, o), timeout=15)
            assert wait_for(lambda c=current: all(is_gone(p) for p in c), timeout=3), current
        live = escapees(folder, inst.pid)
        old = [p for p in all_escapees(folder) if p not in live]
        assert len(old) == 6 and all(is_gone(p) for p in old)  # no pile-up
        assert w.restart_count == 3
    finally:
        w.stop()
    assert wait_for(lambda: all(is_gone(p) for p in all_escapees(folder)), timeout=3)


def test_daemon_started_by_a_call_dies_with_the_plugin(host, plugin_copy):
    inst = host.start(plugin_copy("hostile"))
    pids = inst.start_function("spawn").exec([])
    assert all(not is_gone(p) for p in pids)
    assert inst.close() == []
    assert wait_for(lambda: all(is_gone(p) for p in pids), timeout=3)


def describe(pids):
    """What the survivors are, for the failure message."""
    out = []
    for pid in pids:
        try:
            p = psutil.Process(pid)
            out.append((pid, p.status(), p.ppid(), " ".join(p.cmdline())[:120],
                        p.environ().get(containment.TOKEN_ENV)))
        except psutil.Error as e:
            out.append((pid, type(e).__name__))
    return out


def ekl(*args):
    return [sys.executable, "-m", "ekl.launcher.cli", *args]


def read_status(path):
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError):
        return None


@pytest.mark.parametrize("kill_watchdog_first", [False, True])
def test_launcher_sigkill_leaves_no_descendant(plugin_copy, tmp_path, kill_watchdog_first):
    folder = plugin_copy("hostile")
    (folder / "escape").touch()
    status = tmp_path / "status.json"
    proc = subprocess.Popen(ekl("supervise", str(folder), "--status-file", str(status),
                                "--health-interval", "0.2"),
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    try:
        assert wait_for(lambda: (s := read_status(status)) and s["plugins"] and s["plugins"][0]["state"]
                        == "RUNNING", timeout=20), proc.poll()
        plugin_pid = read_status(status)["plugins"][0]["pid"]
        ipc = read_status(status)["plugins"][0]["ipc_dir"]
        if not kill_watchdog_first:  # the mode is on the table's last line
            table = subprocess.run(ekl("status", "--status-file", str(status)),
                                   capture_output=True, text=True, timeout=30)
            assert f"containment: {containment.mode()})" in table.stdout, table.stdout
        pids = escapees(folder, plugin_pid)
        if kill_watchdog_first:
            def watchdogs():
                out = []
                for c in psutil.Process(proc.pid).children():
                    try:
                        if c.status() != psutil.STATUS_ZOMBIE and any(
                                "watchdog.py" in a for a in c.cmdline()):
                            out.append(c)
                    except psutil.Error:
                        pass
                return out
            assert wait_for(lambda: len(watchdogs()) == 1, timeout=5)
            first = watchdogs()[0].pid
            os.kill(first, signal.SIGKILL)
            # the next health check respawns it with the whole registry
            assert wait_for(lambda: [w.pid for w in watchdogs()] not in ([], [first]),
                            timeout=5)
        proc.kill()
        proc.wait()
        assert wait_for(lambda: all(is_gone(p) for p in [plugin_pid, *pids]), timeout=3), \
            describe([p for p in [plugin_pid, *pids] if not is_gone(p)])
        assert wait_for(lambda: not os.path.exists(ipc), timeout=2)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
        for p in all_escapees(folder):
            try:
                os.kill(p, signal.SIGKILL)
            except OSError:
                pass


def test_unregistering_from_a_dead_watchdog_does_not_spawn_one():
    """During a shutdown an outer launcher may have ended the watchdog already; forgetting
    a stopped plugin must not start a new one (it would be SIGKILLed mid-cleanup by that
    launcher, which found it by its containment token). The next registration does."""
    from ekl.launcher.process.lifeline import Lifeline

    life = Lifeline()
    try:
        life.register(999999, "a" * 32)
        first = life.watchdog_pid
        assert first is not None
        os.kill(first, signal.SIGKILL)
        assert wait_for(lambda: life._proc is not None and life._proc.poll() is not None)
        life.unregister(999999, "a" * 32)
        assert life._proc is not None and life._proc.pid == first  # none spawned
        life.remove_on_death("/tmp/ekl-never-made-by-this-test")
        assert life.watchdog_pid not in (None, first)  # a registration respawns it
    finally:
        life.close()


def test_a_respawned_watchdog_knows_the_registry_from_its_first_instant():
    """The registry goes in the new watchdog's argv, not down its pipe after the spawn: a
    launcher SIGKILLed in between left a watchdog that knew nothing, and the plugin's
    escaped daemons outlived everything (3 of 14 runs of the test above under CPU load)."""
    from ekl.launcher.process.lifeline import Lifeline

    life = Lifeline()
    try:
        life.register(999998, "b" * 32)
        life.remove_on_death("/tmp/ekl-registry-test-never-made")
        first = life.watchdog_pid
        assert first is not None
        os.kill(first, signal.SIGKILL)
        assert wait_for(lambda: life._proc is not None and life._proc.poll() is not None)
        life.ensure()
        assert life.watchdog_pid not in (None, first)
        argv = psutil.Process(life.watchdog_pid).cmdline()
        assert {"+999998", "+=" + "b" * 32, "+/tmp/ekl-registry-test-never-made"} <= set(argv)
    finally:
        life.close()


# --- the parked watchdog (early.watchdog_argv) ------------------------------------------


def _parked(pid: int) -> bool:
    """Still the shell: the watchdog's Python has not started."""
    from ekl.launcher import early

    return psutil.Process(pid).cmdline()[:1] == [early.PARK_SHELL]


needs_park_shell = pytest.mark.skipif(not os.access("/bin/sh", os.X_OK), reason="no /bin/sh")


@needs_park_shell
@pytest.mark.parametrize("how", ["eof", "sigterm", "woken-then-eof"])
def test_a_parked_watchdog_cleans_up_however_its_wait_ends(tmp_path, how):
    """A watchdog waits in a shell until the first line or EOF (its Python's start, 8 ms of
    CPU, no longer competes with a plugin's boot). Whatever ends the wait, the registry in
    its argv is honoured: EOF (the launcher died) and SIGTERM while parked (an outer
    launcher stopping this tree, pipe still open) both kill the group and remove the
    folder; after a wake-up line, the lines behind it reach the Python (none swallowed
    by the shell): an unregistered group survives the EOF."""
    from ekl.launcher import early

    victim = subprocess.Popen(["sleep", "60"], start_new_session=True)
    spare = tmp_path / "spare"
    spare.mkdir()
    (spare / "socket-file").touch()
    r, w = os.pipe()
    dog = subprocess.Popen(early.watchdog_argv([f"+{victim.pid}", f"+{spare}"]), stdin=r,
                           stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                           start_new_session=True)
    os.close(r)
    try:
        time.sleep(0.2)
        assert _parked(dog.pid)
        if how == "sigterm":
            dog.send_signal(signal.SIGTERM)
        elif how == "woken-then-eof":
            os.write(w, f"\n-{victim.pid}\n".encode())
            assert wait_for(lambda: not _parked(dog.pid), timeout=10)
            time.sleep(0.2)  # the Python reads the line behind the wake-up
        if how != "sigterm":
            os.close(w)
            w = -1
        assert dog.wait(timeout=10) == 0
        if how == "woken-then-eof":
            assert victim.poll() is None, "a line behind the wake-up line was lost"
        else:
            assert victim.wait(timeout=5) is not None
        assert not spare.exists()
    finally:
        if w >= 0:
            os.close(w)
        for p in (victim, dog):
            if p.poll() is None:
                p.kill()
                p.wait()


@needs_park_shell
def test_a_lifeline_wakes_its_watchdog_only_for_a_change():
    """What the watchdog holds already (in its argv: the registry it was spawned with, or
    an adopted early start's) is not written again: a write would wake it during the very
    start it is parked for. A new entry wakes it, and it stays the same watchdog."""
    from ekl.launcher.process.lifeline import Lifeline

    life = Lifeline()
    try:
        life.register(999996, "d" * 32)  # spawns it with both in its argv: nothing written
        pid = life.watchdog_pid
        assert pid is not None
        life.register(999996, "d" * 32)  # held already
        time.sleep(0.2)
        assert _parked(pid)
        life.remove_on_death("/tmp/ekl-parked-test-never-made")
        assert wait_for(lambda: not _parked(pid), timeout=10)
        assert life.watchdog_pid == pid
    finally:
        life.close()


# --- private folders: registered with the watchdog before they exist --------------------

FOLDER_THEN_SIGKILL = """
import os, signal, sys
from ekl.launcher.process.lifeline import shared
if sys.argv[1] == "control":
    from ekl.launcher.supervise.control import ControlServer
    folder = ControlServer(lambda: [], lambda *a: (True, "", None)).folder
else:
    from ekl.launcher.host.ipc import private_ipc_dir
    folder = private_ipc_dir(shared())
print(folder, flush=True)
os.kill(os.getpid(), signal.SIGKILL)  # the instant after the folder exists
"""


@pytest.mark.parametrize("kind", ["control", "ipc"])
def test_a_launcher_killed_the_instant_its_folder_exists_leaves_none(kind):
    """The launcher's private folders (the ``ekl operate`` socket's, a plugin's socket
    folder) are given to the watchdog before ``mkdir``: a SIGKILL right after they exist
    (here the process kills itself then) leaves nothing in /tmp. They were registered just
    after ``mkdir``, and two empty ``/tmp/ekl-ctl-*`` folders were found after a CI run."""
    out = subprocess.run([sys.executable, "-c", FOLDER_THEN_SIGKILL, kind], capture_output=True,
                         text=True, timeout=30)
    assert out.returncode == -signal.SIGKILL, out.stderr
    folder = out.stdout.strip()
    assert folder.startswith("/tmp/ekl-")
    assert wait_for(lambda: not os.path.exists(folder), timeout=10), folder


def test_a_taken_folder_name_is_withdrawn_from_the_watchdog(tmp_path, monkeypatch):
    """A random name that is taken (``mkdir`` fails) was registered already: it is
    withdrawn before the next name is tried, so the watchdog never removes a folder that is
    not this launcher's."""
    from ekl.launcher import early
    from ekl.launcher.process.lifeline import Lifeline

    taken = "/tmp/ekl-taken-" + "00" * 5
    os.makedirs(taken, exist_ok=True)
    names = iter([bytes(5), bytes([1]) * 5])
    monkeypatch.setattr(early.os, "urandom", lambda n: next(names))
    life = Lifeline()
    try:
        d = life.private_dir("ekl-taken-")
        assert d == "/tmp/ekl-taken-" + "01" * 5
        assert taken not in life._paths and d in life._paths
    finally:
        life.close()  # the watchdog removes what is registered: ``d``, not ``taken``
        assert os.path.isdir(taken)
        os.rmdir(taken)
        assert wait_for(lambda: not os.path.exists(d), timeout=10)
