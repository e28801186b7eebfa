"""Plugin authors' verbs: ``init``, ``validate``, ``package`` (issue 5; being written)."""

from __future__ import annotations

from typing import Any


def register(sub: Any) -> None:
    """Add the authoring verbs to the ``ekl`` parser."""
