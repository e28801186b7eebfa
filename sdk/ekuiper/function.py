"""Base class of a function symbol (same API as the official SDK)."""

from __future__ import annotations

from abc import abstractmethod

from .runtime.context import Context

TYPE_CHECKING = False  # typing is not loaded at run time on the start path (docs/architecture.md)
if TYPE_CHECKING:
    from typing import Any, List


class Function:
    """A function shared by every rule that calls it; one instance serves all calls."""

    @abstractmethod
    def validate(self, args: List[Any]) -> str:
        """Check the call's argument expressions; return "" (or None) if valid, else an error.

        eKuiper sends its parsed syntax-tree nodes, not values: rely on their count only.
        """

    @abstractmethod
    def exec(self, args: List[Any], ctx: Context) -> Any:
        """Compute the result (any JSON-encodable value) from the argument values."""

    @abstractmethod
    def is_aggregate(self) -> bool:
        """Whether the function aggregates over a window (eKuiper asks once and caches)."""
