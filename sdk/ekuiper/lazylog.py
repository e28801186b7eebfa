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

A program may also ``hold_until_loaded``: INFO and DEBUG records logged through stand-ins
are then kept (at most ``HOLD_MAX``) and written, in order, when it calls ``load``, or at
exit. ``ekl-python`` does, because the plugin's first line ("serving") arrives exactly while
eKuiper's first command is relayed, and loading logging for it in the output thread held
the interpreter for 10 ms of that; it loads logging once the command is answered (at most
1 s later). Warnings and errors are never held, and they write the held records first.
"""

from __future__ import annotations

import _thread
import sys

TYPE_CHECKING = False  # typing is not loaded at run time on the start path (docs/architecture.md)
if TYPE_CHECKING:
    import logging
    from typing import Any, Callable, Dict, List, Tuple

__all__ = ["DEBUG", "HOLD_MAX", "INFO", "WARNING", "LazyLogger", "getLogger", "hold_until_loaded", "load",
           "one_line", "when_loaded"]

#: ``logging.DEBUG``, ``INFO`` and ``WARNING``, without loading logging
DEBUG = 10
INFO = 20
WARNING = 30

#: the most records ``hold_until_loaded`` keeps; the next one loads logging
HOLD_MAX = 256

#: run once, in order, when a stand-in first loads logging
_hooks: List[Callable[[], None]] = []
_loaded = False
_loading = False
#: one loader at a time; re-entered by a hook that logs
_lock = _thread.RLock()
_holding = False
#: (logger name, level, msg, args, kwargs) kept by ``hold_until_loaded``
_held: List[Tuple[str, int, object, Tuple[Any, ...], Dict[str, Any]]] = []
#: logging's own default (the root logger at WARNING), lowered by ``when_loaded``: while
#: nothing has loaded logging, a record below this would be dropped once it is loaded, so
#: a stand-in drops it without loading logging (``debug`` on a quiet start)
_floor = WARNING


def load() -> None:
    """Import logging, run the ``when_loaded`` hooks and write the held records (once).
    Other threads logging meanwhile wait for it, so nothing is written before the hooks."""
    global _loaded, _loading
    if _loaded:
        return
    with _lock:
        if _loaded or _loading:  # done meanwhile, or a hook of ours logs
            return
        _loading = True
        import logging

        try:
            while _hooks:
                _hooks.pop(0)()
            for name, level, msg, args, kwargs in _held:
                logging.getLogger(name).log(level, msg, *args, **kwargs)
        finally:  # a hook that raises must not leave records held, or loaders waiting
            _held.clear()
            _loaded = True


def hold_until_loaded() -> None:
    """Keep INFO and DEBUG records until ``load`` (or exit) instead of loading for them."""
    global _holding
    if not _holding and not _loaded:
        import atexit

        _holding = True
        atexit.register(load)


def _hold(name: str, level: int, msg: object, args: Tuple[Any, ...],
          kwargs: Dict[str, Any]) -> bool:
    with _lock:
        if _loaded or _loading or len(_held) >= HOLD_MAX:
            return False
        _held.append((name, level, msg, args, kwargs))
        return True


def when_loaded(hook: Callable[[], None], level: int = WARNING) -> None:
    """Run ``hook`` when a stand-in loads logging; at once if one already has. ``level``:
    the lowest level the hook lets through (records below it are not worth loading for)."""
    global _floor
    _floor = min(_floor, level)
    if _loaded:
        hook()
    else:
        _hooks.append(hook)


def _quiet(level: int) -> bool:
    """A record at ``level`` would be dropped, and logging is not loaded yet."""
    return level < _floor and not _loaded and "logging" not in sys.modules


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

    # The levels below WARNING answer without loading logging while it would drop them.

    def isEnabledFor(self, level: int) -> bool:  # noqa: N802 (logging's spelling)
        return False if _quiet(level) else self.__getattr__("isEnabledFor")(level)

    def debug(self, msg: object, *args: Any, **kwargs: Any) -> None:
        self._below_warning(DEBUG, msg, args, kwargs)

    def info(self, msg: object, *args: Any, **kwargs: Any) -> None:
        self._below_warning(INFO, msg, args, kwargs)

    def _below_warning(self, level: int, msg: object, args: Tuple[Any, ...],
                       kwargs: Dict[str, Any]) -> None:
        if not _loaded:
            if _quiet(level):
                return
            if _holding and "exc_info" not in kwargs and _hold(self.name, level, msg, args,
                                                                 kwargs):
                return
        self.__getattr__("log")(level, msg, *args, **kwargs)


def getLogger(name: str) -> Any:  # noqa: N802 (logging's spelling)
    """A stand-in for ``logging.getLogger(name)`` (typed ``Any``: it answers as a Logger)."""
    return LazyLogger(name)


def one_line(text: object) -> str:
    """Error texts cross the wire and land in eKuiper's status: keep them to one line."""
    return " ".join(str(text).split())
