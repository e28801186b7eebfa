"""Loggers that load ``logging`` when they first log, and ``one_line`` for log text.

``import logging`` loads traceback, linecache, tokenize, textwrap and string, and compiles
their regular expressions: 12 ms of ``ekl-python``'s start on the machines ekl targets,
before eKuiper's first command can be relayed, on a path that logs nothing when all goes
well (docs/performance.md). The modules on that path (the relay, the start path, the
transport, the request loop) therefore name their logger with ``getLogger`` from here: a
stand-in that becomes ``logging.getLogger(name)`` at its first use.

A program that configures logging itself (``ekl-python``'s one-line stderr handler)
registers that with ``when_loaded``: it runs the first time a stand-in loads logging, so
no record is written before the handler is in place. Code that uses ``logging`` directly
still may; it only loads it sooner.
"""

from __future__ import annotations

import sys

TYPE_CHECKING = False  # typing is not loaded at run time on the start path (docs/architecture.md)
if TYPE_CHECKING:
    import logging
    from typing import Any, Callable, List

__all__ = ["DEBUG", "LazyLogger", "getLogger", "load", "one_line", "when_loaded"]

#: ``logging.DEBUG``, for ``isEnabledFor`` without loading logging
DEBUG = 10

#: run once, in order, when a stand-in first loads logging
_hooks: List[Callable[[], None]] = []
_loaded = False


def load() -> None:
    """Import logging and run the ``when_loaded`` hooks (once)."""
    global _loaded
    if _loaded:
        return
    import logging  # noqa: F401

    _loaded = True
    while _hooks:
        _hooks.pop(0)()


def when_loaded(hook: Callable[[], None]) -> None:
    """Run ``hook`` when a stand-in loads logging; at once if one already has."""
    if _loaded:
        hook()
    else:
        _hooks.append(hook)


class LazyLogger:
    """``logging.getLogger(name)``, loaded at the first attribute asked of it."""

    __slots__ = ("name", "_logger")

    def __init__(self, name: str) -> None:
        self.name = name
        self._logger: logging.Logger | None = None

    def __getattr__(self, attr: str) -> Any:
        logger = self._logger
        if logger is None:
            load()
            logger = self._logger = sys.modules["logging"].getLogger(self.name)
        return getattr(logger, attr)

    def __repr__(self) -> str:
        return f"<LazyLogger {self.name}>"


def getLogger(name: str) -> Any:  # noqa: N802 (logging's spelling)
    """A stand-in for ``logging.getLogger(name)`` (typed ``Any``: it answers as a Logger)."""
    return LazyLogger(name)


def one_line(text: object) -> str:
    """Error texts cross the wire and land in eKuiper's status: keep them to one line."""
    return " ".join(str(text).split())
