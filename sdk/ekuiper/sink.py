"""Base class of a sink symbol (same API as the official SDK)."""

from __future__ import annotations

from abc import abstractmethod

from .runtime.context import Context

TYPE_CHECKING = False  # typing is not loaded at run time on the start path (docs/architecture.md)
if TYPE_CHECKING:
    from typing import Any, Dict


class Sink:
    """A sink receives the rule's output; ``collect`` gets the raw JSON bytes of each result."""

    @abstractmethod
    def configure(self, conf: Dict[str, Any]) -> None:
        """Receive the action's properties; raise to refuse them."""

    @abstractmethod
    def open(self, ctx: Context) -> None:
        """Connect to whatever the sink writes to; called once before the first collect."""

    @abstractmethod
    def collect(self, ctx: Context, data: Any) -> None:
        """Handle one message; with ``requireAck`` call ``ctx.ack_ok()`` or ``ctx.ack_error()``."""

    @abstractmethod
    def close(self, ctx: Context) -> None:
        """Release resources."""
