"""The host end of a plugin's control channel (eKuiper's ``NanomsgReqChannel``)."""

from __future__ import annotations

import json
import time

from ekuiper import protocol
from ekuiper.record import field, record

from ..errors import CommandError
from ..settings import ERROR_TEXT_MAX_CHARS
from .channels import RepChannel

TYPE_CHECKING = False  # typing is not loaded at run time on the start path (docs/architecture.md)
if TYPE_CHECKING:
    from typing import Any, Dict, List, Optional

    from .channels import Alive

#: A ping answer larger than this is not read as liveness (a hostile plugin stays bounded).
MAX_PING_REPLY = 1024 * 1024


@record(frozen=True)
class Probe:
    """One answered ping: the round trip and, from ekl's SDK, each symbol's liveness.

    ``symbols`` is None for the official SDK (it answers a plain ``ok``); otherwise one
    dict per running symbol with at least ``kind``, ``symbol``, ``rule``, ``busy_s`` (how
    long its current call or record has run, None when idle) and ``failed``.
    """

    rtt_s: float
    symbols: Optional[List[Dict[str, Any]]] = field(default=None)

    def hung(self, call_timeout_s: float) -> Optional[Dict[str, Any]]:
        """The first function or sink whose current call/record outlived the timeout."""
        for s in self.symbols or ():
            busy = s.get("busy_s")
            if isinstance(busy, (int, float)) and busy > call_timeout_s:
                return s
        return None

    def failed(self, kind: str, symbol: str) -> Optional[str]:
        """Why ``symbol`` stopped by itself (a source whose open raised), if it did."""
        for s in self.symbols or ():
            if s.get("kind") == kind and s.get("symbol") == symbol and s.get("failed"):
                return str(s["failed"])
        return None


#: Per-symbol entries of a ping answer kept (more are dropped: a status file stays small).
MAX_PING_SYMBOLS = 512


def _clean_symbol(s: Dict[str, Any]) -> Dict[str, Any]:
    """Scalars only, texts cut: the entry lands in the status file and the metrics."""
    out: Dict[str, Any] = {}
    for k, v in list(s.items())[:32]:
        if not isinstance(k, str) or len(k) > 64:
            continue
        if isinstance(v, str):
            v = v[:ERROR_TEXT_MAX_CHARS]
        elif not (v is None or isinstance(v, (bool, int, float))):
            continue
        out[k] = v
    return out


def parse_ping_reply(result: bytes, plugin_name: str) -> Optional[List[Dict[str, Any]]]:
    """None for the official SDK's ``ok``; the symbol list for ekl's JSON answer."""
    if result == protocol.REPLY_OK:
        return None
    if result[:1] == b"{" and len(result) <= MAX_PING_REPLY:
        try:
            d = json.loads(result)
        except (ValueError, RecursionError):
            d = None
        if isinstance(d, dict) and d.get("ok") is True:
            syms = d.get("symbols")
            if not isinstance(syms, list):
                return []
            return [_clean_symbol(x) for x in syms[:MAX_PING_SYMBOLS] if isinstance(x, dict)]
    raise CommandError(f"plugin {plugin_name}: ping failed: "
                       f"{result[:200].decode('utf-8', 'replace').strip()}")


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
        """The liveness probe; the round trip in seconds, or None when a command is in flight."""
        p = self.probe(timeout_s, alive)
        return None if p is None else p.rtt_s

    def probe(self, timeout_s: float, alive: Alive = None) -> Optional[Probe]:
        """Ping; the answer with per-symbol liveness, or None when a command is in flight.

        A command in flight (a source start may take seconds) holds the channel; probing
        behind it would time out on a healthy plugin, so the probe is skipped instead.
        """
        if self.busy():
            return None
        t0 = time.monotonic()
        result = self.request(protocol.PING_COMMAND, timeout_s, alive, "ping")
        return Probe(time.monotonic() - t0, parse_ping_reply(result, self.plugin_name))
