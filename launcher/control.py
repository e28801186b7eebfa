"""The host end of a plugin's control channel (eKuiper's ``NanomsgReqChannel``)."""

from __future__ import annotations

import threading
import time
from typing import Callable, Optional

import pynng

from ekuiper import protocol

from .errors import CommandError, HostTimeout
from .ipc import listen, recv_until


class ControlChannel:
    """REP socket the plugin dials. Thread-safe: one command in flight at a time.

    The plugin holds the REQ end, so every command travels as a *reply* and its result as
    the plugin's next *request*. A result starting with ``h`` is a stale keep-alive
    handshake: discard it and send the command again as the reply to it.
    """

    def __init__(self, plugin_name: str, ipc_dir: Optional[str] = None) -> None:
        self.plugin_name = plugin_name
        self.url = protocol.control_url(plugin_name, ipc_dir)
        self.sock = listen(pynng.Rep0(), self.url)
        self.lock = threading.Lock()

    def handshake(self, timeout_s: float, alive: Optional[Callable[[], bool]] = None) -> None:
        """Wait for the plugin's first ``handshake`` (eKuiper's ``initTimeout``)."""
        with self.lock:
            recv_until(self.sock, time.monotonic() + timeout_s, alive,
                       f"plugin {self.plugin_name}: handshake")

    def request(self, command: bytes, timeout_s: float,
                alive: Optional[Callable[[], bool]] = None, what: str = "command") -> bytes:
        """Send one command; return the plugin's result bytes as they came (``ok`` or not)."""
        deadline = time.monotonic() + timeout_s
        label = f"plugin {self.plugin_name}: {what}"
        with self.lock:
            while True:
                try:
                    self.sock.send(command)
                except pynng.BadState:
                    # No outstanding request (a previous wait timed out, or the plugin
                    # restarted): take the next one, discard it, then send.
                    recv_until(self.sock, deadline, alive, label)
                    self.sock.send(command)
                result = recv_until(self.sock, deadline, alive, label)
                if not protocol.is_stale_handshake(result):
                    return result

    def send_command(self, command: bytes, timeout_s: float,
                     alive: Optional[Callable[[], bool]] = None, what: str = "command") -> None:
        """Send one command and wait for its result; raise CommandError on a non-ok result."""
        result = self.request(command, timeout_s, alive, what)
        if result != protocol.REPLY_OK:
            raise CommandError(f"plugin {self.plugin_name}: {what} failed: "
                               f"{result.decode('utf-8', 'replace').strip()}")

    def ping(self, timeout_s: float, alive: Optional[Callable[[], bool]] = None) -> Optional[float]:
        """The liveness probe; the round trip in seconds, or None when a command is in flight.

        A command in flight (a source start may take seconds) holds the channel; probing
        behind it would time out on a healthy plugin, so the probe is skipped instead.
        """
        if not self.lock.acquire(blocking=False):
            return None
        self.lock.release()
        t0 = time.monotonic()
        self.send_command(protocol.PING_COMMAND, timeout_s, alive, "ping")
        return time.monotonic() - t0

    def close(self) -> None:
        self.sock.close()


__all__ = ["ControlChannel", "CommandError", "HostTimeout"]
