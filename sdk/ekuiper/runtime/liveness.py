"""Per-symbol liveness, reported in the answer to the host's ``ping``.

A ``ping`` answered by the control thread only proves the control thread lives: a
function whose ``exec`` blocks forever, or a sink stuck in ``collect``, leaves it
answering ``ok`` while no data moves. So each running symbol carries a ``Beat`` that the
places where calls, records and emits happen touch (two monotonic-clock reads per call),
and the ping answer lists them. The host compares ``busy_s`` (how long the current call
or record has been running) with its call timeout and restarts a hung plugin.

The answer is a JSON object (``{"ok": true, "liveness": 1, ...}``); the official SDK
answers the plain ``ok``, and the host accepts both. Every per-symbol entry is an object,
so later fields (counters) are additions a reader that does not know them ignores.
"""

from __future__ import annotations

import json
import os
import time

TYPE_CHECKING = False  # typing is not loaded at run time on the start path (docs/architecture.md)
if TYPE_CHECKING:
    from typing import Any, Dict, Iterable, List, Optional

#: Version of the reply's shape; readers accept any version >= 1 and ignore unknown keys.
LIVENESS_VERSION = 1
#: The name of each kind's main counter in the ping answer (and the status file).
COUNTER_OF = {"source": "messages", "sink": "records", "func": "calls"}
#: The failure text kept per symbol is cut here (a ping answer stays small).
MAX_FAILURE_CHARS = 1024


class Beat:
    """One symbol's pulse. Written by its own thread, read by the control thread.

    Plain attribute writes (atomic under the GIL) instead of a lock: the hot path of a
    function call or sink record must stay a few hundred nanoseconds.
    """

    __slots__ = ("busy_since", "last", "failed", "count", "acks", "errors", "last_error",
                 "last_error_at")

    def __init__(self) -> None:
        #: monotonic time the current call/record began; None when idle
        self.busy_since: Optional[float] = None
        #: monotonic time of the last finished call/record or emit; None if never
        self.last: Optional[float] = None
        #: why the symbol stopped by itself (a source whose open raised); None while fine
        self.failed: Optional[str] = None
        #: calls served (function), records received (sink) or messages emitted (source)
        self.count = 0
        #: acks sent (sink)
        self.acks = 0
        #: calls that failed, records whose collect failed or were nacked, errors emitted
        self.errors = 0
        self.last_error: Optional[str] = None
        #: wall-clock time of the last error (seconds since the epoch)
        self.last_error_at: Optional[float] = None

    # The hot paths (FunctionRuntime.handle, ContextImpl.emit) inline begin/end/emitted:
    # change them together.
    def begin(self) -> None:
        self.count += 1
        self.busy_since = time.monotonic()

    def end(self) -> None:
        self.last = time.monotonic()
        self.busy_since = None

    def emitted(self) -> None:
        self.count += 1
        self.last = time.monotonic()

    def acked(self) -> None:
        self.acks += 1

    def error(self, text: str) -> None:
        self.errors += 1
        self.last_error = text[:MAX_FAILURE_CHARS]
        self.last_error_at = time.time()

    def fail(self, text: str) -> None:
        self.failed = text[:MAX_FAILURE_CHARS]


def _age(now: float, t: Optional[float]) -> Optional[float]:
    return None if t is None else round(now - t, 3)


def entry(kind: str, key: str, symbol: str, rule: str, beat: Beat,
          now: Optional[float] = None) -> Dict[str, Any]:
    """One symbol's liveness as the ping answer carries it."""
    now = time.monotonic() if now is None else now
    out = {"key": key, "kind": kind, "symbol": symbol, "rule": rule,
           "busy_s": _age(now, beat.busy_since), "idle_s": _age(now, beat.last),
           "failed": beat.failed, COUNTER_OF.get(kind, "count"): beat.count,
           "errors": beat.errors, "last_error": beat.last_error,
           "last_error_at": beat.last_error_at}
    if kind == "sink":
        out["acks"] = beat.acks
    return out


def ping_reply(entries: Iterable[Dict[str, Any]]) -> bytes:
    """The answer to ``ping``: ``ok`` in spirit, with each running symbol's liveness."""
    symbols: List[Dict[str, Any]] = list(entries)
    return json.dumps({"ok": True, "liveness": LIVENESS_VERSION, "pid": os.getpid(),
                       "symbols": symbols}, separators=(",", ":")).encode()
