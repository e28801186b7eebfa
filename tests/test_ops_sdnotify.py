"""ekl.launcher.ops.sdnotify: the test plays systemd with a real AF_UNIX datagram socket."""

from __future__ import annotations

import logging
import os
import socket
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from typing import Iterator, List, Tuple

import pytest

from conftest import wait_for
from ekl.launcher.ops import sdnotify


class FakeSystemd:
    """What systemd does for Type=notify: a datagram socket the service writes to."""

    def __init__(self, abstract: bool = False) -> None:
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        if abstract:
            name = f"ekl-test-notify-{uuid.uuid4().hex}"
            self.sock.bind("\0" + name)
            self.env_value = "@" + name
            self.dir = None
        else:
            self.dir = tempfile.mkdtemp(prefix="eklsd-", dir="/tmp")
            self.env_value = os.path.join(self.dir, "notify")
            self.sock.bind(self.env_value)
        self.sock.settimeout(0.05)
        self.messages: List[str] = []

    def drain(self, wait: float = 0.0) -> List[str]:
        end = time.monotonic() + wait
        while True:
            try:
                self.messages.append(self.sock.recv(65536).decode())
            except socket.timeout:
                if time.monotonic() >= end:
                    return self.messages

    def close(self) -> None:
        self.sock.close()
        if self.dir:
            try:
                os.unlink(self.env_value)
            except FileNotFoundError:
                pass
            os.rmdir(self.dir)


@pytest.fixture
def systemd() -> Iterator[FakeSystemd]:
    sd = FakeSystemd()
    yield sd
    sd.close()


@pytest.fixture(params=["path", "abstract"])
def any_systemd(request) -> Iterator[FakeSystemd]:
    """A socket path, or Linux's abstract namespace (NOTIFY_SOCKET=@name)."""
    sd = FakeSystemd(abstract=request.param == "abstract")
    yield sd
    sd.close()


def test_ready_status_stopping_reach_systemd_and_the_env_is_not_inherited(any_systemd):
    systemd = any_systemd
    env = {"NOTIFY_SOCKET": systemd.env_value, "WATCHDOG_USEC": "4000000",
           "WATCHDOG_PID": str(os.getpid()), "PATH": "/bin"}
    n = sdnotify.Notifier.from_environ(env)
    assert env == {"PATH": "/bin"}  # plugins started later cannot talk to systemd
    assert n.enabled and n.watchdog_interval() == 2.0
    assert n.status("starting 2 plugins")
    assert n.ready("2 plugins: 2 RUNNING")
    assert n.watchdog()
    assert n.stopping()
    assert n.reloading()
    got = systemd.drain(wait=0.3)
    assert got[:4] == ["STATUS=starting 2 plugins", "READY=1\nSTATUS=2 plugins: 2 RUNNING",
                       "WATCHDOG=1", "STOPPING=1"]
    assert got[4].startswith("RELOADING=1\nMONOTONIC_USEC=")
    n.close()


def test_a_hostile_status_text_cannot_inject_assignments(systemd):
    n = sdnotify.Notifier(systemd.env_value)
    n.status("plugin x\nREADY=1\r\n\x00" + "y" * 5000)
    (msg,) = systemd.drain(wait=0.2)
    assert "\n" not in msg and "\0" not in msg
    assert msg.startswith("STATUS=plugin x READY=1 ")
    assert len(msg) <= len("STATUS=") + sdnotify.MAX_STATUS_CHARS


def test_without_systemd_every_call_is_a_quiet_no_op():
    n = sdnotify.Notifier.from_environ({})
    assert not n.enabled and n.watchdog_interval() is None
    assert not n.ready() and not n.watchdog() and not n.stopping()
    p = sdnotify.WatchdogPinger(n, lambda: True)
    p.start()
    assert not p.is_alive()  # no WatchdogSec: no thread at all
    p.stop()


def test_watchdog_for_another_pid_or_garbage_is_ignored(caplog):
    other = sdnotify.Notifier.from_environ({"NOTIFY_SOCKET": "/x", "WATCHDOG_USEC": "100",
                                            "WATCHDOG_PID": "1"})
    assert other.watchdog_interval() is None
    with caplog.at_level(logging.WARNING, logger="ekl"):
        bad = sdnotify.Notifier.from_environ({"NOTIFY_SOCKET": "/x", "WATCHDOG_USEC": "soon"})
    assert bad.watchdog_interval() is None
    assert "$WATCHDOG_USEC is 'soon'" in caplog.text


def test_a_vanished_socket_is_logged_once_and_never_raises(caplog):
    sd = FakeSystemd()
    n = sdnotify.Notifier(sd.env_value)
    assert n.ready()
    sd.close()  # systemd went away (or the unit is not Type=notify)
    with caplog.at_level(logging.WARNING, logger="ekl"):
        assert not n.watchdog()
        assert not n.watchdog()
    assert caplog.text.count("sd_notify: cannot send to $NOTIFY_SOCKET") == 1


def test_watchdog_pings_at_half_the_period_only_while_alive(systemd, caplog):
    n = sdnotify.Notifier(systemd.env_value, watchdog_usec=200_000)  # WatchdogSec=0.2s
    state = {"alive": True, "raise": False}

    def alive() -> bool:
        if state["raise"]:
            raise RuntimeError("watcher table locked")
        return state["alive"]

    p = sdnotify.WatchdogPinger(n, alive)
    assert p.interval == 0.1
    with caplog.at_level(logging.WARNING, logger="ekl"):
        p.start()
        try:
            time.sleep(0.55)
            pings = systemd.drain(wait=0.05).count("WATCHDOG=1")
            assert 2 <= pings <= 6, pings
            state["alive"] = False  # the launcher's loops are wedged: systemd must see silence
            systemd.drain(wait=0.15)  # a ping already on its way
            systemd.messages.clear()
            time.sleep(0.4)
            assert systemd.drain(wait=0.05).count("WATCHDOG=1") == 0
            state["alive"], state["raise"] = True, True  # a throwing probe counts as dead...
            systemd.drain(wait=0.15)
            systemd.messages.clear()
            time.sleep(0.35)
            assert systemd.drain(wait=0.05).count("WATCHDOG=1") == 0
            assert p.is_alive()  # ...and does not kill the pinger
            state["raise"] = False
            assert wait_for(lambda: systemd.drain().count("WATCHDOG=1") >= 2, timeout=2)
        finally:
            p.stop()
    assert not p.is_alive()
    assert "withholding WATCHDOG=1" in caplog.text
    assert "the liveness check raised" in caplog.text


def test_summary_and_ready_condition():
    run = {"name": "a", "state": "RUNNING"}
    bad = {"name": "b", "state": "BACKOFF", "last_exit": "exited with code 1"}
    fatal = {"name": "c\nREADY=1", "state": "FATAL", "fatal_reason": "6 starts within 60 s"}
    assert sdnotify.all_running([{"plugins": [run]}])
    assert not sdnotify.all_running([{"plugins": [run, bad]}])
    assert not sdnotify.all_running([{"plugins": []}])
    text = sdnotify.summary([{"plugins": [run, bad]}, {"plugins": [fatal, "junk"]}])
    assert text == ("3 plugins: 1 BACKOFF, 1 FATAL, 1 RUNNING; b BACKOFF (exited with code 1); "
                    "c READY=1 FATAL (6 starts within 60 s)")
    assert sdnotify.summary([]) == "no plugins"
    many = [{"name": f"p{i}", "state": "FATAL", "fatal_reason": "x" * 300} for i in range(50)]
    assert len(sdnotify.summary([{"plugins": many}])) <= sdnotify.MAX_STATUS_CHARS


def test_a_child_process_notifies_through_the_inherited_environment(any_systemd):
    """The service is another process, as under systemd: READY arrives from its pid."""
    code = ("from ekl.launcher.ops.sdnotify import Notifier; import os; "
            "n = Notifier.from_environ(); n.ready('pid %d' % os.getpid()); "
            "assert 'NOTIFY_SOCKET' not in os.environ")
    systemd = any_systemd
    env = dict(os.environ, NOTIFY_SOCKET=systemd.env_value)
    cp = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True,
                        timeout=30)
    assert cp.returncode == 0, cp.stderr
    got: List[Tuple[str, ...]] = [tuple(m.split("\n")) for m in systemd.drain(wait=0.2)]
    assert got and got[0][0] == "READY=1" and got[0][1].startswith("STATUS=pid ")


def test_concurrent_senders_never_interleave(systemd):
    n = sdnotify.Notifier(systemd.env_value)
    got: List[str] = []
    done = threading.Event()

    def receive() -> None:  # systemd reads as fast as it can (the queue holds 10 datagrams)
        while True:
            try:
                got.append(systemd.sock.recv(65536).decode())
            except socket.timeout:
                if done.is_set():
                    return

    r = threading.Thread(target=receive)
    r.start()
    sent: List[bool] = []
    threads = [threading.Thread(target=lambda i=i: sent.extend(
        n.status(f"t{i} {k}") for k in range(50))) for i in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    done.set()
    r.join(10)
    # every datagram whole; none lost except those the bounded wait dropped (and said so)
    assert len(sent) == 200 and len(got) == sum(sent) >= 150
    assert all(m.startswith("STATUS=t") and "\n" not in m for m in got)


def test_a_full_queue_costs_a_bounded_wait_and_drops(systemd, caplog):
    n = sdnotify.Notifier(systemd.env_value)
    t0 = time.monotonic()
    with caplog.at_level(logging.WARNING, logger="ekl"):
        sent = [n.watchdog() for _ in range(15)]  # nobody reads: the queue fills at 10
    assert sent[:10] == [True] * 10 and not all(sent)
    assert time.monotonic() - t0 < 5 * sdnotify.SEND_TIMEOUT_S + 1
    assert caplog.text.count("sd_notify: cannot send") == 1


def test_heartbeats_go_stale_when_a_loop_stops(systemd):
    hb = sdnotify.Heartbeats(max_age=0.3)
    assert hb.alive()  # nothing registered yet
    hb.beat("watcher:a")
    hb.beat("status-writer")
    n = sdnotify.Notifier(systemd.env_value, watchdog_usec=100_000)
    p = sdnotify.WatchdogPinger(n, hb.alive)
    p.start()
    try:
        stop = time.monotonic() + 0.5
        while time.monotonic() < stop:  # both loops alive
            hb.beat("watcher:a")
            hb.beat("status-writer")
            time.sleep(0.05)
        assert systemd.drain().count("WATCHDOG=1") >= 3
        assert wait_for(lambda: hb.stale() == ["status-writer", "watcher:a"], timeout=2)
        systemd.drain(wait=0.15)  # pings sent before the loops went stale
        systemd.messages.clear()
        time.sleep(0.3)
        assert systemd.drain(wait=0.05).count("WATCHDOG=1") == 0  # silence: systemd restarts us
        hb.forget("status-writer")
        hb.beat("watcher:a")
        assert hb.alive()
    finally:
        p.stop()
