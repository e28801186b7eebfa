"""SDK logging: to stderr (stdout may be a data pipe), level from ``EKUIPER_LOG_LEVEL``."""

from __future__ import annotations

import logging
import os
import sys

from ..protocol import Meta

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


def symbol_logger(symbol: str, meta: Meta) -> logging.Logger:
    """A real ``logging.Logger`` per symbol instance; its name carries rule/op/instance."""
    name = f"ekuiper.{symbol}[{meta.rule_id}/{meta.op_id}/{meta.instance_id}]"
    logger = logging.getLogger(name)
    if not any(isinstance(f, _Tags) for f in logger.filters):
        logger.addFilter(_Tags(meta))
    return logger


def one_line(text: object) -> str:
    """Error texts cross the wire and land in eKuiper's status: keep them to one line."""
    return " ".join(str(text).split())
