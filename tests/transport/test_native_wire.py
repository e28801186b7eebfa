"""The native transport on the wire: against C nng (nngcat), pynng, and raw byte checks.

The contract tests already run native against pynng peers in every role; these add the
C library through ``nngcat`` (a different nng build, 1.5.2, than pynng's), a host process
that is killed and restarted while the plugin runs, and the exact bytes on the wire.
"""

from __future__ import annotations

import os
import signal
import socket
import struct
import subprocess
import sys
import threading
import time
from typing import List, Tuple

import pynng
import pytest

from ekuiper.transport import TransportError, TransportTimeout, get_transport, sp

from .conftest import read_exact

BIG = 16 << 20
native = get_transport("native")


def _path(url: str) -> str:
    return url[len("ipc://"):]


def _payload(n: int) -> bytes:
    return (bytes(range(251)) * (n // 251 + 1))[:n]


def _req(url: str, recv_ms: int = 3000, send_ms: int = 3000):
    return native.dial_req(url, recv_timeout_ms=recv_ms, send_timeout_ms=send_ms,
                           retries=50, interval_s=0.02)


def _push(url: str, send_ms: int = 3000):
    return native.dial_push(url, send_timeout_ms=send_ms, retries=50, interval_s=0.02)


# --- against C nng (nngcat) ---------------------------------------------------------

def test_req_against_nngcat_rep(ipc_url, procs) -> None:
    url = ipc_url("rep")
    reply = _payload(BIG)
    big = os.path.join(os.path.dirname(_path(url)), "reply.bin")
    with open(big, "wb") as f:
        f.write(reply)
    out = big + ".out"
    with open(out, "wb") as f:  # a file, not a pipe: nngcat must never block printing
        rep = procs.nngcat("--rep", "--listen", url, "--raw", "-Z", "0", "--file", big,
                           listen_path=_path(url), stdout=f)
    req = _req(url)
    try:
        sent = [b"", b"x", _payload(BIG)]
        for data in sent:
            req.send(data)
            assert req.recv() == reply  # 16 MiB in each direction
    finally:
        req.close()
    procs.kill(rep, signal.SIGTERM)
    with open(out, "rb") as f:
        assert f.read() == b"".join(sent)  # --raw: requests printed back to back


def test_push_against_nngcat_pull(ipc_url, procs, wait_for) -> None:
    url = ipc_url("pull")
    out = os.path.join(os.path.dirname(_path(url)), "pull.out")
    sent = [b"", b"y", _payload(BIG), b"last"]
    want = b"".join(sent)
    with open(out, "wb") as f:
        pull = procs.nngcat("--pull", "--listen", url, "--raw", "-Z", "0",
                            listen_path=_path(url), stdout=f)
    push = _push(url)
    try:
        for data in sent:
            push.send(data)
        assert wait_for(lambda: os.path.getsize(out) >= len(want), 5.0)
    finally:
        push.close()
    procs.kill(pull, signal.SIGTERM)
    with open(out, "rb") as f:
        assert f.read() == want


def test_pull_against_nngcat_pushes(ipc_url, procs) -> None:
    url = ipc_url("sink")
    pull = native.listen_pull(url, retries=3, interval_s=0.02, recv_timeout_ms=5000)
    big = os.path.join(os.path.dirname(_path(url)), "msg.bin")
    with open(big, "wb") as f:
        f.write(_payload(BIG))
    try:
        pushers = [procs.nngcat("--push", "--dial", url, "--data", d) for d in ("", "z")]
        pushers.append(procs.nngcat("--push", "--dial", url, "--file", big))
        got = sorted((pull.recv() for _ in range(3)), key=len)
        assert got == [b"", b"z", _payload(BIG)]
        for p in pushers:
            assert p.wait(5) == 0
    finally:
        pull.close()
    assert not os.path.exists(_path(url))


def test_wrong_protocols_refused_by_and_from_nngcat(ipc_url, procs) -> None:
    # native REQ dialing a C PULL: refused at the connection header
    url = ipc_url("x")
    procs.nngcat("--pull", "--listen", url, listen_path=_path(url))
    with pytest.raises(TransportError, match="pull"):
        native.dial_req(url, recv_timeout_ms=200, send_timeout_ms=200, retries=1,
                        interval_s=0.01)
    # a C REQ dialing a native PULL: refused, nothing delivered
    url2 = ipc_url("y")
    pull = native.listen_pull(url2, retries=1, interval_s=0.01, recv_timeout_ms=500)
    try:
        req = procs.nngcat("--req", "--dial", url2, "--data", "hi", "--send-timeout", "0.3",
                           "--recv-timeout", "0.3")
        with pytest.raises(TransportTimeout):
            pull.recv()
        req.wait(5)
    finally:
        pull.close()


def test_req_follows_a_killed_and_restarted_nng_host(ipc_url, procs, wait_for) -> None:
    url = ipc_url("ctl")
    host = procs.nngcat("--rep", "--listen", url, "--data", "cmd1", listen_path=_path(url))
    req = _req(url, recv_ms=1000, send_ms=1000)
    try:
        req.send(b"handshake")
        assert req.recv() == b"cmd1"
        procs.kill(host)  # SIGKILL: the socket file stays behind, stale
        assert os.path.exists(_path(url))
        assert wait_for(lambda: not req.connected, 2.0)
        host = procs.nngcat("--rep", "--listen", url, "--data", "cmd2", listen_path=_path(url))
        assert wait_for(lambda: req.connected, 3.0), "no re-dial to the restarted host"
        req.send(b"ok")
        assert req.recv() == b"cmd2"
    finally:
        req.close()


_HOST = r"""
import sys, pynng
rep = pynng.Rep0(listen=sys.argv[1]); rep.recv_max_size = 0
print("up", flush=True)
while True:
    m = rep.recv_msg().bytes
    rep.send(b"host%s:" % sys.argv[2].encode() + m)
"""


def test_serving_loop_survives_host_restarts(ipc_url, procs) -> None:
    """The runtime's inverted request loop, over native, while a pynng host process is
    killed and started again twice: every call after a restart is answered."""
    url = ipc_url("func")

    def start_host(n: int) -> subprocess.Popen:
        p = procs.start([sys.executable, "-c", _HOST, url, str(n)], stdout=subprocess.PIPE)
        assert p.stdout is not None and p.stdout.readline() == b"up\n"
        return p

    host = start_host(0)
    req = _req(url, recv_ms=500, send_ms=500)
    answers: List[bytes] = []
    try:
        for gen in range(3):
            deadline = time.monotonic() + 5
            while time.monotonic() < deadline:
                try:
                    req.send(b"call")
                    answers.append(req.recv())
                    if answers[-1].startswith(b"host%d" % gen) and len(answers) % 5 == 0:
                        break
                except TransportError:
                    time.sleep(0.02)  # as reqloop does: retry until the host is back
            if gen < 2:
                procs.kill(host)
                host = start_host(gen + 1)
        assert any(a.startswith(b"host1:") for a in answers)
        assert answers[-1] == b"host2:call"
    finally:
        req.close()


# --- exact bytes ------------------------------------------------------------------------

def _raw_listener(path: str) -> socket.socket:
    s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    s.bind(path)
    s.listen(4)
    s.settimeout(5)
    return s


def _read_msg(c: socket.socket) -> Tuple[int, bytes]:
    kind, length = struct.unpack(">BQ", read_exact(c, 9))
    return kind, read_exact(c, length)


def test_req_bytes_on_the_wire(ipc_url) -> None:
    url = ipc_url("raw")
    lst = _raw_listener(_path(url))
    result: List[object] = []
    t = threading.Thread(target=lambda: result.append(_req(url, recv_ms=2000)), daemon=True)
    t.start()
    c, _ = lst.accept()
    c.settimeout(5)
    try:
        assert read_exact(c, 8) == b"\x00SP\x00\x00\x30\x00\x00"  # REQ = 0x30
        c.sendall(b"\x00SP\x00\x00\x31\x00\x00")  # REP = 0x31
        t.join(5)
        req = result[0]
        req.send(b"hello")  # type: ignore[attr-defined]
        kind, msg = _read_msg(c)
        assert kind == 1 and len(msg) == 4 + 5 and msg[4:] == b"hello"
        rid = struct.unpack(">I", msg[:4])[0]
        assert rid & 0x80000000, "request ids have the high bit set"
        # A reply to another id is dropped; the right one (split across writes) is taken.
        stale = struct.pack(">I", rid ^ 1) + b"stale"
        c.sendall(struct.pack(">BQ", 1, len(stale)) + stale)
        good = struct.pack(">I", rid) + b"world"
        frame = struct.pack(">BQ", 1, len(good)) + good
        c.sendall(frame[:3])
        time.sleep(0.05)
        c.sendall(frame[3:])
        assert req.recv() == b"world"  # type: ignore[attr-defined]
        req.send(b"")  # type: ignore[attr-defined]
        kind, msg = _read_msg(c)
        rid2 = struct.unpack(">I", msg[:4])[0]
        assert len(msg) == 4 and rid2 != rid and rid2 & 0x80000000
        # A message type other than 1 is a protocol violation: the pipe is dropped.
        c.sendall(struct.pack(">BQ", 2, 4) + msg[:4])
        with pytest.raises(TransportError):
            req.recv()  # type: ignore[attr-defined]
        assert c.recv(10) == b""  # closed by the native side
        assert not req.connected  # type: ignore[attr-defined]
        req.close()  # type: ignore[attr-defined]
    finally:
        c.close()
        lst.close()


def test_pull_refuses_a_non_sp_peer_and_keeps_serving(ipc_url) -> None:
    url = ipc_url("raw")
    pull = native.listen_pull(url, retries=1, interval_s=0.01, recv_timeout_ms=2000)
    try:
        bad = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        bad.settimeout(5)
        bad.connect(_path(url))
        assert read_exact(bad, 8) == b"\x00SP\x00\x00\x51\x00\x00"  # PULL = 0x51
        bad.sendall(b"GET / HTTP/1.0\r\n\r\n")
        assert bad.recv(10) == b""  # refused
        bad.close()
        good = pynng.Push0(send_timeout=2000)
        good.dial(url, block=True)
        good.send(b"fine")
        assert pull.recv() == b"fine"
        good.close()
    finally:
        pull.close()


def test_connection_header_parsing() -> None:
    assert sp.connection_header(sp.PROTO_PUSH) == b"\x00SP\x00\x00\x50\x00\x00"
    assert sp.parse_connection_header(b"\x00SP\x00\x00\x51\x00\x00") == sp.PROTO_PULL
    for bad in (b"\x00SP\x01\x00\x51\x00\x00", b"\x00SP\x00\x00\x51\x00\x01", b"HTTP/1.0"):
        with pytest.raises(sp.ProtocolViolation):
            sp.parse_connection_header(bad)
    with pytest.raises(TransportError):
        sp.ipc_path("tcp://127.0.0.1:1")


def test_no_threads_or_descriptors_left_behind(ipc_url, wait_for) -> None:
    def fds() -> int:
        return len(os.listdir("/proc/self/fd"))

    before_fds, before_threads = fds(), threading.active_count()
    for _ in range(3):
        url = ipc_url("leak")
        rep = pynng.Rep0(listen=url)
        req = _req(url)
        # A round trip first: nng 1.11 (pynng 0.9.0) leaks the descriptor of a pipe that
        # is still negotiating when its listener closes, which would count against us.
        req.send(b"q")
        rep.send(rep.recv())
        assert req.recv() == b"q"
        rep.close()
        pull = native.listen_pull(ipc_url("leak2"), retries=1, interval_s=0.01)
        push = _push(ipc_url("leak2"))
        push.send(b"m")
        assert pull.recv() == b"m"
        assert wait_for(lambda r=req: not r.connected)  # it notices, and starts re-dialling
        for s in (req, push, pull):
            s.close()
    time.sleep(0.1)
    assert threading.active_count() <= before_threads + 1  # pynng may keep its own
    assert fds() <= before_fds + 2
