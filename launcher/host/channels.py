"""The host's half of an inverted request/reply channel (control and function channels).

The plugin holds the REQ end, so every command travels as a *reply* and its result comes
back as the plugin's next *request*. Written once here for both channel kinds: a result
starting with ``h`` is a stale keep-alive handshake (discard it and send the command again
as the reply to it), and a send without an outstanding request (a previous wait timed out,
or the plugin restarted) first takes the next request, then sends.
"""

from __future__ import annotations

import threading
import time

from ekuiper import protocol
from ekuiper.transport import TransportStateError, TransportTimeout

from ..errors import HostTimeout
from .ipc import listen_rep, recv_until

TYPE_CHECKING = False  # typing is not loaded at run time on the start path (docs/architecture.md)
if TYPE_CHECKING:
    from typing import Callable, Optional
    Alive = Optional[Callable[[], bool]]



class RepChannel:
    """A listening REP socket; one exchange in flight at a time (thread-safe)."""

    def __init__(self, url: str) -> None:
        self.url = url
        self.sock = listen_rep(url)
        self.lock = threading.Lock()

    def wait_request(self, timeout_s: float, alive: Alive, label: str) -> bytes:
        """The next request (the plugin's handshake)."""
        with self.lock:
            return recv_until(self.sock, time.monotonic() + timeout_s, alive, label)

    def exchange(self, data: bytes, timeout_s: float, alive: Alive, label: str) -> bytes:
        """Send ``data`` as the reply to the plugin's request; return its next request."""
        deadline = time.monotonic() + timeout_s
        with self.lock:
            while True:
                try:
                    self._send(data, deadline, label)
                except TransportStateError:  # no request outstanding
                    recv_until(self.sock, deadline, alive, label)
                    self._send(data, deadline, label)
                result = recv_until(self.sock, deadline, alive, label)
                if not protocol.is_stale_handshake(result):
                    return result

    def _send(self, data: bytes, deadline: float, label: str) -> None:
        """The reply, within the exchange's deadline: a plugin that asked and does not read
        (SIGSTOPped, or stuck) cannot hold the host's thread past it."""
        self.sock.send_timeout_ms = max(1, int((deadline - time.monotonic()) * 1000))
        try:
            self.sock.send(data)
        except TransportTimeout:
            raise HostTimeout(f"{label}: the plugin did not take the command in time") from None

    def busy(self) -> bool:
        """True while an exchange is in flight (its lock is held)."""
        if not self.lock.acquire(blocking=False):
            return True
        self.lock.release()
        return False

    def close(self) -> None:
        self.sock.close()
