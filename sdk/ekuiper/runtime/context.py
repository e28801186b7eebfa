"""The context a symbol receives (same interface as the official SDK's)."""

from __future__ import annotations

import logging
from abc import abstractmethod

TYPE_CHECKING = False  # typing is not loaded at run time on the start path (docs/architecture.md)
if TYPE_CHECKING:
    from typing import Any, Dict, Optional


class Context:
    """What a running symbol knows about where it runs, and how it talks back."""

    @abstractmethod
    def get_rule_id(self) -> str:
        """The rule this symbol instance serves."""

    @abstractmethod
    def get_op_id(self) -> str:
        """The operator id within the rule."""

    @abstractmethod
    def get_instance_id(self) -> int:
        """The instance number (rules may run several instances of one operator)."""

    @abstractmethod
    def get_logger(self) -> logging.Logger:
        """A ``logging.Logger`` whose records carry the rule, op and instance.

        It also has ``write()``/``flush()`` (each line written is logged at INFO), because
        the official SDK returns ``sys.stdout`` here and its plugins write to it."""

    @abstractmethod
    def emit(self, message: Dict[str, Any], meta: Optional[Dict[str, Any]]) -> None:
        """Send one tuple (a dict) with optional metadata into the rule (sources)."""

    @abstractmethod
    def emit_error(self, error: str) -> None:
        """Report an error to the rule instead of a tuple (sources)."""

    @abstractmethod
    def ack_ok(self) -> None:
        """Acknowledge the current message (sinks whose rule sets ``requireAck``)."""

    @abstractmethod
    def ack_error(self, error: str) -> None:
        """Report that the current message could not be written (sinks with ``requireAck``)."""
