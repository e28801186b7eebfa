"""Many plugins under one launcher: a watcher each, one status file, one stop for all."""

from __future__ import annotations

import logging
import signal
import threading
from typing import Any, Dict, List, Optional

from ..errors import EklError
from ..plugin import load
from ..settings import HostSettings, LaunchOptions, SupervisorSettings
from ..start import prepare
from .status import MODE_SUPERVISE, StatusWriter, status_document
from .watcher import Watcher

log = logging.getLogger("ekl")


class Arbiter:
    def __init__(self, targets: List[str], opts: LaunchOptions, host: HostSettings,
                 sup: SupervisorSettings, status_file: Optional[str] = None) -> None:
        self.targets = targets
        self.opts, self.host, self.sup = opts, host, sup
        self.watchers: List[Watcher] = []
        self._stop = threading.Event()
        self.status_writer = (StatusWriter.open(status_file, self.status) if status_file
                              else None)

    def status(self) -> Dict[str, Any]:
        return status_document([w.status() for w in self.watchers], MODE_SUPERVISE)

    def write_status(self) -> None:
        if self.status_writer is not None:
            self.status_writer.changed()

    def start(self) -> None:
        manifests = [load(t) for t in self.targets]  # every manifest problem before any start
        names = [m.name for m in manifests]
        dup = sorted({n for n in names if names.count(n) > 1})
        if dup:
            raise EklError(f"plugin {', '.join(dup)} given twice; each plugin runs once per "
                           f"launcher (its control socket is per name)")
        for m in manifests:
            inst = prepare(m, self.opts, self.host)
            w = Watcher(inst, self.sup, on_state=lambda *_: self.write_status())
            self.watchers.append(w)
        for w in self.watchers:
            w.start()

    def stop(self) -> None:
        for w in self.watchers:
            w.stop()
        if self.status_writer is not None:
            self.status_writer.close()

    def run(self) -> int:
        """Until SIGTERM/SIGINT/SIGHUP: start all, write status every health interval, stop
        all. SIGHUP stops like SIGTERM (a closed terminal must not leave plugins behind)."""
        def handler(signum: int, _f: object) -> None:
            self._stop.set()

        old = {s: signal.signal(s, handler)
               for s in (signal.SIGTERM, signal.SIGINT, signal.SIGHUP)}
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
