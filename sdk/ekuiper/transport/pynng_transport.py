"""The transport on top of pynng (nng's C library), as the official SDK uses it."""

from __future__ import annotations

import threading
import time
from typing import Callable, Optional, TypeVar

import pynng

from .base import (
    PullSocket,
    PushSocket,
    ReqSocket,
    Transport,
    TransportClosed,
    TransportError,
    TransportTimeout,
    max_msg_size,
)

T = TypeVar("T")


def _call(fn: Callable[[], T]) -> T:
    try:
        return fn()
    except pynng.Timeout as e:
        raise TransportTimeout(str(e)) from None
    except pynng.Closed as e:
        raise TransportClosed(str(e)) from None
    except pynng.BadState as e:
        # A REQ recv after a timeout, without a new send: the caller must send again.
        raise TransportTimeout(f"protocol state: {e}") from None
    except pynng.NNGException as e:
        raise TransportError(str(e)) from None


def _retry(what: str, url: str, attempt: Callable[[], None], retries: int,
           interval_s: float) -> None:
    last: Optional[Exception] = None
    for i in range(retries + 1):
        try:
            attempt()
            return
        except pynng.NNGException as e:
            last = e
        if i < retries:
            time.sleep(interval_s)
    raise TransportError(f"cannot {what} {url}: {last}")


class _PipeCounter:
    """Counts attached peers through nng's pipe callbacks."""

    def __init__(self, sock: pynng.Socket) -> None:
        self._n = 0
        self._lock = threading.Lock()
        sock.add_post_pipe_connect_cb(self._up)
        sock.add_post_pipe_remove_cb(self._down)

    def _up(self, _pipe: object) -> None:
        with self._lock:
            self._n += 1

    def _down(self, _pipe: object) -> None:
        with self._lock:
            self._n = max(0, self._n - 1)

    @property
    def count(self) -> int:
        return self._n


class _Req(ReqSocket):
    def __init__(self, sock: pynng.Req0) -> None:
        self._sock = sock
        self._pipes = _PipeCounter(sock)

    def send(self, data: bytes) -> None:
        _call(lambda: self._sock.send(data))

    def recv(self) -> bytes:
        # recv_msg, not recv: pynng's recv() fails on a 0-byte message (NULL buffer).
        return _call(lambda: self._sock.recv_msg().bytes)

    @property
    def connected(self) -> bool:
        return self._pipes.count > 0

    def close(self) -> None:
        self._sock.close()


class _Push(PushSocket):
    def __init__(self, sock: pynng.Push0) -> None:
        self._sock = sock

    def send(self, data: bytes) -> None:
        _call(lambda: self._sock.send(data))

    def close(self) -> None:
        self._sock.close()


class _Pull(PullSocket):
    def __init__(self, sock: pynng.Pull0) -> None:
        self._sock = sock

    def recv(self) -> bytes:
        # recv_msg, not recv: pynng's recv() fails on a 0-byte message (NULL buffer).
        return _call(lambda: self._sock.recv_msg().bytes)

    def close(self) -> None:
        self._sock.close()


class PynngTransport(Transport):
    name = "pynng"

    def dial_req(self, url: str, *, recv_timeout_ms: int, send_timeout_ms: int,
                 retries: int, interval_s: float) -> ReqSocket:
        # resend_time=0: no automatic re-sends; the keep-alive is ours to do.
        sock = pynng.Req0(recv_timeout=recv_timeout_ms, send_timeout=send_timeout_ms,
                          resend_time=0)
        sock.recv_max_size = max_msg_size()  # nng drops a pipe that exceeds it
        req = _Req(sock)  # callbacks first, so the dial's pipe is counted
        try:
            _retry("dial", url, lambda: sock.dial(url, block=True), retries, interval_s)
        except TransportError:
            sock.close()
            raise
        return req

    def dial_push(self, url: str, *, send_timeout_ms: int, retries: int,
                  interval_s: float) -> PushSocket:
        sock = pynng.Push0(send_timeout=send_timeout_ms)
        sock.recv_max_size = max_msg_size()  # nng drops a pipe that exceeds it
        try:
            _retry("dial", url, lambda: sock.dial(url, block=True), retries, interval_s)
        except TransportError:
            sock.close()
            raise
        return _Push(sock)

    def listen_pull(self, url: str, *, retries: int, interval_s: float,
                    recv_timeout_ms: Optional[int] = None) -> PullSocket:
        sock = pynng.Pull0()
        if recv_timeout_ms is not None:
            sock.recv_timeout = recv_timeout_ms
        sock.recv_max_size = max_msg_size()  # nng drops a pipe that exceeds it
        try:
            _retry("listen on", url, lambda: sock.listen(url), retries, interval_s)
        except TransportError:
            sock.close()
            raise
        return _Pull(sock)
