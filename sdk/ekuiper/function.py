"""Base class of a function symbol (same API as the official SDK)."""

from __future__ import annotations

from abc import abstractmethod
from typing import Any, List

from .runtime.context import Context


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
