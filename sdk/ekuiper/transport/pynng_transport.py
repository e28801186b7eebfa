"""The transport on top of pynng (nng's C library), as the official SDK uses it."""

from __future__ import annotations

import errno
import threading
import time

import pynng

from .base import (
    PullSocket,
    PushSocket,
    RepSocket,
    ReqSocket,
    Transport,
    TransportClosed,
    TransportError,
    TransportStateError,
    TransportTimeout,
    max_msg_size,
)

TYPE_CHECKING = False  # typing is not loaded at run time on the start path (docs/architecture.md)
if TYPE_CHECKING:
    from typing import Callable, Optional, Type, TypeVar
    T = TypeVar("T")


def _call(fn: Callable[[], T], bad_state: Type[TransportError] = TransportTimeout) -> T:
    """``fn()`` with pynng's exceptions mapped to the transport's; ``bad_state`` is what
    nng's protocol-state error becomes (a REQ's: a timeout, see below; a REP's: its own)."""
    try:
        return fn()
    except pynng.Timeout as e:
        raise TransportTimeout(str(e)) from None
    except pynng.Closed as e:
        raise TransportClosed(str(e)) from None
    except pynng.BadState as e:
        # A REQ recv after a timeout, without a new send: the caller must send again.
        raise bad_state(f"protocol state: {e}") from None
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
    # The cause says "address in use" the way the native transport's does (an OSError).
    cause = (OSError(errno.EADDRINUSE, str(last)) if isinstance(last, pynng.AddressInUse)
             else last)
    raise TransportError(f"cannot {what} {url}: {last}") from cause


def _ms(timeout_ms: Optional[int]) -> int:
    """nng's timeout for ours: None (and any negative) is -1, for ever."""
    return -1 if timeout_ms is None or timeout_ms < 0 else timeout_ms


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
    def __init__(self, sock: pynng.Socket, recv_timeout_ms: Optional[int] = None) -> None:
        self._sock = sock
        self.recv_timeout_ms = recv_timeout_ms

    @property  # type: ignore[override]
    def recv_timeout_ms(self) -> Optional[int]:
        return self._recv_timeout_ms

    @recv_timeout_ms.setter
    def recv_timeout_ms(self, value: Optional[int]) -> None:
        self._sock.recv_timeout = _ms(value)
        self._recv_timeout_ms = value

    def recv(self) -> bytes:
        # recv_msg, not recv: pynng's recv() fails on a 0-byte message (NULL buffer).
        return _call(lambda: self._sock.recv_msg().bytes)

    def close(self) -> None:
        self._sock.close()


class _Rep(_Pull, RepSocket):
    """A listening REP socket: receives as the PULL does, and replies."""

    def __init__(self, sock: pynng.Rep0, recv_timeout_ms: Optional[int],
                 send_timeout_ms: Optional[int]) -> None:
        super().__init__(sock, recv_timeout_ms)
        self.send_timeout_ms = send_timeout_ms

    @property  # type: ignore[override]
    def send_timeout_ms(self) -> Optional[int]:
        return self._send_timeout_ms

    @send_timeout_ms.setter
    def send_timeout_ms(self, value: Optional[int]) -> None:
        self._sock.send_timeout = _ms(value)
        self._send_timeout_ms = value

    def send(self, data: bytes) -> None:
        # BadState: no request outstanding; the caller receives one first.
        _call(lambda: self._sock.send(data), TransportStateError)


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
        sock.recv_max_size = max_msg_size()  # nng drops a pipe that exceeds it
        pull = _Pull(sock, recv_timeout_ms)
        try:
            _retry("listen on", url, lambda: sock.listen(url), retries, interval_s)
        except TransportError:
            sock.close()
            raise
        return pull

    def listen_rep(self, url: str, *, retries: int, interval_s: float,
                   recv_timeout_ms: Optional[int] = None,
                   send_timeout_ms: Optional[int] = None) -> RepSocket:
        sock = pynng.Rep0()
        sock.recv_max_size = max_msg_size()  # nng drops a pipe that exceeds it
        rep = _Rep(sock, recv_timeout_ms, send_timeout_ms)
        try:
            _retry("listen on", url, lambda: sock.listen(url), retries, interval_s)
        except TransportError:
            sock.close()
            raise
        return rep
