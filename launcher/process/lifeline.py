"""The launcher's end of the lifeline: registers plugin process groups with the watchdog.

One watchdog process per launcher (``shared()``), started on first use. The client keeps
the whole registry, so when the watchdog dies (killed by an operator, the OOM killer) the
next write starts a new one and hands it every group and path registered so far: a
launcher SIGKILL afterwards still leaves nothing behind.
"""

from __future__ import annotations

import atexit
import os
import threading

from ..early import nice_watchdog, take_watchdog, watchdog_argv

TYPE_CHECKING = False  # typing is not loaded at run time on the start path (docs/architecture.md)
if TYPE_CHECKING:
    from typing import Any, Iterable, Optional, Set

if TYPE_CHECKING:  # imported where a watchdog is spawned: an early start brings its own
    import subprocess


class Lifeline:
    def __init__(self) -> None:
        self._proc: Optional[subprocess.Popen] = None
        self._lock = threading.Lock()
        self._groups: Set[int] = set()
        self._tokens: Set[str] = set()
        self._paths: Set[str] = set()

    def _spawn(self) -> subprocess.Popen:
        import subprocess

        # A new watchdog learns everything the dead one knew through its argv: it knows it
        # from its first instant, even if the launcher is SIGKILLed right after the spawn
        # (written to the pipe afterwards, the registry was lost in that window: the
        # plugin's escaped daemons then outlived the launcher, seen under load).
        registry = ([f"+{g}" for g in sorted(self._groups)]
                    + [f"+={t}" for t in sorted(self._tokens)]
                    + [f"+{p}" for p in sorted(self._paths)])
        proc = subprocess.Popen(
            watchdog_argv(registry), stdin=subprocess.PIPE,
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
            start_new_session=True, close_fds=True, text=True, bufsize=1)
        nice_watchdog(proc.pid)
        return proc

    def _write(self, *lines: str) -> None:
        """Send ``lines``; respawn (with the full registry) if the watchdog is gone.

        Each write opens with an empty line: a watchdog still parked in its shell
        (``early.watchdog_argv``) takes that one as its wake-up, a running one ignores it.
        A watchdog spawned here got ``lines`` in its argv (the registry is updated before
        any write), so nothing is written to it: it stays parked."""
        for _ in range(2):
            if self._proc is None or self._proc.poll() is not None:
                try:
                    self._proc = self._spawn()
                except OSError:
                    self._proc = None
                return
            try:
                assert self._proc.stdin is not None
                self._proc.stdin.write("\n" + "".join(f"{ln}\n" for ln in lines))
                self._proc.stdin.flush()
                return
            except (BrokenPipeError, OSError):
                self._proc = None

    def adopt(self, proc: Any, groups: Iterable[int], tokens: Iterable[str],
              paths: Iterable[str]) -> None:
        """Take over a running watchdog that already holds this registry (the early
        start's, ``early.py``, which got it in its argv)."""
        with self._lock:
            assert self._proc is None, "a lifeline adopts only before its first use"
            self._proc = proc
            self._groups.update(groups)
            self._tokens.update(tokens)
            self._paths.update(paths)

    def ensure(self) -> None:
        """Respawn the watchdog now if it died (the supervisor calls this at each check)."""
        with self._lock:
            if self._proc is None or self._proc.poll() is not None:
                self._write()

    @property
    def watchdog_pid(self) -> Optional[int]:
        return self._proc.pid if self._proc is not None else None

    def register(self, pgid: int, token: Optional[str] = None) -> None:
        """A plugin's process group, and its containment token (process/containment.py):
        the watchdog kills both when the launcher dies."""
        with self._lock:
            # What the watchdog holds already (an adopted early start's registry, in its
            # argv) is not written again: a write would wake a parked watchdog during the
            # start it is parked for
            lines = []
            if pgid not in self._groups:
                self._groups.add(pgid)
                lines.append(f"+{pgid}")
            if token and token not in self._tokens:
                self._tokens.add(token)
                lines.append(f"+={token}")
            if lines:
                self._write(*lines)

    def unregister(self, pgid: int, token: Optional[str] = None) -> None:
        """Forget a stopped plugin. A dead watchdog is not respawned for this (a new one
        gets the registry without it anyway): during a shutdown, after an outer launcher's
        SIGTERM ended the watchdog, a respawned one would only be SIGKILLed by that outer
        launcher (it carries its containment token) before it could clean up."""
        with self._lock:
            self._groups.discard(pgid)
            if token:
                self._tokens.discard(token)
            if self._proc is not None and self._proc.poll() is None:
                self._write(f"-{pgid}", *([f"-={token}"] if token else []))

    def remove_on_death(self, path: str) -> None:
        """Have the watchdog remove ``path`` (a file, or a folder of files) if ekl dies."""
        p = os.path.abspath(path)
        with self._lock:
            if p not in self._paths:  # held already: not written again (``register``)
                self._paths.add(p)
                self._write(f"+{p}")

    def private_dir(self, prefix: str) -> str:
        """A new private 0700 folder in ``/tmp`` that the watchdog removes if ekl dies,
        registered *before* ``mkdir`` (a name that turns out taken is withdrawn).
        Registered after it, a launcher SIGKILLed in between left an empty folder behind
        (two ``/tmp/ekl-ctl-*`` after a CI run)."""
        from ..fsafe import private_tmp_dir

        return private_tmp_dir(prefix, self.remove_on_death, self.forget_path)

    def forget_path(self, path: str) -> None:
        """Withdraw ``remove_on_death(path)``: a folder name registered before ``mkdir``
        that turned out taken (``fsafe.private_tmp_dir``) is not this launcher's."""
        p = os.path.abspath(path)
        with self._lock:
            if p in self._paths:
                self._paths.discard(p)
                self._write(f"-{p}")

    def close(self) -> None:
        """EOF makes the watchdog kill whatever is still registered, then exit."""
        with self._lock:
            p, self._proc = self._proc, None
            self._groups.clear()
            self._tokens.clear()
            self._paths.clear()
        if p is not None:
            try:
                assert p.stdin is not None
                p.stdin.close()
            except OSError:
                pass
            import subprocess  # an adopted early watchdog raises Popen's TimeoutExpired too

            try:
                p.wait(3)
            except subprocess.TimeoutExpired:
                p.kill()
                p.wait()


_shared: Optional[Lifeline] = None
_shared_lock = threading.Lock()


def shared() -> Lifeline:
    """This launcher's lifeline, closed at interpreter exit (which kills what remains)."""
    global _shared
    with _shared_lock:
        if _shared is None:
            _shared = Lifeline()
            early = take_watchdog()
            if early is not None:
                _shared.adopt(*early)
            atexit.register(_shared.close)
        return _shared
