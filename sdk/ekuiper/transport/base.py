"""The three socket roles a plugin needs, as a small interface.

A plugin only ever dials REQ (control and function channels), dials PUSH (source data and
sink acks) and listens PULL (sink data). Keeping those behind this interface lets the SDK
swap pynng for a faster native implementation without touching the runtime.
"""

from __future__ import annotations

from typing import Optional


class TransportError(Exception):
    """A socket operation failed for a reason other than a timeout or a close."""


class TransportTimeout(TransportError, TimeoutError):
    """A send or receive did not complete within its timeout."""


class TransportClosed(TransportError):
    """The socket was closed (usually by another thread stopping the symbol)."""


class ReqSocket:
    """A dialed REQ socket. ``recv`` after a timeout needs a fresh ``send`` first."""

    def send(self, data: bytes) -> None:
        raise NotImplementedError

    def recv(self) -> bytes:
        raise NotImplementedError

    @property
    def connected(self) -> bool:
        """Whether a peer is attached right now (used to notice that the host went away)."""
        raise NotImplementedError

    def close(self) -> None:
        raise NotImplementedError


class PushSocket:
    def send(self, data: bytes) -> None:
        raise NotImplementedError

    def close(self) -> None:
        raise NotImplementedError


class PullSocket:
    def recv(self) -> bytes:
        raise NotImplementedError

    def close(self) -> None:
        raise NotImplementedError


class Transport:
    """Factory for the plugin-side sockets. ``name`` is what ``EKUIPER_TRANSPORT`` selects."""

    name = "abstract"

    def dial_req(self, url: str, *, recv_timeout_ms: int, send_timeout_ms: int,
                 retries: int, interval_s: float) -> ReqSocket:
        raise NotImplementedError

    def dial_push(self, url: str, *, send_timeout_ms: int, retries: int,
                  interval_s: float) -> PushSocket:
        raise NotImplementedError

    def listen_pull(self, url: str, *, retries: int, interval_s: float,
                    recv_timeout_ms: Optional[int] = None) -> PullSocket:
        raise NotImplementedError
