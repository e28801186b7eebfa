"""The native PUSH writes a burst's messages together (``EKUIPER_PUSH_COALESCE_US``).

Real peers only: the SDK's own PULL listener, a raw Unix socket that plays one (to see
the bytes and to stop reading), and nngcat (C nng), which must read frames written back
to back as separate messages.
"""

from __future__ import annotations

import os
import struct
import subprocess
import sys
import threading
import time
from typing import List

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from ekuiper.transport import (
    PUSH_COALESCE_ENV,
    TransportError,
    TransportTimeout,
    get_transport,
)
from ekuiper.transport.base import PUSH_COALESCE_MAX_BYTES, push_coalesce_s

from .conftest import NNGCAT, read_until_quiet, wait_for
from .test_native_blocking import PULL_HEADER, _peer

native_t = get_transport("native")


def _push(url: str, send_timeout_ms: int = 2000):  # noqa: ANN202
    return native_t.dial_push(url, send_timeout_ms=send_timeout_ms, retries=50,
                              interval_s=0.02)


def _frames(data: bytes) -> List[bytes]:
    out, off = [], 0
    while off < len(data):
        kind, n = struct.unpack_from(">BQ", data, off)
        assert kind == 1
        out.append(data[off + 9:off + 9 + n])
        off += 9 + n
    assert off == len(data), "a torn frame"
    return out


def test_bursts_from_several_threads_arrive_whole_and_in_each_threads_order(ipc_url):
    url = ipc_url("burst")
    pull = native_t.listen_pull(url, recv_timeout_ms=5000, retries=0, interval_s=0.01)
    push = _push(url)
    try:
        def sender(k: int) -> None:
            for i in range(3000):
                push.send(f"{k}:{i}:".encode() + b"x" * (i % 200))

        ts = [threading.Thread(target=sender, args=(k,)) for k in range(3)]
        for t in ts:
            t.start()
        got: List[bytes] = []
        while len(got) < 9000:
            got.append(pull.recv())
        for t in ts:
            t.join()
        for k in range(3):
            mine = [int(m.split(b":")[1]) for m in got if m.startswith(f"{k}:".encode())]
            assert mine == list(range(3000))
    finally:
        push.close()
        pull.close()


def test_a_message_after_a_quiet_spell_is_written_before_send_returns(ipc_url):
    url = ipc_url("quiet")
    with _peer(url, PULL_HEADER, lambda: _push(url)) as (push, conn, _srv):
        for i in range(3):
            time.sleep(0.01)  # longer than the window: nothing is queued
            push.send(b"m%d" % i)
            conn.setblocking(False)
            assert conn.recv(100) == b"\x01" + struct.pack(">Q", 2) + b"m%d" % i
            conn.setblocking(True)


def test_close_writes_what_is_queued(ipc_url):
    url = ipc_url("close")
    with _peer(url, PULL_HEADER, lambda: _push(url)) as (push, conn, _srv):
        msgs = [b"q%d" % i for i in range(500)]
        for m in msgs:
            push.send(m)
        push.close()
        assert _frames(read_until_quiet(conn)) == msgs


def test_a_peer_that_stops_reading_blocks_senders_within_the_bound_then_times_out(ipc_url):
    url = ipc_url("full")
    with _peer(url, PULL_HEADER, lambda: _push(url, send_timeout_ms=300)) as (push, conn, _s):
        sent = 0
        t0 = time.monotonic()
        with pytest.raises(TransportTimeout):
            while True:
                push.send(b"y" * 1000)
                sent += 1
                assert sent < 100_000, "never blocked"
        assert time.monotonic() - t0 < 10
        # Everything send accepted arrives, whole and in order, once the peer reads.
        got = _frames(read_until_quiet(conn, 1.0))
        assert len(got) == sent and all(m == b"y" * 1000 for m in got)
        # and what was queued never went over the bound: the kernel took the rest
        assert sent * 1009 < PUSH_COALESCE_MAX_BYTES + (8 << 20)
        push.send(b"after")
        assert _frames(read_until_quiet(conn)) == [b"after"]


def test_a_vanished_peer_fails_a_send_within_the_timeout_and_the_socket_recovers(ipc_url):
    url = ipc_url("gone")
    pull = native_t.listen_pull(url, recv_timeout_ms=3000, retries=0, interval_s=0.01)
    push = _push(url, send_timeout_ms=500)
    try:
        push.send(b"first")
        assert pull.recv() == b"first"
        pull.close()  # the peer goes: queued writes fail or time out
        errors = 0
        for _ in range(200):
            try:
                push.send(b"z" * 100)
            except TransportError:
                errors += 1
                break
            time.sleep(0.001)
        assert errors, "a send to a vanished peer never failed"
        pull = native_t.listen_pull(url, recv_timeout_ms=3000, retries=0, interval_s=0.01)
        assert wait_for(lambda: _try_send(push, b"again"), 5)
        # messages queued before the failure was seen go to the new peer first, as nng's
        # queued messages go to the next pipe; nothing else, and in order
        got = pull.recv()
        while got != b"again":
            assert got == b"z" * 100
            got = pull.recv()
    finally:
        push.close()
        pull.close()


def _try_send(push, data: bytes) -> bool:  # noqa: ANN001
    try:
        push.send(data)
        return True
    except TransportError:
        return False


@pytest.mark.skipif(NNGCAT is None, reason="nngcat (nng-utils) is not installed")
def test_nngcat_reads_a_burst_as_separate_messages(ipc_url):
    url = ipc_url("nngcat")
    p = subprocess.Popen([NNGCAT, "--pull0", "--listen", url, "--raw"],
                         stdout=subprocess.PIPE, stderr=subprocess.DEVNULL)
    push = None
    try:
        assert wait_for(lambda: os.path.exists(url[len("ipc://"):]), 5)
        push = _push(url)
        msgs = [b"<%05d>" % i for i in range(2000)]
        for m in msgs:
            push.send(m)
        push.close()
        push = None
        end = time.monotonic() + 10
        out = b""
        os.set_blocking(p.stdout.fileno(), False)  # type: ignore[union-attr]
        while len(out) < 7 * 2000 and time.monotonic() < end:
            part = p.stdout.read()  # type: ignore[union-attr]
            if part:
                out += part
            else:
                time.sleep(0.02)
        assert out == b"".join(msgs)
    finally:
        if push is not None:
            push.close()
        p.kill()
        p.wait()


_COUNTER = iter(range(10**9))


@settings(max_examples=25, deadline=None)
@given(st.lists(st.tuples(st.sampled_from([0, 1, 10, 1000, 65527, 65528, 70_000]),
                          st.booleans()), min_size=1, max_size=40))
def test_any_mix_of_sizes_and_pauses_arrives_in_order(sizes):
    """Small messages (queued), ones over 64 KiB (written by send itself, after the queue:
    65527 is the largest that is queued) and pauses between them, in any order, with the
    peer reading as they come."""
    url = f"ipc:///tmp/ekc{os.getpid()}-{next(_COUNTER)}.ipc"
    pull = native_t.listen_pull(url, recv_timeout_ms=5000, retries=0, interval_s=0.01)
    push = _push(url)
    try:
        msgs = [bytes([i % 251]) * n for i, (n, _) in enumerate(sizes)]
        got: List[bytes] = []
        reader = threading.Thread(target=lambda: got.extend(pull.recv() for _ in msgs))
        reader.start()
        for m, (_, pause) in zip(msgs, sizes):
            push.send(m)
            if pause:
                time.sleep(0.001)
        reader.join(30)
        assert got == msgs
    finally:
        push.close()
        pull.close()


def test_the_setting(monkeypatch):
    assert push_coalesce_s("") == 0.0005
    assert push_coalesce_s("0") == 0 and push_coalesce_s("250") == 0.00025
    for bad in ("-1", "abc", "2000000"):
        assert push_coalesce_s(bad) == 0.0005
    code = ("import sys, struct, threading, time\n"
            "from ekuiper.transport import get_transport\n"
            "t = get_transport('native')\n"
            f"u = 'ipc:///tmp/ekc0-{os.getpid()}.ipc'\n"
            "pull = t.listen_pull(u, recv_timeout_ms=3000, retries=0, interval_s=0.01)\n"
            "push = t.dial_push(u, send_timeout_ms=1000, retries=50, interval_s=0.02)\n"
            "for i in range(100): push.send(b'x')\n"
            "print(threading.active_count())\n"
            "[pull.recv() for i in range(100)]\n"
            "push.close(); pull.close()\n")
    env = dict(os.environ, **{PUSH_COALESCE_ENV: "0"})
    out = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True,
                         text=True, timeout=30)
    assert out.returncode == 0, out.stderr
    # off: no writer thread (main, the listener's accepting and receiving threads)
    env[PUSH_COALESCE_ENV] = "500"
    on = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True,
                        text=True, timeout=30)
    assert on.returncode == 0, on.stderr
    assert int(on.stdout) == int(out.stdout) + 1


def test_each_bad_setting_is_warned_once_per_variable(caplog):
    """The same unreadable value in two variables is two warnings (the warned-once set
    was keyed on the value alone, so the second was never logged); again, none."""
    from ekuiper.transport.base import max_msg_size

    bad = f"nonsense-{os.getpid()}"
    with caplog.at_level("WARNING", logger="ekuiper"):
        for _ in range(2):
            max_msg_size(bad)
            push_coalesce_s(bad)
    warned = [r.getMessage() for r in caplog.records if bad in r.getMessage()]
    assert len(warned) == 2, warned
    assert "EKUIPER_MAX_MSG_SIZE" in warned[0] and "EKUIPER_PUSH_COALESCE_US" in warned[1]
