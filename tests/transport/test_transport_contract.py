"""The transport contract, run against real pynng host-side peers with every transport.

The runtime relies on these behaviours (reqloop.py, symbols.py, plugin.py); both the pynng
transport and the native one must show them alike, so every test is parametrised over
``get_transport(name)``.
"""

from __future__ import annotations

import os
import socket
import threading
import time
from typing import Callable, List

import pynng
import pytest

from ekuiper.transport import (
    TransportClosed,
    TransportError,
    TransportTimeout,
    get_transport,
)

from .conftest import Blocked, in_thread

NAMES = ["pynng", "native"]
BIG = 16 << 20
SIZES = [1, 100, 70_000, BIG]


@pytest.fixture(params=NAMES)
def tname(request: pytest.FixtureRequest) -> str:
    return request.param


def _rep(url: str, **kw: object) -> pynng.Rep0:
    s = pynng.Rep0(recv_timeout=kw.pop("recv_timeout", 5000), **kw)  # type: ignore[arg-type]
    s.recv_max_size = 0
    s.listen(url)
    return s


def _pull(url: str) -> pynng.Pull0:
    s = pynng.Pull0(recv_timeout=5000)
    s.recv_max_size = 0
    s.listen(url)
    return s


def _dial_req(tname: str, url: str, recv_ms: int = 2000, send_ms: int = 2000):
    return get_transport(tname).dial_req(url, recv_timeout_ms=recv_ms, send_timeout_ms=send_ms,
                                         retries=20, interval_s=0.02)


def _dial_push(tname: str, url: str, send_ms: int = 2000):
    return get_transport(tname).dial_push(url, send_timeout_ms=send_ms, retries=20,
                                          interval_s=0.02)


def _payload(n: int) -> bytes:
    return (bytes(range(256)) * (n // 256 + 1))[:n]


def _quietly(fn: Callable[[], object]) -> Callable[[], None]:
    """A host-side thread body that ends quietly when the test closes its socket."""
    def run() -> None:
        try:
            fn()
        except (pynng.Closed, pynng.Timeout):
            pass
    return run


# --- REQ (control and function channels) ------------------------------------------------

@pytest.mark.parametrize("size", SIZES)
def test_req_round_trip(tname: str, ipc_url, size: int) -> None:
    url = ipc_url("r")
    rep = _rep(url)
    req = _dial_req(tname, url)
    try:
        assert req.connected
        data = _payload(size)
        req.send(data)
        assert rep.recv_msg().bytes == data
        rep.send(data[::-1])
        assert req.recv() == data[::-1]
    finally:
        req.close()
        rep.close()


def test_req_empty_messages(tname: str, ipc_url) -> None:
    url = ipc_url("r")
    rep = _rep(url)
    req = _dial_req(tname, url)
    try:
        req.send(b"")
        assert rep.recv_msg().bytes == b""
        rep.send(b"")
        assert req.recv() == b""
    finally:
        req.close()
        rep.close()


def test_req_recv_timeout_then_protocol_state(tname: str, ipc_url) -> None:
    url = ipc_url("r")
    rep = _rep(url)
    req = _dial_req(tname, url, recv_ms=200)
    try:
        req.send(b"handshake")
        t0 = time.monotonic()
        with pytest.raises(TransportTimeout):
            req.recv()
        assert 0.15 < time.monotonic() - t0 < 1.5
        # A REQ socket must send before it may receive again (pynng: BadState).
        t0 = time.monotonic()
        with pytest.raises(TransportTimeout):
            req.recv()
        assert time.monotonic() - t0 < 0.1
        # The host answers the abandoned request late: that reply must not surface.
        assert rep.recv() == b"handshake"
        rep.send(b"late")
        req.send(b"again")
        assert rep.recv() == b"again"
        rep.send(b"fresh")
        assert req.recv() == b"fresh"
    finally:
        req.close()
        rep.close()


def test_req_resend_cancels_previous_request(tname: str, ipc_url) -> None:
    url = ipc_url("r")
    rep = _rep(url)
    req = _dial_req(tname, url)
    try:
        req.send(b"first")
        assert rep.recv() == b"first"
        req.send(b"second")  # cancels "first"
        rep.send(b"reply-to-first")  # arrives, and is dropped by the REQ side
        assert rep.recv() == b"second"
        rep.send(b"reply-to-second")
        assert req.recv() == b"reply-to-second"
    finally:
        req.close()
        rep.close()


def test_req_many_calls_in_order(tname: str, ipc_url) -> None:
    url = ipc_url("r")
    rep = _rep(url)
    req = _dial_req(tname, url)

    def host() -> None:
        for _ in range(500):
            rep.send(rep.recv() + b"!")

    t = in_thread(host)
    try:
        for i in range(500):
            req.send(b"%d" % i)
            assert req.recv() == b"%d!" % i
    finally:
        t.join(5)
        req.close()
        rep.close()


def test_req_send_times_out_without_peer(tname: str, ipc_url, wait_for) -> None:
    url = ipc_url("r")
    rep = _rep(url)
    req = _dial_req(tname, url, send_ms=300)
    try:
        rep.close()
        assert wait_for(lambda: not req.connected)
        t0 = time.monotonic()
        with pytest.raises(TransportTimeout):
            req.send(b"nobody")
        assert 0.25 < time.monotonic() - t0 < 2.0
        with pytest.raises(TransportTimeout):
            req.recv()  # the timed-out send left no request behind
    finally:
        req.close()


def test_req_peer_gone_during_request_is_a_reset(tname: str, ipc_url) -> None:
    url = ipc_url("r")
    rep = _rep(url)
    req = _dial_req(tname, url, recv_ms=3000)
    try:
        req.send(b"q")
        assert rep.recv() == b"q"
        threading.Timer(0.1, rep.close).start()
        t0 = time.monotonic()
        with pytest.raises(TransportError) as ei:
            req.recv()
        assert not isinstance(ei.value, (TransportTimeout, TransportClosed))
        assert time.monotonic() - t0 < 2.0
    finally:
        req.close()


def test_req_follows_a_restarted_host(tname: str, ipc_url, wait_for) -> None:
    url = ipc_url("r")
    rep = _rep(url)
    req = _dial_req(tname, url, recv_ms=1000, send_ms=1000)
    try:
        req.send(b"one")
        assert rep.recv() == b"one"
        rep.send(b"1")
        assert req.recv() == b"1"
        rep.close()
        assert wait_for(lambda: not req.connected, 2.0)
        rep = _rep(url)
        assert wait_for(lambda: req.connected, 2.0), "did not re-dial the new host"
        req.send(b"two")
        assert rep.recv() == b"two"
        rep.send(b"2")
        assert req.recv() == b"2"
    finally:
        req.close()
        rep.close()


def test_req_close_unblocks_recv(tname: str, ipc_url) -> None:
    url = ipc_url("r")
    rep = _rep(url)
    req = _dial_req(tname, url, recv_ms=10_000)
    try:
        req.send(b"wait")
        b = Blocked(req.recv)
        time.sleep(0.1)
        t0 = time.monotonic()
        err = b.ended_by(req.close, 2)
        assert time.monotonic() - t0 < 1.5
        # nng tears the pipe down first, so pynng's recv may see "Connection reset" instead
        # (the runtime checks its stop flag either way); native always says Closed.
        expected = TransportError if tname == "pynng" else TransportClosed
        assert isinstance(err, expected), err
        with pytest.raises(TransportClosed):
            req.send(b"after close")
    finally:
        req.close()
        rep.close()


def test_req_close_unblocks_send_waiting_for_a_peer(tname: str, ipc_url, wait_for) -> None:
    url = ipc_url("r")
    rep = _rep(url)
    req = _dial_req(tname, url, send_ms=10_000)
    try:
        rep.close()
        assert wait_for(lambda: not req.connected)
        b = Blocked(lambda: req.send(b"x"))
        time.sleep(0.1)
        err = b.ended_by(req.close, 2)
        assert isinstance(err, TransportClosed), err
    finally:
        req.close()


def test_dial_without_listener_fails_after_retries(tname: str, ipc_url) -> None:
    t0 = time.monotonic()
    with pytest.raises(TransportError):
        get_transport(tname).dial_req(ipc_url("none"), recv_timeout_ms=100,
                                      send_timeout_ms=100, retries=3, interval_s=0.02)
    assert time.monotonic() - t0 < 2.0
    with pytest.raises(TransportError):
        get_transport(tname).dial_push(ipc_url("none"), send_timeout_ms=100, retries=1,
                                       interval_s=0.02)


def test_req_refuses_a_peer_of_the_wrong_protocol(tname: str, ipc_url) -> None:
    url = ipc_url("w")
    pull = _pull(url)  # a PULL where a REP should be
    try:
        try:
            req = get_transport(tname).dial_req(url, recv_timeout_ms=200, send_timeout_ms=200,
                                                retries=2, interval_s=0.02)
        except TransportError:
            return  # refused at dial (native)
        try:  # pynng dials, but nng rejects the pipe: nothing is ever delivered
            assert not req.connected
            with pytest.raises(TransportTimeout):
                req.send(b"x")
        finally:
            req.close()
    finally:
        pull.close()


# --- PUSH (source data, sink acks) ----------------------------------------------------

@pytest.mark.parametrize("size", [0, *SIZES])
def test_push_to_pull(tname: str, ipc_url, size: int) -> None:
    url = ipc_url("p")
    pull = _pull(url)
    push = _dial_push(tname, url)
    try:
        data = _payload(size)
        push.send(data)
        push.send(b"after")
        assert pull.recv_msg().bytes == data
        assert pull.recv() == b"after"
    finally:
        push.close()
        pull.close()


def test_push_keeps_order(tname: str, ipc_url) -> None:
    url = ipc_url("p")
    pull = _pull(url)
    push = _dial_push(tname, url)
    try:
        got: List[bytes] = []
        t = in_thread(lambda: got.extend(pull.recv() for _ in range(2000)))
        for i in range(2000):
            push.send(b'{"message":{"i":%d}}' % i)
        t.join(10)
        assert got == [b'{"message":{"i":%d}}' % i for i in range(2000)]
    finally:
        push.close()
        pull.close()


def test_push_send_times_out_without_peer(tname: str, ipc_url) -> None:
    url = ipc_url("p")
    pull = _pull(url)
    push = _dial_push(tname, url, send_ms=250)
    try:
        pull.close()
        time.sleep(0.05)
        t0 = time.monotonic()
        with pytest.raises(TransportTimeout):
            for _ in range(3):  # a message may still be taken by the pipe being torn down
                push.send(b"x")
        assert time.monotonic() - t0 < 2.5
    finally:
        push.close()


def test_push_send_times_out_when_the_host_stops_reading(tname: str, ipc_url) -> None:
    url = ipc_url("p")
    pull = _pull(url)  # never reads
    push = _dial_push(tname, url, send_ms=200)
    try:
        t0 = time.monotonic()
        with pytest.raises(TransportTimeout):
            for _ in range(100_000):
                push.send(b"x" * 1000)
        assert time.monotonic() - t0 < 10
    finally:
        push.close()
        pull.close()


def test_push_follows_a_restarted_host(tname: str, ipc_url) -> None:
    url = ipc_url("p")
    pull = _pull(url)
    push = _dial_push(tname, url, send_ms=2000)
    try:
        push.send(b"before")
        assert pull.recv() == b"before"
        pull.close()
        time.sleep(0.05)
        pull = _pull(url)
        deadline = time.monotonic() + 3
        got = b""
        pull.recv_timeout = 100
        while time.monotonic() < deadline:  # messages sent while the host was away may be lost
            push.send(b"after")
            try:
                got = pull.recv()
                break
            except pynng.Timeout:
                continue
        assert got == b"after"
    finally:
        push.close()
        pull.close()


def test_push_close_unblocks_send(tname: str, ipc_url) -> None:
    url = ipc_url("p")
    pull = _pull(url)
    push = _dial_push(tname, url, send_ms=10_000)
    try:
        pull.close()
        time.sleep(0.05)

        def sender() -> None:
            for _ in range(5):
                push.send(b"x")

        b = Blocked(sender)
        time.sleep(0.2)
        err = b.ended_by(push.close, 2)
        assert isinstance(err, TransportClosed), err
    finally:
        push.close()


# --- PULL (sink data) -------------------------------------------------------------------

def _listen_pull(tname: str, url: str, recv_ms=None):
    return get_transport(tname).listen_pull(url, retries=3, interval_s=0.02,
                                            recv_timeout_ms=recv_ms)


def _push(url: str) -> pynng.Push0:
    s = pynng.Push0(send_timeout=2000)
    s.dial(url, block=True)
    return s


@pytest.mark.parametrize("size", [0, *SIZES])
def test_pull_from_push(tname: str, ipc_url, size: int) -> None:
    url = ipc_url("s")
    pull = _listen_pull(tname, url, recv_ms=5000)
    push = _push(url)
    try:
        data = _payload(size)
        # The host sends from its own thread: a native PULL reads only while recv runs
        # (nng reads one message ahead per pipe), so a 16 MiB message needs a reader.
        t = in_thread(_quietly(lambda: (push.send(data), push.send(b"after"))))
        assert pull.recv() == data
        assert pull.recv() == b"after"
        t.join(5)
    finally:
        push.close()
        pull.close()


def test_pull_from_several_peers(tname: str, ipc_url) -> None:
    url = ipc_url("s")
    pull = _listen_pull(tname, url, recv_ms=5000)
    pushes = [_push(url) for _ in range(3)]
    try:
        def feed(k: int, s: pynng.Push0) -> None:
            for i in range(300):
                s.send(b"%d:%d" % (k, i))

        threads = [in_thread(lambda k=k, s=s: feed(k, s)) for k, s in enumerate(pushes)]
        got = [pull.recv() for _ in range(900)]
        for t in threads:
            t.join(5)
        for k in range(3):
            mine = [m for m in got if m.startswith(b"%d:" % k)]
            assert mine == [b"%d:%d" % (k, i) for i in range(300)]  # order kept per peer
    finally:
        for s in pushes:
            s.close()
        pull.close()


def test_pull_recv_timeout(tname: str, ipc_url) -> None:
    pull = _listen_pull(tname, ipc_url("s"), recv_ms=150)
    try:
        t0 = time.monotonic()
        with pytest.raises(TransportTimeout):
            pull.recv()
        assert 0.1 < time.monotonic() - t0 < 1.5
    finally:
        pull.close()


def test_pull_blocks_until_close(tname: str, ipc_url) -> None:
    pull = _listen_pull(tname, ipc_url("s"))
    b = Blocked(pull.recv)
    time.sleep(0.3)
    assert b.alive()
    err = b.ended_by(pull.close, 2)
    assert isinstance(err, TransportClosed), err
    with pytest.raises(TransportClosed):
        pull.recv()


def test_pull_socket_file_lifecycle(tname: str, ipc_url) -> None:
    url = ipc_url("s")
    path = url[len("ipc://"):]
    # A stale socket file left by a killed process is replaced, as nng does.
    stale = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    stale.bind(path)
    stale.close()
    assert os.path.exists(path)
    pull = _listen_pull(tname, url, recv_ms=2000)
    try:
        # A live listener is not taken over.
        with pytest.raises(TransportError):
            get_transport(tname).listen_pull(url, retries=1, interval_s=0.01)
        assert os.path.exists(path)
        push = _push(url)
        push.send(b"ok")
        assert pull.recv() == b"ok"
        push.close()
    finally:
        pull.close()
    assert not os.path.exists(path)  # removed on close


def test_pull_refuses_a_peer_of_the_wrong_protocol(tname: str, ipc_url) -> None:
    url = ipc_url("s")
    pull = _listen_pull(tname, url, recv_ms=300)
    req = pynng.Req0(send_timeout=300)
    try:
        req.dial(url, block=False)
        with pytest.raises(pynng.Timeout):
            req.send(b"not for a PULL")
        with pytest.raises(TransportTimeout):
            pull.recv()
    finally:
        req.close()
        pull.close()
