"""The status file: its schema, its one writer, and its readers.

``ekl supervise --status-file F`` writes one file for all its plugins; each ``ekl-python``
writes one per plugin into the status folder. Both go through ``StatusWriter``: one
writer thread per file, fed by "something changed" signals, so no watcher thread ever
touches the file (a full disk or a removed folder cannot stop supervision), and each write
goes through a fresh temporary file in the same folder, replaced atomically, so readers
never see half a file. ``ekl status`` reads through ``read_status_file`` and
``collect_status_dir``.
"""

from __future__ import annotations

import json
import logging
import os
import threading
import time

from ..errors import EklError
from ..fsafe import (  # noqa: F401 - the status folder's rules live there
    STATUS_DIR_ENV,
    atomic_write,
    check_output_path,
    default_status_dir,
    status_dir_candidates,
)

TYPE_CHECKING = False  # typing is not loaded at run time on the start path (docs/architecture.md)
if TYPE_CHECKING:
    from typing import Any, Callable, Dict, List, Optional, Sequence, Tuple

log = logging.getLogger("ekl")

#: Version 2 added ``mode``; readers accept every version up to this one.
STATUS_VERSION = 2
MODE_SUPERVISE = "supervise"
MODE_EKL_PYTHON = "ekl-python"


def status_document(plugins: List[Dict[str, Any]], mode: str,
                    control: Optional[str] = None) -> Dict[str, Any]:
    """The whole file: the one place its top-level fields are decided.

    ``control``: the launcher's control socket (``ekl restart`` and friends find it here).
    """
    return {"version": STATUS_VERSION, "mode": mode, "launcher_pid": os.getpid(),
            "written_at": time.time(), "control": control, "plugins": plugins}


class StatusWriter:
    """The one writer of one status file.

    ``changed()`` is cheap and never raises: it wakes the writer thread, which writes the
    newest snapshot (several changes in a row coalesce into one write). ``close()`` writes
    the final snapshot synchronously, so a stopped launcher's file says STOPPED.
    """

    def __init__(self, path: str, snapshot: Callable[[], Dict[str, Any]]) -> None:
        self.path = path
        self.snapshot = snapshot
        self._wake = threading.Event()
        self._closed = threading.Event()
        self._lock = threading.Lock()           # one write at a time
        self._failing: Optional[str] = None     # the error logged once
        self.writes = 0
        self._thread = threading.Thread(target=self._loop, daemon=True,
                                        name=f"status-{os.path.basename(path)}")
        self._thread.start()

    @classmethod
    def open(cls, path: str, snapshot: Callable[[], Dict[str, Any]],
             option: str = "--status-file") -> StatusWriter:
        """A writer whose first write succeeded: an unwritable path is bad input, said once."""
        check_output_path(path, option)
        try:
            atomic_write(path, json.dumps(snapshot(), default=str).encode())
        except OSError as e:
            raise EklError(f"{option} {path}: cannot write it ({e.strerror}); give a path "
                           f"you can write") from None
        return cls(path, snapshot)

    def changed(self) -> None:
        self._wake.set()

    def write_now(self) -> bool:
        """Write the current snapshot; False (logged once per distinct error) on failure."""
        with self._lock:
            try:
                data = json.dumps(self.snapshot(), default=str).encode()
                atomic_write(self.path, data)
            except Exception as e:  # noqa: BLE001 - a status write must never kill anything
                text = f"{type(e).__name__}: {e}"
                if text != self._failing:
                    log.error("status file %s: cannot write it (%s); retrying at the next "
                              "change", self.path, text)
                    self._failing = text
                return False
            if self._failing is not None:
                log.info("status file %s: written again", self.path)
                self._failing = None
            self.writes += 1
            return True

    def _loop(self) -> None:
        while not self._closed.is_set():
            self._wake.wait()
            self._wake.clear()
            if self._closed.is_set():
                break
            self.write_now()

    def close(self, final: bool = True) -> None:
        self._closed.set()
        self._wake.set()
        self._thread.join(timeout=5)
        if final:
            self.write_now()

    def remove(self) -> None:
        """Stop writing and delete the file (``ekl-python``: a stopped plugin leaves none)."""
        self.close(final=False)
        try:
            os.unlink(self.path)
        except OSError:
            pass


#: bounds on what a status file (written by any local process) can make a reader hold
MAX_STATUS_BYTES = 16 * 1024 * 1024
MAX_STATUS_FILES = 1000


def _pid_alive(pid: Any) -> bool:
    if isinstance(pid, bool) or not isinstance(pid, int) or pid <= 0:
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True  # exists, another user's
    except OSError:
        return False
    return True


def read_status(path: str, follow: bool = True) -> Dict[str, Any]:
    """One status file, with ``source`` set; on any problem ``error`` says what, never raises.

    A plugin whose launcher is gone (``ekl-python`` is SIGKILLed by eKuiper) is reported
    STOPPED: the file's RUNNING is stale. Files found in a folder are not followed through
    symlinks (``follow=False``); a FIFO or device never blocks the reader (O_NONBLOCK).
    """
    out: Dict[str, Any] = {"source": path, "plugins": []}
    flags = os.O_RDONLY | getattr(os, "O_NONBLOCK", 0) | (0 if follow else getattr(os, "O_NOFOLLOW", 0))
    try:
        fd = os.open(path, flags)
        with os.fdopen(fd, "rb") as f:
            data = f.read(MAX_STATUS_BYTES + 1)
    except OSError as e:
        out["error"] = f"cannot read it: {e.strerror or e}"
        return out
    if len(data) > MAX_STATUS_BYTES:
        out["error"] = f"larger than {MAX_STATUS_BYTES // 1048576} MiB; not a status file ekl writes"
        return out
    try:
        doc = json.loads(data)
    except ValueError:
        out["error"] = "not JSON; not a status file written by ekl"
        return out
    if not isinstance(doc, dict) or not isinstance(doc.get("plugins"), list):
        out["error"] = "has no 'plugins' list; not a status file written by ekl"
        return out
    doc = dict(doc, source=path)
    alive = _pid_alive(doc.get("launcher_pid"))
    doc["launcher_alive"] = alive
    if not alive:  # e.g. ekl-python SIGKILLed by eKuiper (its stop): the file is stale
        gone = (f"launcher {doc.get('launcher_pid')} is gone (stale status file "
                f"{os.path.basename(path)})")
        doc["plugins"] = [dict(p, state="STOPPED", pid=None, uptime=0.0, rss=0, processes=0,
                               threads=0, open_files=0, cpu_percent=0.0,
                               fatal_reason=p.get("fatal_reason") or gone)
                          if isinstance(p, dict) else p for p in doc["plugins"]]
    return doc


def status_entries(sources: Sequence[str]) -> List[Tuple[str, bool]]:
    """(path, follow symlinks): files named directly are followed, files found in folders not."""
    out: List[Tuple[str, bool]] = []
    for s in sources:
        if os.path.isdir(s):
            try:
                names = sorted(n for n in os.listdir(s) if n.endswith(".json") and not n.startswith("."))
            except OSError:
                names = []
            out.extend((os.path.join(s, n), False) for n in names[:MAX_STATUS_FILES])
        else:
            out.append((s, True))
    return out[:MAX_STATUS_FILES]


def status_files(sources: Sequence[str]) -> List[str]:
    """Each source is a status file, or a folder whose ``*.json`` are (ekl-python's)."""
    return [p for p, _ in status_entries(sources)]


class NoStatus(EklError):
    """No status where one was asked for (exit 4, the LSB "no status" code)."""

    exit_code = 4


def read_status_file(path: str) -> Dict[str, Any]:
    """``read_status`` for a file the user named: a problem is a one-line EklError."""
    doc = read_status(path)
    if "error" in doc:
        if not os.path.lexists(path):
            raise NoStatus(f"--status-file {path}: no such file; is `ekl supervise --status-file "
                           f"{path}` running?")
        raise EklError(f"--status-file {path}: not a status file written by ekl")
    return doc


def collect_status_dirs(directories: List[str]) -> Dict[str, Any]:
    """Merge the per-plugin files ``ekl-python`` writes (one per plugin eKuiper started)."""
    plugins: List[Dict[str, Any]] = []
    for f, follow in status_entries([d for d in directories if os.path.isdir(d)]):
        doc = read_status(f, follow)
        plugins.extend(p for p in doc.get("plugins", []) if isinstance(p, dict))
    doc = status_document(plugins, MODE_EKL_PYTHON)
    doc.update(launcher_pid="ekl-python", status_dir=", ".join(directories))
    return doc
