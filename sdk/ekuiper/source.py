"""Base class of a source symbol (same API as the official SDK)."""

from __future__ import annotations

from abc import abstractmethod

from .runtime.context import Context

TYPE_CHECKING = False  # typing is not loaded at run time on the start path (docs/architecture.md)
if TYPE_CHECKING:
    from typing import Any, Dict


class Source:
    """A source pushes tuples into a rule with ``ctx.emit`` from ``open``.

    ``open`` runs in its own thread and may loop until ``close`` is called. It is a plain
    class (not an ``ABC``), as in the official SDK, so partial implementations still load.
    """

    @abstractmethod
    def configure(self, datasource: str, conf: Dict[str, Any]) -> None:
        """Receive the stream's data source and the merged config; raise to refuse them."""

    @abstractmethod
    def open(self, ctx: Context) -> None:
        """Run, emitting data or errors through ``ctx``, until ``close`` is called."""

    @abstractmethod
    def close(self, ctx: Context) -> None:
        """Stop ``open`` and release resources."""
