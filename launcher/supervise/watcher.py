"""Supervise one plugin: start, health checks, restarts with back-off, journal replay.

One ``Watcher`` per plugin, one monitor thread each. The plugin's host-side channels live
in its ``PluginInstance`` and survive restarts; a restart starts a new process, then
replays the journal so sources, sinks and functions come back without anyone asking.
"""

from __future__ import annotations

import logging
import threading
import time
from collections import deque
from dataclasses import dataclass, field
from typing import Any, Callable, Deque, Dict, List, Optional, Tuple

from ..errors import EklError, PluginStartError
from ..host.instance import PluginInstance
from ..settings import SupervisorSettings
from .health import Health, TreeSampler
from .states import State, check_transition

log = logging.getLogger("ekl")
#: How often the monitor looks again while no process exists (between restarts).
EXIT_POLL_S = 0.05


@dataclass
class RestartRecord:
    at: float
    reason: str
    exit: Optional[str] = None
    replay: List[Dict[str, Any]] = field(default_factory=list)

    def to_dict(self) -> Dict[str, Any]:
        return {"at": self.at, "reason": self.reason, "exit": self.exit, "replay": self.replay}


class _Op:
    def __init__(self, op: str) -> None:
        self.op = op
        self.done = threading.Event()


class Watcher:
    def __init__(self, instance: PluginInstance,
                 settings: Optional[SupervisorSettings] = None,
                 on_state: Optional[Callable[[Watcher, State], None]] = None) -> None:
        self.instance = instance
        self.name = instance.name
        self.settings = settings or SupervisorSettings()
        self.on_state = on_state
        self.state = State.STOPPED
        self.restarts: List[RestartRecord] = []
        self.last_exit: Optional[str] = None
        self.fatal_reason: Optional[str] = None
        self.started_at: Optional[float] = None
        self.health = Health(alive=False)
        self._starts: Deque[float] = deque()
        self._failures = 0          # consecutive, for the back-off
        self._rss_strikes = 0
        self._sampler = TreeSampler()
        self._running_since = 0.0
        self._stop = threading.Event()
        self._wake = threading.Event()  # plugin exit or stop request
        self._thread: Optional[threading.Thread] = None
        self._changed = threading.Condition()
        self._stopping = threading.Lock()
        #: operator requests (``ekl restart`` ...), run by the monitor thread between steps
        self._ops: Deque[_Op] = deque()
        #: stopped by an operator: the monitor leaves the plugin alone until ``start``
        self._held = False

    # --- state -------------------------------------------------------------------------

    def _set(self, state: State) -> None:
        with self._changed:
            if self._stop.is_set() and state not in (State.STOPPING, State.STOPPED):
                return  # a stop was asked for: the monitor's late news no longer counts
            check_transition(self.state, state)
            self.state = state
            self._changed.notify_all()
        log.debug("plugin %s: %s", self.name, state)
        if self.on_state:
            self.on_state(self, state)

    def wait_for(self, *states: State, timeout: Optional[float] = None) -> bool:
        """Block until the state is one of ``states``; False on timeout."""
        with self._changed:
            return self._changed.wait_for(lambda: self.state in states, timeout)

    # --- lifecycle ---------------------------------------------------------------------

    def start(self, fail_fast: bool = False) -> None:
        """Start the plugin and the monitor. ``fail_fast`` raises if the first start fails."""
        self._stop.clear()
        ok = self._start_once("start")
        if not ok and fail_fast:
            raise PluginStartError(self.fatal_reason or self.last_exit or "start failed")
        self._thread = threading.Thread(target=self._monitor, name=f"watch-{self.name}",
                                        daemon=True)
        self._thread.start()

    def _start_once(self, why: str) -> bool:
        """One start attempt; True when RUNNING. Replays the journal after a restart."""
        now = time.monotonic()
        window = self.settings.start_limit_window_s
        while self._starts and now - self._starts[0] > window:
            self._starts.popleft()
        if len(self._starts) >= self.settings.start_limit:
            self.fatal_reason = (f"{len(self._starts)} starts within {window:.0f} s "
                                 f"(start limit); not retrying. Last: {self.last_exit}")
            log.error("plugin %s is FATAL: %s", self.name, self.fatal_reason)
            self._set(State.FATAL)
            return False
        self._starts.append(now)
        self._set(State.STARTING)
        try:
            self.instance.start_process()
        except PluginStartError as e:
            self.last_exit = str(e)
            log.error("%s", e)
            self._failures += 1
            self._set(State.BACKOFF)
            return False
        self.started_at = time.time()
        self._running_since = time.monotonic()
        if self.instance.process is not None:
            self.instance.process.on_exit(self._wake.set)
        self._rss_strikes = 0
        self._set(State.RUNNING)
        if why != "start" and len(self.instance.journal):
            results = self.instance.replay()
            if self.restarts:
                self.restarts[-1].replay = [r.to_dict() for r in results]
            ok = sum(r.ok for r in results)
            log.info("plugin %s: replayed %d/%d started symbols", self.name, ok, len(results))
        return True

    def stop(self) -> List[int]:
        """Stop supervising and stop the plugin; returns surviving pids (none expected)."""
        with self._stopping:
            return self._stop_locked()

    def _stop_locked(self) -> List[int]:
        self._stop.set()
        self._wake.set()
        if self._thread is not None and self._thread is not threading.current_thread():
            self._thread.join(timeout=self.settings.probe_timeout_s + 2)
        self._set(State.STOPPING)
        survivors = self.instance.close()
        self._set(State.STOPPED)
        return survivors

    # --- monitor -----------------------------------------------------------------------

    def _monitor(self) -> None:
        next_check = time.monotonic() + self.settings.health_interval_s
        while not self._stop.is_set():
            if self._serve_ops():
                next_check = time.monotonic() + self.settings.health_interval_s
                continue
            st = self.state
            if self._held or st in (State.FATAL, State.EXITED, State.STOPPED):
                self._wake.wait(0.2)
                self._wake.clear()
                continue
            if st == State.BACKOFF:
                self._backoff_and_restart()
                next_check = time.monotonic() + self.settings.health_interval_s
                continue
            proc = self.instance.process
            if proc is None or proc.popen is None:
                self._stop.wait(EXIT_POLL_S)
                continue
            # Sleep until the next health check, waking at once if the plugin dies.
            self._wake.wait(max(0.0, next_check - time.monotonic()))
            self._wake.clear()
            if self._stop.is_set():
                break
            if not proc.alive():
                self._died(proc.exit_description(), crashed=proc.returncode != 0)
                continue
            if (self._failures and time.monotonic() - self._running_since
                    >= self.settings.startsecs):
                self._failures = 0  # healthy long enough: the back-off starts over
            if time.monotonic() >= next_check:
                next_check = time.monotonic() + self.settings.health_interval_s
                problem = self._check()
                if problem and not self._stop.is_set():
                    self._restart_unhealthy(problem)

    def _check(self) -> Optional[str]:
        proc = self.instance.process
        if proc is None:
            return None
        h = self._sampler.sample(proc)
        self.health = h
        if h.problem:
            return h.problem
        limit = self.settings.max_rss_mb
        if limit is not None and h.rss_bytes > limit * 1024 * 1024:
            self._rss_strikes += 1
            if self._rss_strikes >= self.settings.rss_strikes:
                return (f"memory: rss {h.rss_bytes / 1048576:.0f} MB above max_rss "
                        f"{limit:.0f} MB for {self._rss_strikes} checks")
        else:
            self._rss_strikes = 0
        try:
            self.instance.ping(self.settings.probe_timeout_s)
        except EklError as e:
            if not self.instance.alive():
                return None  # it died; the exit path reports it
            return f"hung: no answer to ping within {self.settings.probe_timeout_s:.1f} s ({e})"
        return None

    def _died(self, exit_desc: str, crashed: bool) -> None:
        self.last_exit = exit_desc
        self.instance.stop_process(timeout_s=1.0)  # reap, and kill any leftover descendants
        policy = self.settings.restart
        log.warning("plugin %s %s", self.name, exit_desc)
        if policy == "never" or (policy == "on-failure" and not crashed):
            self._set(State.EXITED)
            return
        self.restarts.append(RestartRecord(time.time(), f"process {exit_desc}", exit_desc))
        self._failures += 1
        self._set(State.BACKOFF)

    def _restart_unhealthy(self, problem: str) -> None:
        log.warning("plugin %s: %s; restarting", self.name, problem)
        proc = self.instance.process
        self.instance.stop_process(timeout_s=1.0)
        self.last_exit = proc.exit_description() if proc else None
        if self.settings.restart == "never":
            self._set(State.EXITED)
            return
        self.restarts.append(RestartRecord(time.time(), problem, self.last_exit))
        self._failures += 1
        self._set(State.BACKOFF)

    @property
    def consecutive_failures(self) -> int:
        """Failures since the plugin last stayed up for ``startsecs`` (drives the back-off)."""
        return self._failures

    def backoff_delay(self) -> float:
        s = self.settings
        n = max(1, self._failures)
        return min(s.backoff_initial_s * (s.backoff_factor ** (n - 1)), s.backoff_max_s)

    def _backoff_and_restart(self) -> None:
        delay = self.backoff_delay()
        log.info("plugin %s: restarting in %.1f s", self.name, delay)
        end = time.monotonic() + delay
        while time.monotonic() < end:  # an operator's request cuts the wait short
            self._wake.wait(end - time.monotonic())
            self._wake.clear()
            if self._stop.is_set() or self._ops:
                return
        self._start_once("restart")

    # --- operator requests ---------------------------------------------------------------

    def operate(self, op: str, timeout_s: float) -> Tuple[bool, str, Optional[str]]:
        """Run ``op`` (restart, stop, start, reset, states) and wait for the resulting state.

        Called from the control socket's thread; the monitor thread does the work between
        its own steps, so an operator never races a restart in progress.
        """
        if op == "states":
            return True, str(self.state), None
        if self._thread is None or not self._thread.is_alive():
            return False, str(self.state), f"plugin {self.name} is not supervised"
        req = _Op(op)
        self._ops.append(req)
        self._wake.set()
        if not req.done.wait(timeout_s):
            return False, str(self.state), f"no result within {timeout_s:.0f} s"
        if op == "stop":
            ok = self.state == State.STOPPED
        else:
            self.wait_for(State.RUNNING, State.FATAL, State.EXITED, State.STOPPED,
                          timeout=timeout_s)
            ok = self.state == State.RUNNING
        why = None if ok else (self.fatal_reason or self.last_exit or f"it is {self.state}")
        return ok, str(self.state), why

    def _serve_ops(self) -> bool:
        """Run queued operator requests (monitor thread); True when one ran."""
        ran = False
        while self._ops:
            req = self._ops.popleft()
            try:
                self._apply(req.op)
            except Exception:  # noqa: BLE001 - the monitor must outlive a failed request
                log.exception("plugin %s: %s failed", self.name, req.op)
            finally:
                req.done.set()
            ran = True
        return ran

    def _apply(self, op: str) -> None:
        log.info("plugin %s: %s requested by an operator", self.name, op)
        if op in ("stop", "restart") and self.state in (State.RUNNING, State.STARTING,
                                                          State.BACKOFF):
            proc = self.instance.process
            self._set(State.STOPPING)
            self.instance.stop_process()
            self.last_exit = proc.exit_description() if proc else self.last_exit
            self._set(State.STOPPED)
        if op == "stop":
            self._held = True
            return
        self._held = False
        if op == "reset":
            self._starts.clear()
            self._failures = 0
            self.fatal_reason = None
        if op == "restart":
            self.restarts.append(RestartRecord(time.time(), "restart requested (ekl restart)",
                                               self.last_exit))
        if self.state in (State.STOPPED, State.EXITED, State.FATAL):
            self._start_once("restart")

    # --- status ------------------------------------------------------------------------

    def status(self) -> Dict[str, Any]:
        inst = self.instance
        running = self.state == State.RUNNING
        h = self.health
        return {
            "name": self.name,
            "state": str(self.state),
            "pid": inst.pid if running else None,
            "started_at": self.started_at,
            "uptime": (time.time() - self.started_at) if running and self.started_at else 0.0,
            "restarts": len(self.restarts),
            "last_restarts": [r.to_dict() for r in self.restarts[-5:]],
            "last_exit": self.last_exit,
            "fatal_reason": self.fatal_reason,
            "rss": h.rss_bytes if running else 0,
            "cpu_percent": round(h.cpu_percent, 1) if running else 0.0,
            "threads": h.threads if running else 0,
            "open_files": h.open_files if running else 0,
            "processes": h.processes if running else 0,
            "symbols": inst.journal.symbols(),
            "refCount": inst.journal.ref_counts(),
            "interpreter": inst.spec.interpreter,
            "environment": inst.spec.environment,
            "ipc_dir": inst.ipc_dir,
            "control_dir": inst.control_dir,
            "notes": list(h.notes),
        }
