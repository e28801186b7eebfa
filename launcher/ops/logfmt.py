"""Log lines for operators: timestamps, the plugin each line is about, JSON for shippers.

A supervisor's log is read after the fact (``journalctl``, a log shipper, a file on an edge
box), so each line carries an ISO-8601 timestamp with milliseconds and the UTC offset (logs
from boxes in different zones still sort and correlate) and the name of the plugin it
concerns. ``json`` emits exactly one JSON object per line, which Loki, Fluent Bit, Vector
and Elasticsearch ingest without a parsing rule. Every line is cut at
:data:`MAX_LINE_BYTES`: a plugin printing a 300 MB line must not become a 300 MB log
record (issue 11).

Which plugin a record is about, in order: ``extra={"plugin": NAME}`` on the call (or a
:class:`PluginAdapter`); the logger name ``ekl.plugin.NAME`` the plugin's own output is
logged under; a message that starts ``"plugin %s"`` (the supervisor's current wording).
"""

from __future__ import annotations

import json
import logging
import os
import re
import sys
import threading
from collections import OrderedDict

from ..errors import EklError

TYPE_CHECKING = False  # typing is not loaded at run time on the start path (docs/architecture.md)
if TYPE_CHECKING:
    from typing import Any, Dict, MutableMapping, Optional, Tuple

LOG_FORMATS = ("text", "json")
#: longer messages are cut, with a marker saying how much was dropped
MAX_LINE_BYTES = 64 * 1024
#: per-plugin files in --log-dir rotate at this size, keeping DEFAULT_BACKUPS old ones
DEFAULT_MAX_BYTES = 10 * 1024 * 1024
DEFAULT_BACKUPS = 5
#: open per-plugin files at once; the least recently written is closed beyond this
MAX_OPEN_FILES = 64
LAUNCHER_FILE = "ekl.log"
PLUGIN_LOGGER_PREFIX = "ekl.plugin."

#: LogRecord's own attributes; anything else on a record came from ``extra=`` and is kept
_STANDARD = set(vars(logging.LogRecord("n", logging.INFO, "p", 1, "m", None, None))) | {
    "message", "asctime", "plugin", "taskName"}


def iso_timestamp(created: float) -> str:
    """``2026-12-01T20:41:52.123+00:00``: local time with its offset, millisecond precision."""
    from datetime import datetime  # here: ops.cli (every ekl start) imports this module

    return datetime.fromtimestamp(created).astimezone().isoformat(timespec="milliseconds")


def cut(text: str, limit: int = MAX_LINE_BYTES) -> str:
    """At most ``limit`` UTF-8 bytes, with a marker naming how many bytes were dropped."""
    raw = text.encode("utf-8", "replace")
    if len(raw) <= limit:
        return text
    keep = raw[: max(0, limit - 40)].decode("utf-8", "ignore")
    return f"{keep} …[cut {len(raw) - len(keep.encode('utf-8'))} bytes]"


def plugin_of(record: logging.LogRecord) -> Optional[str]:
    """The plugin a record is about, or None for the launcher's own lines."""
    p = getattr(record, "plugin", None)
    if isinstance(p, str) and p:
        return p
    if record.name.startswith(PLUGIN_LOGGER_PREFIX):
        return record.name[len(PLUGIN_LOGGER_PREFIX):] or None
    if isinstance(record.msg, str) and record.msg.startswith("plugin %s") and \
            isinstance(record.args, tuple) and record.args:
        return str(record.args[0])
    return None


def message_of(record: logging.LogRecord, plugin: Optional[str]) -> str:
    """The message, without the ``[NAME] `` prefix plugin output lines carry for plain logs."""
    try:
        msg = record.getMessage()
    except Exception:  # noqa: BLE001 -- a bad %-format must not lose the line
        msg = f"{record.msg!r} {record.args!r}"
    if plugin and msg.startswith(f"[{plugin}] "):
        msg = msg[len(plugin) + 3:]
    return msg


class TextFormatter(logging.Formatter):
    """``2026-12-01T20:41:52.123+00:00 INFO    [pysam] plugin pysam: restarting in 0.1 s``."""

    def __init__(self, max_line: int = MAX_LINE_BYTES) -> None:
        super().__init__()
        self.max_line = max_line

    def format(self, record: logging.LogRecord) -> str:
        plugin = plugin_of(record)
        line = (f"{iso_timestamp(record.created)} {record.levelname:<7} [{plugin or 'ekl'}] "
                f"{message_of(record, plugin)}")
        if record.exc_info:
            line += "\n" + self.formatException(record.exc_info)
        return cut(line, self.max_line)


class JsonFormatter(logging.Formatter):
    """One object per line: ``{"ts", "level", "plugin", "logger", "msg", ...extra, "exc"}``.

    ``plugin`` is null for the launcher's own lines. Fields passed with ``extra=`` are kept
    (values that JSON cannot encode become their ``str``); each string is cut so the whole
    line stays near ``max_line`` bytes.
    """

    def __init__(self, max_line: int = MAX_LINE_BYTES) -> None:
        super().__init__()
        self.max_line = max_line

    def format(self, record: logging.LogRecord) -> str:
        plugin = plugin_of(record)
        budget = max(256, self.max_line - 512)
        obj: Dict[str, Any] = {"ts": iso_timestamp(record.created), "level": record.levelname,
                               "plugin": plugin, "logger": record.name,
                               "msg": cut(message_of(record, plugin), budget)}
        for k, v in record.__dict__.items():
            if k in _STANDARD or k in obj or k.startswith("_"):
                continue
            if not isinstance(v, (str, int, float, bool, type(None))):
                v = str(v)
            obj[k] = cut(v, 4096) if isinstance(v, str) else v
        if record.exc_info:
            obj["exc"] = cut(self.formatException(record.exc_info), budget)
        line = json.dumps(obj, ensure_ascii=False, default=str)
        if len(line.encode("utf-8")) > self.max_line:  # many long extras: keep the core fields
            obj = {k: obj[k] for k in ("ts", "level", "plugin", "logger")}
            obj["msg"] = cut(message_of(record, plugin), self.max_line // 2)
            obj["truncated"] = True
            line = json.dumps(obj, ensure_ascii=False)
        return line


def make_formatter(fmt: str, max_line: int = MAX_LINE_BYTES) -> logging.Formatter:
    """The formatter for ``--log-format FMT``."""
    if fmt == "text":
        return TextFormatter(max_line)
    if fmt == "json":
        return JsonFormatter(max_line)
    raise EklError(f"--log-format {fmt}: not a log format; use text or json")


class PluginAdapter(logging.LoggerAdapter):
    """``PluginAdapter(log, "pysam").info(...)`` tags every line with the plugin's name."""

    def __init__(self, logger: logging.Logger, plugin: str) -> None:
        super().__init__(logger, {"plugin": plugin})

    def process(self, msg: Any, kwargs: MutableMapping[str, Any]) -> Tuple[Any, MutableMapping[str, Any]]:
        kwargs["extra"] = {**(kwargs.get("extra") or {}), "plugin": self.extra["plugin"]}
        return msg, kwargs


_UNSAFE = re.compile(r"[^A-Za-z0-9._-]")


def log_file_name(plugin: Optional[str]) -> str:
    """A file name that stays inside --log-dir whatever the plugin is called."""
    if not plugin:
        return LAUNCHER_FILE
    safe = _UNSAFE.sub("_", plugin)[:100].lstrip(".") or "_"
    return f"{safe}.log" if f"{safe}.log" != LAUNCHER_FILE else "_ekl.log"


class PluginLogRouter(logging.Handler):
    """Writes each record to ``LOG_DIR/PLUGIN.log`` (launcher lines: ``LOG_DIR/ekl.log``).

    Files rotate by size (``max_bytes``, ``backups`` kept) and are opened on first use, so
    plugins added by a reload get their file without any wiring. At most
    :data:`MAX_OPEN_FILES` stay open. A file that cannot be written is reported once on
    stderr and skipped; the launcher and the other files go on.
    """

    def __init__(self, log_dir: str, fmt: str = "text", max_bytes: int = DEFAULT_MAX_BYTES,
                 backups: int = DEFAULT_BACKUPS, max_line: int = MAX_LINE_BYTES) -> None:
        super().__init__()
        self.log_dir = log_dir
        self.max_bytes, self.backups = max_bytes, backups
        self.setFormatter(make_formatter(fmt, min(max_line, max(1024, max_bytes // 2))))
        self._files: OrderedDict[str, logging.Handler] = OrderedDict()
        self._failed: set = set()
        self._files_lock = threading.Lock()

    def _handler_for(self, name: str) -> Optional[logging.Handler]:
        import logging.handlers  # only with --log-dir: it pulls in pickle and socket

        h = self._files.get(name)
        if h is not None:
            self._files.move_to_end(name)
            return h
        if name in self._failed:
            return None
        path = os.path.join(self.log_dir, name)
        try:
            h = logging.handlers.RotatingFileHandler(path, maxBytes=self.max_bytes,
                                                     backupCount=self.backups, encoding="utf-8")
        except OSError as e:
            self._failed.add(name)
            print(f"ekl: --log-dir {path}: cannot write it: {e.strerror or e}; its lines go "
                  f"to stderr only", file=sys.stderr)
            return None
        h.setFormatter(self.formatter)
        self._files[name] = h
        while len(self._files) > MAX_OPEN_FILES:
            _, old = self._files.popitem(last=False)
            old.close()
        return h

    def emit(self, record: logging.LogRecord) -> None:
        name = log_file_name(plugin_of(record))
        with self._files_lock:
            h = self._handler_for(name)
            if h is None:
                return
            try:
                h.emit(record)
            except Exception:  # noqa: BLE001 -- a log write never stops the launcher
                self._failed.add(name)
                self._files.pop(name, None)
                h.close()
                print(f"ekl: --log-dir {self.log_dir}/{name}: writing failed; its lines go "
                      f"to stderr only", file=sys.stderr)

    def close(self) -> None:
        with self._files_lock:
            for h in self._files.values():
                h.close()
            self._files.clear()
        super().close()


def attach_log_dir(log_dir: str, fmt: str = "text", logger: str = "ekl",
                   max_bytes: int = DEFAULT_MAX_BYTES, backups: int = DEFAULT_BACKUPS,
                   max_line: int = MAX_LINE_BYTES) -> PluginLogRouter:
    """``--log-dir DIR``: create DIR (0750) if needed and route ``logger``'s records into it.

    Fails before anything starts, with one line, when DIR cannot be created or written.
    """
    make_formatter(fmt)  # an unknown format fails here, before the folder is made
    try:
        os.makedirs(log_dir, mode=0o750, exist_ok=True)
    except OSError as e:
        raise EklError(f"--log-dir {log_dir}: cannot create it: {e.strerror or e}; give a "
                       f"writable folder") from None
    if not os.path.isdir(log_dir) or not os.access(log_dir, os.W_OK | os.X_OK):
        raise EklError(f"--log-dir {log_dir}: not a writable folder; give a folder this user "
                       f"can write")
    router = PluginLogRouter(log_dir, fmt, max_bytes=max_bytes, backups=backups, max_line=max_line)
    logging.getLogger(logger).addHandler(router)
    return router
