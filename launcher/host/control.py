"""The host end of a plugin's control channel (eKuiper's ``NanomsgReqChannel``)."""

from __future__ import annotations

import time
from typing import Optional

from ekuiper import protocol

from ..errors import CommandError
from .channels import Alive, RepChannel


def check_result(result: bytes, plugin_name: str, what: str) -> None:
    """Raise CommandError unless the plugin answered ``ok``."""
    if result != protocol.REPLY_OK:
        raise CommandError(f"plugin {plugin_name}: {what} failed: "
                           f"{result.decode('utf-8', 'replace').strip()}")


class ControlChannel(RepChannel):
    """The REP socket the plugin dials; start, stop and ping travel here."""

    def __init__(self, plugin_name: str, ipc_dir: Optional[str] = None) -> None:
        self.plugin_name = plugin_name
        super().__init__(protocol.control_url(plugin_name, ipc_dir))

    def handshake(self, timeout_s: float, alive: Alive = None) -> None:
        """Wait for the plugin's first ``handshake`` (eKuiper's ``initTimeout``)."""
        self.wait_request(timeout_s, alive, f"plugin {self.plugin_name}: handshake")

    def request(self, command: bytes, timeout_s: float, alive: Alive = None,
                what: str = "command") -> bytes:
        """Send one command; return the plugin's result bytes as they came (``ok`` or not)."""
        return self.exchange(command, timeout_s, alive, f"plugin {self.plugin_name}: {what}")

    def send_command(self, command: bytes, timeout_s: float, alive: Alive = None,
                     what: str = "command") -> None:
        """Send one command and wait for its result; raise CommandError on a non-ok result."""
        check_result(self.request(command, timeout_s, alive, what), self.plugin_name, what)

    def ping(self, timeout_s: float, alive: Alive = None) -> Optional[float]:
        """The liveness probe; the round trip in seconds, or None when a command is in flight.

        A command in flight (a source start may take seconds) holds the channel; probing
        behind it would time out on a healthy plugin, so the probe is skipped instead.
        """
        if self.busy():
            return None
        t0 = time.monotonic()
        self.send_command(protocol.PING_COMMAND, timeout_s, alive, "ping")
        return time.monotonic() - t0
