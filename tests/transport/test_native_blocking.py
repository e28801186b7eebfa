"""The native transport's blocking hot paths against a peer that stops reading or answering.

A REQ socket waits for its reply in one blocking ``recv`` (SO_RCVTIMEO) and a send of up
to 64 KiB is one blocking ``send`` (SO_SNDTIMEO). These tests play a host with a raw Unix
socket that completes the SP handshake and then never reads (the plugin's socket buffer
fills) or never answers, and check that the timeouts hold, that ``close`` from another
thread wakes the blocked call at once, and that what was written stays whole.
"""

from __future__ import annotations

import contextlib
import socket
import struct
import threading
import time
from typing import Any, Callable, ContextManager, Iterator, List, Tuple

import pytest

from ekuiper.transport import TransportClosed, TransportTimeout, get_transport

from .conftest import Blocked, read_until_quiet

native_t = get_transport("native")
PULL_HEADER = b"\x00SP\x00\x00\x51\x00\x00"
REP_HEADER = b"\x00SP\x00\x00\x31\x00\x00"


def _listener(url: str) -> socket.socket:
    srv = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    srv.bind(url[len("ipc://"):])
    srv.listen(4)
    return srv


def _accept(srv: socket.socket, header: bytes) -> socket.socket:
    srv.settimeout(5)
    c, _ = srv.accept()
    c.settimeout(5)
    c.sendall(header)
    got = b""
    while len(got) < 8:
        got += c.recv(8 - len(got))
    return c


@contextlib.contextmanager
def _peer(url: str, header: bytes,
          dial: Callable[[], object]) -> Iterator[Tuple[Any, socket.socket, socket.socket]]:
    """(the dialed socket, our accepted end, our listener), all closed on leaving."""
    srv = _listener(url)
    box: List[object] = []
    t = threading.Thread(target=lambda: box.append(dial()), daemon=True)
    t.start()
    try:
        conn = _accept(srv, header)
    except BaseException:
        srv.close()
        raise
    t.join(5)
    try:
        assert box, "dial did not complete"
        yield box[0], conn, srv
    finally:
        if box:
            box[0].close()  # type: ignore[attr-defined]
        conn.close()
        srv.close()


def _req_peer(url: str, recv_timeout_ms: int
              ) -> ContextManager[Tuple[Any, socket.socket, socket.socket]]:
    """A native REQ dialed to a raw REP peer in this process (sends bounded by 1 s)."""
    return _peer(url, REP_HEADER, lambda: native_t.dial_req(
        url, recv_timeout_ms=recv_timeout_ms, send_timeout_ms=1000, retries=20,
        interval_s=0.05))


def _fill(push: object, chunk: bytes) -> int:
    """Send until the send times out (the peer reads nothing); the messages sent."""
    n = 0
    with pytest.raises(TransportTimeout):
        while True:
            push.send(chunk)  # type: ignore[attr-defined]
            n += 1
            assert n < 100_000, "the socket never filled"
    return n


def test_push_send_times_out_on_a_full_buffer_then_sends_whole_messages(ipc_url) -> None:
    url = ipc_url("full")
    with _peer(url, PULL_HEADER, lambda: native_t.dial_push(
            url, send_timeout_ms=200, retries=20, interval_s=0.05)) as (push, conn, srv):
        t0 = time.monotonic()
        sent = _fill(push, b"y" * 1000)
        assert time.monotonic() - t0 < 5
        # The peer now reads everything: every frame that was sent is whole, none torn.
        data = read_until_quiet(conn)
        frames, off = 0, 0
        while off < len(data):
            kind, length = struct.unpack_from(">BQ", data, off)
            assert kind == 1 and length == 1000
            off += 9 + length
            frames += 1
        assert off == len(data) and frames == sent
        push.send(b"after")  # type: ignore[attr-defined]
        assert conn.recv(100) == b"\x01" + struct.pack(">Q", 5) + b"after"


def test_close_wakes_a_push_send_blocked_on_a_full_buffer(ipc_url) -> None:
    url = ipc_url("wake")
    with _peer(url, PULL_HEADER, lambda: native_t.dial_push(
            url, send_timeout_ms=30_000, retries=20, interval_s=0.05)) as (push, conn, srv):

        def sender() -> None:
            while True:
                push.send(b"z" * 4000)  # type: ignore[attr-defined]

        b = Blocked(sender)
        time.sleep(0.5)  # the buffer is full: the sender is blocked in send()
        assert b.alive()
        t0 = time.monotonic()
        err = b.ended_by(push.close, 3)  # type: ignore[attr-defined]
        assert time.monotonic() - t0 < 3
        assert isinstance(err, TransportClosed), err


def test_req_recv_times_out_and_close_wakes_it(ipc_url) -> None:
    url = ipc_url("req")
    with _req_peer(url, recv_timeout_ms=300) as (req, conn, srv):
        req.send(b"handshake")  # type: ignore[attr-defined]
        t0 = time.monotonic()
        with pytest.raises(TransportTimeout):
            req.recv()  # type: ignore[attr-defined]
        assert 0.25 <= time.monotonic() - t0 < 3  # SO_RCVTIMEO, not at once, not for ever
        req.send(b"again")  # type: ignore[attr-defined]
        b = Blocked(req.recv)  # type: ignore[attr-defined]
        time.sleep(0.1)
        err = b.ended_by(req.close, 3)  # type: ignore[attr-defined]
        assert isinstance(err, TransportClosed), err


def test_req_reply_split_across_writes_and_a_stale_reply_first(ipc_url) -> None:
    """The one-recv fast path hands anything unusual to the general path intact."""
    url = ipc_url("split")
    with _req_peer(url, recv_timeout_ms=3000) as (req, conn, srv):
        req.send(b"q")  # type: ignore[attr-defined]
        head = conn.recv(9)
        (length,) = struct.unpack(">Q", head[1:9])
        body = conn.recv(length)
        rid = body[:4]
        stale = (int.from_bytes(rid, "big") ^ 1).to_bytes(4, "big")
        conn.sendall(b"\x01" + struct.pack(">Q", 4 + 5) + stale + b"stale")
        reply = b"\x01" + struct.pack(">Q", 4 + 5) + rid + b"reply"
        got: List[bytes] = []
        t = threading.Thread(target=lambda: got.append(req.recv()), daemon=True)  # type: ignore[attr-defined]
        t.start()
        time.sleep(0.1)
        conn.sendall(reply[:6])
        time.sleep(0.1)
        conn.sendall(reply[6:])
        t.join(3)
        assert got == [b"reply"]


def test_without_socket_timeouts_the_polling_paths_serve(ipc_url) -> None:
    """Where the system refuses SO_RCVTIMEO/SO_SNDTIMEO (a timeval of another layout,
    which cannot be produced here, so the connection is put in the state a refusal
    leaves: -1 cached), sends and receives take the polling paths, timeouts included."""
    url = ipc_url("poll")
    with _req_peer(url, recv_timeout_ms=300) as (req, conn, srv):
        c = req._conn  # type: ignore[attr-defined]
        c._rcvtimeo = c._sndtimeo = -1
        req.send(b"q")  # type: ignore[attr-defined]
        head = conn.recv(9)
        body = conn.recv(struct.unpack(">Q", head[1:9])[0])
        conn.sendall(b"\x01" + struct.pack(">Q", 4 + 2) + body[:4] + b"ok")
        assert req.recv() == b"ok"  # type: ignore[attr-defined]
        req.send(b"again")  # type: ignore[attr-defined]
        t0 = time.monotonic()
        with pytest.raises(TransportTimeout):
            req.recv()  # type: ignore[attr-defined]
        assert 0.25 <= time.monotonic() - t0 < 3
        assert c._rcvtimeo == -1 and c._sndtimeo == -1


# --- NativeReq.exchange: send and recv in one call, for the serving loops ---------------


def _read_request(conn: socket.socket) -> Tuple[bytes, bytes]:
    """(request id, body) of the next REQ message the raw peer receives."""
    head = b""
    while len(head) < 9:
        head += conn.recv(9 - len(head))
    assert head[0] == 1
    (length,) = struct.unpack(">Q", head[1:9])
    body = b""
    while len(body) < length:
        body += conn.recv(length - len(body))
    return body[:4], body[4:]


def _reply(conn: socket.socket, rid: bytes, body: bytes) -> None:
    conn.sendall(b"\x01" + struct.pack(">Q", 4 + len(body)) + rid + body)


def _first_order(req: Any, conn: socket.socket) -> bytes:
    """The REQ's handshake read and answered with ``order 1``; the handshake's request id."""
    req.send(b"handshake")
    rid, body = _read_request(conn)
    assert body == b"handshake"
    _reply(conn, rid, b"order 1")
    assert req.recv() == b"order 1"
    return rid


def _exchanging(req: Any, data: bytes, got: List[object]) -> threading.Thread:
    """``req.exchange(data)`` in a thread of its own; its answer is appended to ``got``."""
    t = threading.Thread(target=lambda: got.append(req.exchange(data)), daemon=True)
    t.start()
    return t


def test_exchange_is_send_then_recv_on_the_wire(ipc_url) -> None:
    """The same frames as send + recv; None (nothing sent) until a first send has set the
    socket's send timeout; a reply with another request id is dropped as recv drops it."""
    url = ipc_url("xchg")
    with _req_peer(url, recv_timeout_ms=3000) as (req, conn, srv):
        assert req.exchange(b"early") is None  # type: ignore[attr-defined]
        rid0 = _first_order(req, conn)
        got: List[object] = []
        t = _exchanging(req, b"result 1", got)
        rid1, body = _read_request(conn)
        assert body == b"result 1"
        assert int.from_bytes(rid1, "big") == (int.from_bytes(rid0, "big") + 1) | 0x80000000
        _reply(conn, rid0, b"stale")  # an answer to the earlier request: dropped
        _reply(conn, rid1, b"order 2")
        t.join(5)
        assert got == [b"order 2"]
        big = b"x" * (70 * 1024)  # over 64 KiB: the caller's send and recv take it
        assert req.exchange(big) is None  # type: ignore[attr-defined]
        req.close()  # type: ignore[attr-defined]
        assert req.exchange(b"after close") is None  # type: ignore[attr-defined]


def test_exchange_times_out_and_close_wakes_it_and_a_vanished_peer_is_a_reset(ipc_url) -> None:
    from ekuiper.transport import TransportError

    url = ipc_url("xchg2")
    with _req_peer(url, recv_timeout_ms=300) as (req, conn, srv):
        req.send(b"handshake")  # type: ignore[attr-defined]
        rid, _ = _read_request(conn)
        _reply(conn, rid, b"order")
        assert req.recv() == b"order"  # type: ignore[attr-defined]
        t0 = time.monotonic()
        with pytest.raises(TransportTimeout):
            req.exchange(b"result")  # type: ignore[attr-defined]
        assert 0.25 <= time.monotonic() - t0 < 3
        with pytest.raises(TransportTimeout):  # the request was abandoned, as after recv
            req.recv()  # type: ignore[attr-defined]
        _read_request(conn)

        def caller() -> None:
            req.exchange(b"result")  # type: ignore[attr-defined]

        b = Blocked(caller)
        _read_request(conn)
        # the host goes away while the request waits for its reply
        err = b.ended_by(conn.close, 3)
        assert isinstance(err, TransportError), err
        assert not isinstance(err, (TransportTimeout, TransportClosed))
        conn = _accept(srv, REP_HEADER)  # the socket re-dials in the background
        assert wait_for_conn(req)
        req.send(b"handshake")  # type: ignore[attr-defined]
        rid, _ = _read_request(conn)
        _reply(conn, rid, b"order")
        assert req.recv() == b"order"  # type: ignore[attr-defined]
        b = Blocked(caller)
        _read_request(conn)
        time.sleep(0.05)
        err = b.ended_by(req.close, 3)  # type: ignore[attr-defined]
        assert isinstance(err, TransportClosed), err


def test_exchange_reads_a_split_reply_the_long_way_and_sends_nothing_over_buffered_bytes(
        ipc_url) -> None:
    """A reply that arrives in parts, or together with another frame, is read the long
    way (``ReplyPending``) and what follows it stays buffered; over buffered bytes the
    next exchange sends nothing (None), and send + recv take it from there."""
    url = ipc_url("xchg3")
    with _req_peer(url, recv_timeout_ms=3000) as (req, conn, srv):
        _first_order(req, conn)
        got: List[object] = []
        t = _exchanging(req, b"result 1", got)
        rid1, body = _read_request(conn)
        assert body == b"result 1"
        frame = b"\x01" + struct.pack(">Q", 4 + 7) + rid1 + b"order 2"
        conn.sendall(frame[:6])
        time.sleep(0.1)
        stale = (int.from_bytes(rid1, "big") ^ 1).to_bytes(4, "big")
        # the rest of the reply, and in the same write a frame nobody asked for
        conn.sendall(frame[6:] + b"\x01" + struct.pack(">Q", 4 + 5) + stale + b"stale")
        t.join(5)
        assert got == [b"order 2"]
        assert req.exchange(b"result 2") is None  # type: ignore[attr-defined]
        conn.settimeout(0.2)
        with pytest.raises(socket.timeout):
            conn.recv(100)  # nothing was sent
        conn.settimeout(None)
        t = threading.Thread(target=lambda: (req.send(b"result 2"),  # type: ignore[attr-defined]
                                             got.append(req.recv())),  # type: ignore[attr-defined]
                             daemon=True)
        t.start()
        rid2, body = _read_request(conn)
        assert body == b"result 2"
        _reply(conn, rid2, b"order 3")
        t.join(5)
        assert got == [b"order 2", b"order 3"]  # the buffered stale frame was dropped


def wait_for_conn(req: object, timeout: float = 5.0) -> bool:
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        if req._conn is not None:  # type: ignore[attr-defined]
            return True
        time.sleep(0.01)
    return False
