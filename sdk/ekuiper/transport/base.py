"""The socket roles of both halves of the protocol, as a small interface.

A plugin only ever dials REQ (control and function channels), dials PUSH (source data and
sink acks) and listens PULL (sink data). Keeping those behind this interface lets the SDK
swap pynng for a faster native implementation without touching the runtime. The host's
half adds one role, a listening REP (the control and function channels' other end), so
that a host can do without pynng too (importing it costs a CLI start 60-100 ms).
"""

from __future__ import annotations

import os
import re

TYPE_CHECKING = False  # typing is not loaded at run time on the start path (docs/architecture.md)
if TYPE_CHECKING:
    from typing import Optional

#: The largest message a plugin accepts, in bytes (``0``: no limit), for both transports.
MAX_MSG_SIZE_ENV = "EKUIPER_MAX_MSG_SIZE"
#: 64 MiB. eKuiper's mangos sockets would take any size (it sets their receive limit to 0;
#: mangos' own default is 1 MiB, nng's none): this is 64 times mangos' default and far
#: above any record batch or function argument eKuiper sends, while a stranger who
#: connects to a plugin's sink socket can no longer make it reserve gigabytes. A peer that
#: sends a larger message is disconnected, as nng does with its limit.
DEFAULT_MAX_MSG_SIZE = 64 << 20
_UNITS = {"": 1, "k": 1 << 10, "kb": 1 << 10, "kib": 1 << 10, "m": 1 << 20, "mb": 1 << 20,
          "mib": 1 << 20, "g": 1 << 30, "gb": 1 << 30, "gib": 1 << 30}
#: (variable, value) pairs already warned about: each bad setting is logged once
_warned_env: set = set()


def _bad_env(name: str, raw: str, what: str, *args: object) -> None:
    """Log once per variable and value that ``name=raw`` cannot be read; ``what`` says
    what it should be and which default is used instead."""
    if (name, raw) in _warned_env:
        return
    _warned_env.add((name, raw))
    import logging

    logging.getLogger("ekuiper").warning("%s=%r " + what, name, raw, *args)


def max_msg_size(raw: Optional[str] = None) -> int:
    """``$EKUIPER_MAX_MSG_SIZE`` in bytes (``64M``, ``1GiB`` and ``0`` for no limit are
    understood), else the default; a value that cannot be read is logged once and ignored."""
    if raw is None:
        raw = os.environ.get(MAX_MSG_SIZE_ENV)
    if raw is None or not raw.strip():
        return DEFAULT_MAX_MSG_SIZE
    m = re.fullmatch(r"\s*(\d+)\s*([a-zA-Z]*)\s*", raw)
    unit = _UNITS.get(m.group(2).lower()) if m else None
    if m is None or unit is None:
        _bad_env(MAX_MSG_SIZE_ENV, raw, "is not a size (bytes, or with K, M or G, or 0 for "
                 "no limit); using %d MiB", DEFAULT_MAX_MSG_SIZE >> 20)
        return DEFAULT_MAX_MSG_SIZE
    return int(m.group(1)) * unit


#: Microseconds a PUSH socket (a source's data, a sink's acks) may hold a message to send it
#: with the ones that follow it (native transport; ``0`` sends each one at once). Only
#: messages that come closer together than this wait at all: one after a quiet spell is
#: written before ``send`` returns. nng's own PUSH queues a message and writes it from its
#: I/O thread, so a sender never learns of a failed write at that send either.
PUSH_COALESCE_ENV = "EKUIPER_PUSH_COALESCE_US"
DEFAULT_PUSH_COALESCE_US = 500
#: the most a coalescing PUSH socket holds; a send waits (at most its send timeout) beyond
PUSH_COALESCE_MAX_BYTES = 1 << 20


def push_coalesce_s(raw: Optional[str] = None) -> float:
    """``$EKUIPER_PUSH_COALESCE_US`` in seconds (0: off); a value that cannot be read is
    logged once and the default used."""
    if raw is None:
        raw = os.environ.get(PUSH_COALESCE_ENV)
    if raw is None or not raw.strip():
        return DEFAULT_PUSH_COALESCE_US / 1e6
    try:
        us = int(raw.strip())
        if us < 0 or us > 1_000_000:
            raise ValueError(raw)
    except ValueError:
        _bad_env(PUSH_COALESCE_ENV, raw, "is not a number of microseconds from 0 to "
                 "1000000; using %d", DEFAULT_PUSH_COALESCE_US)
        return DEFAULT_PUSH_COALESCE_US / 1e6
    return us / 1e6


class TransportError(Exception):
    """A socket operation failed for a reason other than a timeout or a close."""


class TransportTimeout(TransportError, TimeoutError):
    """A send or receive did not complete within its timeout."""


class TransportClosed(TransportError):
    """The socket was closed (usually by another thread stopping the symbol)."""


class TransportStateError(TransportError):
    """The socket's protocol state forbids the operation now: a REP ``send`` with no
    request outstanding (nng's NNG_ESTATE, pynng's BadState). Its own class because a host
    recovers from it (it receives the next request first, then replies), while any other
    error means the channel is broken."""


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
    #: receive timeout in ms, read at each ``recv`` (``None``: wait for ever). Settable
    #: between calls because a host waits in short slices to notice a dead plugin.
    recv_timeout_ms: Optional[int] = None

    def recv(self) -> bytes:
        raise NotImplementedError

    def close(self) -> None:
        raise NotImplementedError


class RepSocket:
    """A listening REP socket (the host's end of the control and function channels).

    ``recv`` returns the next request from any peer and makes it the outstanding one (a
    later ``recv`` replaces it, as nng's rep0 does); ``send`` replies to it on the
    connection it came from, after which none is outstanding: ``send`` then raises
    :class:`TransportStateError`. A reply whose peer has gone is dropped silently.
    """

    #: receive timeout in ms, read at each ``recv`` (``None``: wait for ever)
    recv_timeout_ms: Optional[int] = None
    #: how long ``send`` may wait for the peer to take the reply (``None``: for ever)
    send_timeout_ms: Optional[int] = None

    def recv(self) -> bytes:
        raise NotImplementedError

    def send(self, data: bytes) -> None:
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

    def listen_rep(self, url: str, *, retries: int, interval_s: float,
                   recv_timeout_ms: Optional[int] = None,
                   send_timeout_ms: Optional[int] = None) -> RepSocket:
        """Listen REP on ``url``, trying ``retries`` more times ``interval_s`` apart.

        Fails with TransportError; when another process listens there, its ``__cause__``
        is an OSError with errno EADDRINUSE (with either transport), so a caller can
        say who is probably holding the address."""
        raise NotImplementedError
