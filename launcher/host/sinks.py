"""The host end of a sink instance: data PUSH and ack PULL (eKuiper's ``PortableSink``)."""

from __future__ import annotations

import time

from ekuiper import protocol
from ekuiper.protocol import Meta
from ekuiper.transport import PushSocket, TransportError, TransportTimeout, get_transport

from ..errors import AckError, EklError, HostTimeout
from .ipc import SINK_DIAL_INTERVAL_S, SINK_DIAL_RETRIES, listen_pull

TYPE_CHECKING = False  # typing is not loaded at run time on the start path (docs/architecture.md)
if TYPE_CHECKING:
    from typing import Any, Optional, Union


class SinkWriter:
    """Writes records to one sink instance; with ``require_ack`` waits for each ack.

    The ack listener exists before the start command (the plugin dials it while
    starting); the data dialer only after the plugin answered ``ok`` (it listens then).
    """

    def __init__(self, symbol: str, meta: Meta, ipc_dir: Optional[str] = None,
                 require_ack: bool = False, send_timeout_s: float = 5.0,
                 ack_timeout_s: float = 5.0) -> None:
        self.symbol = symbol
        self.meta = meta
        self.ipc_dir = ipc_dir
        self.require_ack = require_ack
        self.send_timeout_s = send_timeout_s
        self.ack_timeout_s = ack_timeout_s
        self.ack_url = protocol.ack_url(meta, ipc_dir)
        self.url = protocol.data_url(meta, ipc_dir)
        self.ack_sock = listen_pull(self.ack_url)
        self.sock: Optional[PushSocket] = None
        self.written = 0

    def connect(self) -> None:
        """Dial the plugin's PULL listener (after the start command succeeded)."""
        try:
            self.sock = get_transport().dial_push(
                self.url, send_timeout_ms=int(self.send_timeout_s * 1000),
                retries=SINK_DIAL_RETRIES, interval_s=SINK_DIAL_INTERVAL_S)
        except TransportError as e:
            raise EklError(f"sink {self.symbol}: cannot dial {self.url}: {e}") from None

    def write(self, record: Union[bytes, Any]) -> None:
        """Send one message (bytes as they are, anything else JSON-encoded)."""
        if self.sock is None:
            raise EklError(f"sink {self.symbol}: not connected")
        data = record if isinstance(record, (bytes, bytearray)) else protocol.std_dumps(record)
        try:
            self.sock.send(bytes(data))
        except TransportTimeout:
            raise HostTimeout(f"sink {self.symbol}: the plugin did not take the message within "
                              f"{self.send_timeout_s:.1f} s") from None
        self.written += 1
        if self.require_ack:
            err = self.wait_ack()
            if err is not None:
                raise AckError(f"sink {self.symbol}: {err}")

    def wait_ack(self, timeout_s: Optional[float] = None) -> Optional[str]:
        """The next ack: None for success, the error text otherwise."""
        t = self.ack_timeout_s if timeout_s is None else timeout_s
        self.ack_sock.recv_timeout_ms = max(1, int(t * 1000))
        try:
            data = self.ack_sock.recv()
        except TransportTimeout:
            raise HostTimeout(f"sink {self.symbol}: no ack within {t:.1f} s") from None
        return protocol.decode_ack(data)

    def pending_acks(self, quiet_s: float = 0.05) -> int:
        """Count acks that arrived unasked (used to show that none pile up)."""
        n = 0
        end = time.monotonic() + 2
        while time.monotonic() < end:
            try:
                self.wait_ack(quiet_s)
            except HostTimeout:
                break
            n += 1
        return n

    def close(self) -> None:
        if self.sock is not None:
            self.sock.close()
        self.ack_sock.close()
