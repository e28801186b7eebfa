"""The journal of started symbols, replayed after a plugin restart (eKuiper's ``commands``).

eKuiper keys its journal by (ruleId, opId, instanceId) only, so two functions of one plugin
(both with empty meta) overwrite each other and only one comes back after a restart. We key
by symbol and type as well.
"""

from __future__ import annotations

import threading
import time
from collections import Counter

from ekuiper import protocol
from ekuiper.protocol import Control
from ekuiper.record import field, record

TYPE_CHECKING = False  # typing is not loaded at run time on the start path (docs/architecture.md)
if TYPE_CHECKING:
    from typing import Dict, List, Optional, Tuple
    Key = Tuple[str, str, str, int, str]



def journal_key(ctrl: Control) -> Key:
    m = ctrl.meta
    return (ctrl.plugin_type, m.rule_id, m.op_id, m.instance_id, ctrl.symbol_name)


@record
class ReplayResult:
    control: Control
    ok: bool
    error: Optional[str] = None
    at: float = field(default_factory=time.time)

    def to_dict(self) -> dict:
        return {"symbol": self.control.symbol_name, "type": self.control.plugin_type,
                "meta": self.control.meta.to_dict(), "ok": self.ok, "error": self.error,
                "at": self.at}


class Journal:
    """Started symbols in start order, with the exact command bytes that started them."""

    def __init__(self) -> None:
        self._entries: Dict[Key, Tuple[Control, bytes]] = {}
        self._lock = threading.Lock()

    def record_start(self, ctrl: Control, cmd: Optional[bytes] = None) -> bytes:
        """Journal a successful start; ``cmd`` keeps the exact bytes a relay received."""
        cmd = cmd or protocol.encode_command(protocol.CMD_START, ctrl)
        with self._lock:
            self._entries[journal_key(ctrl)] = (ctrl, cmd)
        return cmd

    def record_stop(self, ctrl: Control) -> None:
        with self._lock:
            self._entries.pop(journal_key(ctrl), None)

    def entries(self) -> List[Tuple[Control, bytes]]:
        with self._lock:
            return list(self._entries.values())

    def __len__(self) -> int:
        return len(self._entries)

    def ref_counts(self) -> Dict[str, int]:
        """Per-rule reference counts, as eKuiper's plugin status shows them."""
        with self._lock:
            return dict(Counter(c.meta.rule_id for c, _ in self._entries.values()
                                if c.meta.rule_id))

    def symbols(self) -> List[dict]:
        return [{"symbol": c.symbol_name, "type": c.plugin_type, "meta": c.meta.to_dict()}
                for c, _ in self.entries()]
