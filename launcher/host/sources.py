"""The host end of a source instance's data channel (eKuiper's ``PortableSource``)."""

from __future__ import annotations

import time

from ekuiper import protocol
from ekuiper.protocol import Meta, SourceMessage
from ekuiper.transport import TransportTimeout

from ..errors import HostTimeout
from .ipc import listen_pull

TYPE_CHECKING = False  # typing is not loaded at run time on the start path (docs/architecture.md)
if TYPE_CHECKING:
    from typing import Callable, Iterator, Optional

#: The longest single wait in ``recv``: the bound on how late a signal is handled.
RECV_SLICE_S = 0.1


class SourceStream:
    """PULL listener for one rule instance; yields decoded tuples and errors.

    Undecodable data and ``{"error": ...}`` messages come out as ``SourceMessage`` with
    ``error`` set, as eKuiper reports them to the rule, and the stream goes on.
    """

    def __init__(self, symbol: str, meta: Meta, ipc_dir: Optional[str] = None) -> None:
        self.symbol = symbol
        self.meta = meta
        self.url = protocol.data_url(meta, ipc_dir)
        self.sock = listen_pull(self.url)
        self.received = 0
        self.errors = 0

    def recv(self, timeout_s: Optional[float] = None) -> SourceMessage:
        """The next message; waits in slices so Ctrl-C and SIGTERM are handled at once
        (a signal handler runs only when the wait returns to Python)."""
        msg = self.recv_unless(timeout_s, None)
        assert msg is not None
        return msg

    def recv_unless(self, timeout_s: Optional[float],
                    stopping: Optional[Callable[[], bool]]) -> Optional[SourceMessage]:
        """``recv``, or None as soon as ``stopping()`` answers true: it is asked at every
        slice, so a stop is seen within ``RECV_SLICE_S`` even while the source is quiet."""
        end = None if timeout_s is None else time.monotonic() + timeout_s
        while True:
            if stopping is not None and stopping():
                return None
            left = RECV_SLICE_S if end is None else min(RECV_SLICE_S, end - time.monotonic())
            if left <= 0:
                raise HostTimeout(f"source {self.symbol}: no data within {timeout_s:.1f} s")
            self.sock.recv_timeout_ms = max(1, int(left * 1000))
            try:
                data = self.sock.recv()
                break
            except TransportTimeout:
                continue
        msg = protocol.decode_source_message(data)
        if msg.error is not None:
            self.errors += 1
        else:
            self.received += 1
        return msg

    def messages(self, count: Optional[int] = None, timeout_s: Optional[float] = None,
                 include_errors: bool = True) -> Iterator[SourceMessage]:
        """Up to ``count`` messages; ``timeout_s`` bounds the wait for each one."""
        n = 0
        while count is None or n < count:
            msg = self.recv(timeout_s)
            if msg.error is not None and not include_errors:
                continue
            n += 1
            yield msg

    def drain(self, quiet_s: float = 0.05) -> int:
        """Discard what is queued (until ``quiet_s`` passes without data); returns how many."""
        n = 0
        end = time.monotonic() + 5
        while time.monotonic() < end:
            try:
                self.recv(quiet_s)
            except HostTimeout:
                break
            n += 1
        return n

    def close(self) -> None:
        self.sock.close()
