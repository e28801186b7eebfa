"""SDK logging: to stderr (stdout may be a data pipe), level from ``EKUIPER_LOG_LEVEL``."""

from __future__ import annotations

import logging
import os
import sys
import threading

from ..protocol import Meta

TYPE_CHECKING = False  # typing is not loaded at run time on the start path (docs/architecture.md)
if TYPE_CHECKING:
    from typing import Dict, Iterable

LOG_LEVEL_ENV = "EKUIPER_LOG_LEVEL"
FORMAT = "%(asctime)s %(levelname)s %(name)s: %(message)s"

log = logging.getLogger("ekuiper")


def level_from_env() -> int:
    raw = os.environ.get(LOG_LEVEL_ENV, "INFO").strip().upper()
    if raw.isdigit():
        return int(raw)
    lvl = logging.getLevelName(raw)
    return lvl if isinstance(lvl, int) else logging.INFO


def setup_logging() -> None:
    """Configure the root logger once, unless the plugin already did.

    The official SDK installs a stdout handler at INFO on the root logger; plugin code that
    calls ``logging.info`` relies on that, so we do the same, but on stderr.
    """
    level = level_from_env()
    root = logging.getLogger()
    if not root.handlers:
        handler = logging.StreamHandler(sys.stderr)
        handler.setFormatter(logging.Formatter(FORMAT))
        root.addHandler(handler)
        root.setLevel(level)
    log.setLevel(level)


class _Tags(logging.Filter):
    """Adds ``rule_id``, ``op_id`` and ``instance_id`` to every record for structured handlers."""

    def __init__(self, meta: Meta) -> None:
        super().__init__()
        self.meta = meta

    def filter(self, record: logging.LogRecord) -> bool:
        record.rule_id = self.meta.rule_id
        record.op_id = self.meta.op_id
        record.instance_id = self.meta.instance_id
        return True


#: A line written without a newline is logged once this many characters wait for one.
MAX_PENDING_CHARS = 64 * 1024


class StreamMixin:
    """``write``/``flush`` on a logger, so plugins written for the official SDK run unchanged.

    The official SDK's ``ctx.get_logger()`` returns ``sys.stdout``, so its plugins call
    ``ctx.get_logger().write(text)`` or ``print(..., file=ctx.get_logger())``. Here each
    complete line written is logged at INFO (with the rule's tags); a partial line waits
    for its newline, for ``flush()``, or for :data:`MAX_PENDING_CHARS` characters.
    """

    def write(self, text: str) -> int:
        if not isinstance(text, str):  # a file would raise TypeError; logging is lenient
            text = text.decode("utf-8", "replace") if isinstance(text, (bytes, bytearray)) \
                else str(text)
        lock = _stream_lock(self)
        with lock:
            pending = self.__dict__.get("_ekl_pending", "") + text
            *lines, rest = pending.split("\n")
            if len(rest) >= MAX_PENDING_CHARS:
                lines.append(rest)
                rest = ""
            self.__dict__["_ekl_pending"] = rest
        for line in lines:
            line = line.rstrip("\r")
            if line:
                self.info("%s", line)  # type: ignore[attr-defined]
        return len(text)

    def writelines(self, lines: Iterable[str]) -> None:
        for line in lines:
            self.write(line)

    def flush(self) -> None:
        with _stream_lock(self):
            rest = self.__dict__.pop("_ekl_pending", "").rstrip("\r")
        if rest:
            self.info("%s", rest)  # type: ignore[attr-defined]

    def isatty(self) -> bool:
        return False


_locks_guard = threading.Lock()


def _stream_lock(logger: object) -> threading.Lock:
    lock = logger.__dict__.get("_ekl_lock")
    if lock is None:
        with _locks_guard:
            lock = logger.__dict__.setdefault("_ekl_lock", threading.Lock())
    return lock


_stream_classes: Dict[type, type] = {}


def _with_stream(logger: logging.Logger) -> logging.Logger:
    """The same logger object, its class extended with :class:`StreamMixin`.

    The logger stays the one ``logging.getLogger(name)`` returns (so logging configuration
    by name applies to it), and stays an instance of whatever Logger class it had."""
    cls = type(logger)
    if issubclass(cls, StreamMixin):
        return logger
    with _locks_guard:
        ext = _stream_classes.get(cls)
        if ext is None:
            ext = type(f"Stream{cls.__name__}", (StreamMixin, cls), {})
            _stream_classes[cls] = ext
        if not isinstance(logger, StreamMixin):
            logger.__class__ = ext
    return logger


def symbol_logger(symbol: str, meta: Meta) -> logging.Logger:
    """A real ``logging.Logger`` per symbol instance; its name carries rule/op/instance.

    It also has ``write()``/``flush()`` (see :class:`StreamMixin`)."""
    name = f"ekuiper.{symbol}[{meta.rule_id}/{meta.op_id}/{meta.instance_id}]"
    logger = logging.getLogger(name)
    if not any(isinstance(f, _Tags) for f in logger.filters):
        logger.addFilter(_Tags(meta))
    return _with_stream(logger)


