"""The Context handed to running symbols."""

from __future__ import annotations

import logging
import time

from .. import protocol
from ..lazylog import one_line
from ..transport import PushSocket, TransportClosed, TransportError
from .context import Context
from .logs import log, symbol_logger

TYPE_CHECKING = False  # typing is not loaded at run time on the start path (docs/architecture.md)
if TYPE_CHECKING:
    from typing import Any, Dict, Optional

_encode_source_message = protocol.encode_source_message
_monotonic = time.monotonic


class ContextImpl(Context):
    """One per symbol instance (source/sink) or per function call site (funcId)."""

    def __init__(self, meta: protocol.Meta, symbol: str = "") -> None:
        self.meta = meta
        self.symbol = symbol
        self.emitter: Optional[PushSocket] = None
        self.ack_emitter: Optional[PushSocket] = None
        self.require_ack = False
        #: set by ack_ok/ack_error so the sink runtime can ack on the code's behalf on error
        self.acked = False
        self._logger: Optional[logging.Logger] = None
        self._warned_ack = False
        #: the symbol's liveness.Beat (set by its runtime); emits touch it
        self.beat: Optional[Any] = None

    # Names kept from the official SDK's ContextImpl.
    def set_emitter(self, emitter: PushSocket) -> None:
        self.emitter = emitter

    def set_ack_emitter(self, emitter: Optional[PushSocket]) -> None:
        self.ack_emitter = emitter

    def get_rule_id(self) -> str:
        return self.meta.rule_id

    def get_op_id(self) -> str:
        return self.meta.op_id

    def get_instance_id(self) -> int:
        return self.meta.instance_id

    def get_logger(self) -> logging.Logger:
        if self._logger is None:
            self._logger = symbol_logger(self.symbol, self.meta)
        return self._logger

    def emit(self, message: Dict[str, Any], meta: Optional[Dict[str, Any]] = None) -> None:
        emitter = self.emitter
        if emitter is None:
            raise RuntimeError("emit is only available to sources")
        if type(message) is not dict and not isinstance(message, dict):
            # eKuiper decodes message into a map; anything else would be a decode error there.
            self.emit_error(f"{self.symbol}: emit needs a dict message, got {type(message).__name__}")
            return
        emitter.send(_encode_source_message(message, meta))
        beat = self.beat
        if beat is not None:  # Beat.emitted, inlined: every message passes here
            beat.count += 1
            beat.last = _monotonic()

    def emit_error(self, error: str) -> None:
        if self.emitter is None:
            raise RuntimeError("emit_error is only available to sources")
        self.emitter.send(protocol.encode_source_error(one_line(error)))
        if self.beat is not None:
            self.beat.error(one_line(error))

    def ack_ok(self) -> None:
        self._ack(protocol.ACK_OK)

    def ack_error(self, error: str) -> None:
        if self.beat is not None:
            self.beat.error(one_line(error))
        self._ack(protocol.encode_ack_error(one_line(error)))

    def _ack(self, data: bytes) -> None:
        self.acked = True
        if not self.require_ack or self.ack_emitter is None:
            # eKuiper never reads acks when the rule has no requireAck: sending them would
            # fill the socket until the send times out (the official SDK's sink dies there).
            if not self._warned_ack:
                self._warned_ack = True
                log.debug("%s: rule has no requireAck, acks are not sent", self.symbol)
            return
        try:
            self.ack_emitter.send(data)
            if self.beat is not None:
                self.beat.acked()
        except TransportClosed:
            pass
        except TransportError as e:
            log.warning("%s: ack not delivered: %s", self.symbol, e)
