"""Supervise one plugin: start, health checks, restarts with back-off, journal replay.

One ``Watcher`` per plugin, one monitor thread each. The plugin's host-side channels live
in its ``PluginInstance`` and survive restarts; a restart starts a new process, then
replays the journal so sources, sinks and functions come back without anyone asking.

The monitor loop cannot die: an unexpected exception in one step is logged with its
traceback, the plugin is stopped and restarted (counted, the reason recorded), and the
loop goes on. Supervision that stops silently is worse than none.
"""

from __future__ import annotations

import threading
import time
from collections import deque

from ekuiper import lazylog
from ekuiper.record import field, record

from ..errors import EklError, PluginStartError
from ..host.instance import PluginInstance
from ..process import cap_text
from ..process.containment import mode as containment_mode
from ..settings import SupervisorSettings
from .health import Health, TreeSampler, tree_rss
from .states import State, check_transition

TYPE_CHECKING = False  # typing is not loaded at run time on the start path (docs/architecture.md)
if TYPE_CHECKING:
    from typing import Any, Callable, Deque, Dict, List, Optional, Tuple

log = lazylog.getLogger("ekl")
#: How often the monitor looks again while no process exists (between restarts).
EXIT_POLL_S = 0.05
#: Restart records kept in memory (the count is kept separately and never drops).
MAX_RESTART_RECORDS = 100
#: SIGTERM grace when a plugin is restarted for memory: it keeps growing meanwhile.
MEMORY_KILL_GRACE_S = 0.2
#: SIGTERM grace when a plugin is restarted because it hangs: its other symbols may still
#: close cleanly, but data should flow again soon.
HUNG_KILL_GRACE_S = 0.5


@record
class RestartRecord:
    at: float
    reason: str
    exit: Optional[str] = None
    replay: List[Dict[str, Any]] = field(default_factory=list)

    def to_dict(self) -> Dict[str, Any]:
        return {"at": self.at, "reason": cap_text(self.reason), "exit": cap_text(self.exit),
                "replay": self.replay}


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
        #: every restart ever counted (``restarts`` keeps only the last records)
        self.restart_count = 0
        #: unexpected exceptions the monitor survived (each one restarted the plugin)
        self.internal_errors = 0
        #: per-symbol liveness from the last ping (None: the official SDK's plain ``ok``)
        self.liveness: Optional[List[Dict[str, Any]]] = None
        self.last_exit: Optional[str] = None
        self.fatal_reason: Optional[str] = None
        self.started_at: Optional[float] = None
        self.health = Health(alive=False)
        self._starts: Deque[float] = deque()
        self._failures = 0          # consecutive, for the back-off
        self._rss_strikes = 0
        self._next_rss = 0.0
        self._rss_fast = False
        #: a start failed and no restart was counted for it yet
        self._pending_restart: Optional[str] = None
        #: the last start's error (``start(fail_fast=True)`` raises it as it came)
        self._start_error: Optional[EklError] = None
        #: a restart asked for from outside (a hung call seen by ``ekl run``)
        self._restart_request: Optional[str] = None
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
        self._start_error = None
        ok = self._start_once("start")
        if not ok and fail_fast:
            if self._start_error is not None and not isinstance(self._start_error,
                                                                PluginStartError):
                raise self._start_error  # bad input (a socket in use): its own exit code
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
        if self._pending_restart is not None:  # the last start failed before its handshake
            self._count_restart(self._pending_restart, self.last_exit)
            self._pending_restart = None
        self._set(State.STARTING)
        try:
            self.instance.start_process()
        except EklError as e:  # PluginStartError, or a socket that cannot be listened on
            self._start_error = e
            self.last_exit = cap_text(str(e))
            log.error("%s", e)
            self._failures += 1
            self._pending_restart = f"start failed: {self.last_exit}"
            self._set(State.BACKOFF)
            return False
        self.started_at = time.time()
        self._running_since = time.monotonic()
        if self.instance.process is not None:
            self.instance.process.on_exit(self._wake.set)
        self._rss_strikes = 0
        self._rss_fast = False
        self._next_rss = 0.0
        self.liveness = None
        self._set(State.RUNNING)
        if why != "start" and len(self.instance.journal):
            results = self.instance.replay()
            if self.restarts:
                self.restarts[-1].replay = [r.to_dict() for r in results]
            ok = sum(r.ok for r in results)
            log.info("plugin %s: replayed %d/%d started symbols", self.name, ok, len(results))
        return True

    def stop(self, interrupted: bool = False) -> List[int]:
        """Stop supervising and stop the plugin; returns surviving pids (none expected).
        ``interrupted``: the user pressed Ctrl-C; stop fast (``PluginInstance.close``)."""
        with self._stopping:
            return self._stop_locked(interrupted)

    def _stop_locked(self, interrupted: bool = False) -> List[int]:
        self._stop.set()
        self._wake.set()
        if self._thread is not None and self._thread is not threading.current_thread():
            self._thread.join(timeout=self.settings.probe_timeout_s + 2)
        self._set(State.STOPPING)
        survivors = self.instance.close(interrupted)
        self._set(State.STOPPED)
        return survivors

    # --- monitor -----------------------------------------------------------------------

    def _monitor(self) -> None:
        next_check = time.monotonic() + self.settings.health_interval_s
        while not self._stop.is_set():
            try:
                next_check = self._step(next_check)
            except Exception as e:  # noqa: BLE001 - the loop others rely on must not die
                self._internal_error(e)
                next_check = time.monotonic() + self.settings.health_interval_s

    def _internal_error(self, err: Exception) -> None:
        """A bug in a monitor step: log it in full, restart the plugin, keep supervising."""
        self.internal_errors += 1
        log.exception("plugin %s: supervisor error (%s: %s); restarting the plugin",
                      self.name, type(err).__name__, err)
        reason = cap_text(f"supervisor error: {type(err).__name__}: {err}")
        try:
            proc = self.instance.process
            self.instance.stop_process(timeout_s=1.0)
            self.last_exit = proc.exit_description() if proc else self.last_exit
            if self.state in (State.STARTING, State.RUNNING) and not self._stop.is_set():
                self._count_restart(reason, self.last_exit)
                self._failures += 1
                self._set(State.BACKOFF)
        except Exception:  # noqa: BLE001 - even the recovery failed: log, wait, go on
            log.exception("plugin %s: recovering from a supervisor error failed", self.name)
        self._stop.wait(0.1)  # a bug that repeats at once must not spin

    def _step(self, next_check: float) -> float:
        """One pass of the monitor; returns when the next health check is due."""
        if self._serve_ops():
            return time.monotonic() + self.settings.health_interval_s
        st = self.state
        if self._held or st in (State.FATAL, State.EXITED, State.STOPPED):
            self._wake.wait(0.2)
            self._wake.clear()
            return next_check
        if st == State.BACKOFF:
            self._backoff_and_restart()
            return time.monotonic() + self.settings.health_interval_s
        proc = self.instance.process
        if proc is None or proc.popen is None:
            self._stop.wait(EXIT_POLL_S)
            return next_check
        # Sleep until the next check (health, or memory near its limit), waking at once if
        # the plugin dies or a restart is asked for.
        due = min(next_check, self._next_rss) if self._rss_fast else next_check
        self._wake.wait(max(0.0, due - time.monotonic()))
        self._wake.clear()
        if self._stop.is_set():
            return next_check
        if not proc.alive():
            self._died(proc.exit_description(), crashed=proc.returncode != 0)
            return next_check
        request, self._restart_request = self._restart_request, None
        if request:
            self._restart_unhealthy(request, grace_s=HUNG_KILL_GRACE_S)
            return time.monotonic() + self.settings.health_interval_s
        now = time.monotonic()
        if self._failures and now - self._running_since >= self.settings.startsecs:
            self._failures = 0  # healthy long enough: the back-off starts over
        if self._rss_fast and now >= self._next_rss and now < next_check:
            problem = self._memory(tree_rss(self._sampler, proc))
            if problem:
                self._restart_unhealthy(problem, grace_s=MEMORY_KILL_GRACE_S)
                return time.monotonic() + self.settings.health_interval_s
        if now >= next_check:
            next_check = now + self.settings.health_interval_s
            problem = self._check()
            if problem and not self._stop.is_set():
                grace = (MEMORY_KILL_GRACE_S if problem.startswith("memory:") else
                         HUNG_KILL_GRACE_S if problem.startswith("hung:") else 1.0)
                self._restart_unhealthy(problem, grace_s=grace)
        return next_check

    def request_restart(self, reason: str) -> None:
        """Restart the plugin from the monitor thread (``ekl run`` saw a hung call)."""
        self._restart_request = reason
        self._wake.set()

    def _memory(self, rss: int) -> Optional[str]:
        """Strike counting against ``max_rss``; switches to fast sampling near the limit."""
        limit = self.settings.max_rss_mb
        if limit is None:
            return None
        limit_b = limit * 1024 * 1024
        st = self.settings
        # Sample again in half the time the headroom lasts at rss_growth_mb_s.
        headroom_s = max(0.0, limit_b - rss) / (st.rss_growth_mb_s * 1048576)
        interval = min(st.health_interval_s, max(st.rss_fast_interval_s, headroom_s / 2))
        self._rss_fast = interval < st.health_interval_s
        self._next_rss = time.monotonic() + interval
        if rss > limit_b:
            self._rss_strikes += 1
            if self._rss_strikes >= self.settings.rss_strikes:
                return (f"memory: rss {rss / 1048576:.0f} MB above max_rss "
                        f"{limit:.0f} MB for {self._rss_strikes} checks")
        else:
            self._rss_strikes = 0
        return None

    def _check(self) -> Optional[str]:
        proc = self.instance.process
        if proc is None:
            return None
        if self.instance.lifeline is not None:
            self.instance.lifeline.ensure()  # a killed watchdog comes back with the registry
        h = self._sampler.sample(proc)
        self.health = h
        if h.problem:
            return h.problem
        problem = self._memory(h.rss_bytes)
        if problem:
            return problem
        try:
            probe = self.instance.probe(self.settings.probe_timeout_s)
        except EklError as e:
            if not self.instance.alive():
                return None  # it died; the exit path reports it
            return f"hung: no answer to ping within {self.settings.probe_timeout_s:.1f} s ({e})"
        if probe is not None:
            self.liveness = probe.symbols
            stuck = probe.hung(self.settings.call_timeout_s)
            if stuck is not None:
                what = "call" if stuck.get("kind") == "func" else "record"
                return (f"hung: {stuck.get('kind')} {stuck.get('symbol')} busy with one "
                        f"{what} for {stuck.get('busy_s'):.1f} s (call timeout "
                        f"{self.settings.call_timeout_s:.1f} s)")
        return None

    def _count_restart(self, reason: str, exit_desc: Optional[str]) -> None:
        self.restart_count += 1
        self.restarts.append(RestartRecord(time.time(), cap_text(reason) or "",
                                           cap_text(exit_desc)))
        if len(self.restarts) > MAX_RESTART_RECORDS:
            del self.restarts[:len(self.restarts) - MAX_RESTART_RECORDS]

    def _died(self, exit_desc: str, crashed: bool) -> None:
        self.last_exit = cap_text(exit_desc)
        self.instance.stop_process(timeout_s=1.0)  # reap, and kill any leftover descendants
        policy = self.settings.restart
        log.warning("plugin %s %s", self.name, exit_desc)
        if policy == "never" or (policy == "on-failure" and not crashed):
            self._set(State.EXITED)
            return
        self._count_restart(f"process {exit_desc}", exit_desc)
        self._failures += 1
        self._set(State.BACKOFF)

    def _restart_unhealthy(self, problem: str, grace_s: float = 1.0) -> None:
        log.warning("plugin %s: %s; restarting", self.name, problem)
        proc = self.instance.process
        self.instance.stop_process(timeout_s=grace_s)
        self.last_exit = proc.exit_description() if proc else None
        if self.settings.restart == "never":
            self.fatal_reason = cap_text(problem)
            self._set(State.EXITED)
            return
        self._count_restart(problem, self.last_exit)
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
            self._pending_restart = None  # this restart is counted here, once
            self._count_restart("restart requested (ekl restart)", self.last_exit)
        if self.state in (State.STOPPED, State.EXITED, State.FATAL):
            self._start_once("restart")

    # --- status ------------------------------------------------------------------------

    def status(self) -> Dict[str, Any]:
        inst = self.instance
        state = self.state
        # Never RUNNING for a dead pid: between the death and the monitor's news, say BACKOFF.
        if state == State.RUNNING and not inst.alive():
            state = State.BACKOFF
        running = state == State.RUNNING
        h = self.health
        return {
            "name": self.name,
            "state": str(state),
            "pid": inst.pid if running else None,
            "started_at": self.started_at,
            "uptime": (time.time() - self.started_at) if running and self.started_at else 0.0,
            "restarts": self.restart_count,
            "last_restarts": [r.to_dict() for r in self.restarts[-5:]],
            "last_exit": cap_text(self.last_exit),
            "fatal_reason": cap_text(self.fatal_reason),
            "internal_errors": self.internal_errors,
            "containment": containment_mode(),
            # each running symbol: liveness and counters, as the SDK's ping answer has them
            "symbol_stats": self.liveness if running else None,
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
