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
from pathlib import Path
from typing import Any, Callable, Dict, List, Optional

from ..errors import EklError
from ..fsafe import (  # noqa: F401 - the status folder's rules live there
    STATUS_DIR_ENV,
    atomic_write,
    default_status_dir,
    status_dir_candidates,
)

log = logging.getLogger("ekl")

#: Version 2 added ``mode``; readers accept every version up to this one.
STATUS_VERSION = 2
MODE_SUPERVISE = "supervise"
MODE_EKL_PYTHON = "ekl-python"


def status_document(plugins: List[Dict[str, Any]], mode: str) -> Dict[str, Any]:
    """The whole file: the one place its top-level fields are decided."""
    return {"version": STATUS_VERSION, "mode": mode, "launcher_pid": os.getpid(),
            "written_at": time.time(), "plugins": plugins}


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
        folder = os.path.dirname(os.path.abspath(path))
        if not os.path.isdir(folder):
            raise EklError(f"{option} {path}: folder {folder} does not exist; create it or "
                           f"give another path")
        if os.path.isdir(path):
            raise EklError(f"{option} {path}: is a folder; give a file path")
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


def read_status_file(path: str) -> Dict[str, Any]:
    try:
        data = json.loads(Path(path).read_text())
    except FileNotFoundError:
        raise EklError(f"--status-file {path}: no such file; is `ekl supervise --status-file "
                       f"{path}` running?") from None
    except (OSError, ValueError, RecursionError):
        raise EklError(f"--status-file {path}: not a status file written by ekl") from None
    if not isinstance(data, dict) or not isinstance(data.get("plugins"), list):
        raise EklError(f"--status-file {path}: not a status file written by ekl")
    return data


def collect_status_dirs(directories: List[str]) -> Dict[str, Any]:
    """Merge the per-plugin files ``ekl-python`` writes (one per plugin eKuiper started)."""
    import psutil

    plugins: List[Dict[str, Any]] = []
    files = [f for d in directories if Path(d).is_dir() for f in sorted(Path(d).glob("*.json"))]
    for f in files:
        try:
            data = read_status_file(str(f))
        except EklError:
            continue
        alive = psutil.pid_exists(int(data.get("launcher_pid") or 0))
        for p in data["plugins"]:
            if not alive:  # ekl-python was SIGKILLed (eKuiper's stop): the file is stale
                p = dict(p, state="STOPPED", pid=None, uptime=0.0, rss=0, cpu_percent=0.0,
                         fatal_reason=f"ekl-python {data.get('launcher_pid')} is gone "
                                      f"(stale status file {os.path.basename(f)})")
            plugins.append(p)
    doc = status_document(plugins, MODE_EKL_PYTHON)
    doc.update(launcher_pid="ekl-python", status_dir=", ".join(directories))
    return doc
