"""Many plugins under one launcher: a watcher each, one status file, one stop for all."""

from __future__ import annotations

import json
import logging
import os
import signal
import threading
import time
from pathlib import Path
from typing import Any, Dict, List, Optional

from .errors import EklError
from .instance import PluginInstance
from .manifest import load
from .process import Lifeline
from .resolve import LaunchOptions, resolve
from .settings import HostSettings, SupervisorSettings
from .watcher import Watcher

log = logging.getLogger("ekl")
STATUS_VERSION = 1


def write_status_file(path: str, status: Dict[str, Any]) -> None:
    """Atomically: readers never see a half-written file."""
    p = Path(path)
    tmp = p.with_name(f".{p.name}.{os.getpid()}.tmp")
    tmp.write_text(json.dumps(status, default=str))  # compact: the C encoder, not indent
    os.replace(tmp, p)


def read_status_file(path: str) -> Dict[str, Any]:
    try:
        data = json.loads(Path(path).read_text())
    except FileNotFoundError:
        raise EklError(f"--status-file {path}: no such file; is `ekl supervise --status-file "
                       f"{path}` running?") from None
    except ValueError:
        raise EklError(f"--status-file {path}: not a status file written by ekl") from None
    if not isinstance(data, dict) or "plugins" not in data:
        raise EklError(f"--status-file {path}: not a status file written by ekl")
    return data


class Arbiter:
    def __init__(self, targets: List[str], opts: LaunchOptions, host: HostSettings,
                 sup: SupervisorSettings, status_file: Optional[str] = None) -> None:
        self.targets = targets
        self.opts, self.host, self.sup = opts, host, sup
        self.status_file = status_file
        self.lifeline = Lifeline()
        self.watchers: List[Watcher] = []
        self._stop = threading.Event()

    def status(self) -> Dict[str, Any]:
        return {"version": STATUS_VERSION, "launcher_pid": os.getpid(),
                "written_at": time.time(), "plugins": [w.status() for w in self.watchers]}

    def write_status(self) -> None:
        if self.status_file:
            write_status_file(self.status_file, self.status())

    def start(self) -> None:
        manifests = [load(t) for t in self.targets]  # every manifest problem before any start
        names = [m.name for m in manifests]
        dup = sorted({n for n in names if names.count(n) > 1})
        if dup:
            raise EklError(f"plugin {', '.join(dup)} given twice; each plugin runs once per "
                           f"launcher (its control socket is per name)")
        for m in manifests:
            res = resolve(m, self.opts)
            inst = PluginInstance(res.spec, HostSettings(**vars(self.host)),
                                  lifeline=self.lifeline, private_ipc=res.private_ipc)
            w = Watcher(inst, self.sup, on_state=lambda *_: self.write_status())
            self.watchers.append(w)
        for w in self.watchers:
            w.start()

    def stop(self) -> None:
        for w in self.watchers:
            w.stop()
        self.write_status()
        self.lifeline.close()

    def run(self) -> int:
        """Until SIGTERM/SIGINT: start all, write status every health interval, stop all."""
        def handler(signum: int, _f: object) -> None:
            self._stop.set()

        old = {s: signal.signal(s, handler) for s in (signal.SIGTERM, signal.SIGINT)}
        try:
            self.start()
            log.info("supervising %d plugin(s)", len(self.watchers))
            while not self._stop.wait(self.sup.health_interval_s):
                self.write_status()
        finally:
            for s, h in old.items():
                signal.signal(s, h)
            self.stop()
        return 0
