"""The sd_notify protocol, so ``ekl supervise`` can be a systemd ``Type=notify`` service.

systemd hands the service an AF_UNIX datagram socket in ``$NOTIFY_SOCKET`` (a path, or an
abstract-namespace name written with a leading ``@``) and, with ``WatchdogSec=``, the
deadline in ``$WATCHDOG_USEC``. Each datagram is newline-separated ``KEY=VALUE`` lines.
We implement it here rather than depend on libsystemd or a binding: it is one ``sendto``.

Why it matters: ``READY=1`` lets ``systemctl start`` (and units ordered ``After=``) wait
until every plugin is RUNNING; ``WATCHDOG=1`` is only sent while the launcher's own loops
answer, so a wedged launcher is killed and restarted by systemd instead of sitting there
reporting nothing.

Nothing here may take the launcher down: a vanished socket or a full receive queue is
logged once and the call returns False.
"""

from __future__ import annotations

import logging
import os
import socket
import threading
import time
from typing import Any, Callable, Dict, Iterable, List, Mapping, Optional

log = logging.getLogger("ekl")

NOTIFY_SOCKET_ENV = "NOTIFY_SOCKET"
WATCHDOG_USEC_ENV = "WATCHDOG_USEC"
WATCHDOG_PID_ENV = "WATCHDOG_PID"
#: systemd shows STATUS= in ``systemctl status``; a long one is noise and a newline in it
#: would start a new assignment (a plugin named "x\nREADY=1" must not be able to send READY).
MAX_STATUS_CHARS = 512
#: longest a send may block on a full receive queue before the message is dropped
SEND_TIMEOUT_S = 0.2


def _address(value: str) -> str:
    """``@name`` is Linux's abstract namespace: a leading NUL byte on the wire."""
    return "\0" + value[1:] if value.startswith("@") else value


def one_line(text: str, limit: int = MAX_STATUS_CHARS) -> str:
    """Control characters would split or corrupt the ``KEY=VALUE`` datagram."""
    flat = "".join(c if c.isprintable() else " " for c in str(text))
    flat = " ".join(flat.split())
    return flat if len(flat) <= limit else flat[: limit - 1] + "…"


class Notifier:
    """One service's channel to systemd. Without ``$NOTIFY_SOCKET`` every call is a no-op.

    ``from_environ(unset=True)`` removes the variables from ``os.environ`` so the plugins
    the launcher starts do not inherit them: with ``NotifyAccess=all`` a plugin could
    otherwise declare the whole service READY, and a plugin using its own sd_notify would
    confuse systemd about which process the service is.
    """

    def __init__(self, address: Optional[str], watchdog_usec: Optional[int] = None) -> None:
        self.address = address or None
        self.watchdog_usec = watchdog_usec if watchdog_usec and watchdog_usec > 0 else None
        self._sock: Optional[socket.socket] = None
        self._lock = threading.Lock()
        self._warned = False

    @classmethod
    def from_environ(cls, environ: Optional[Dict[str, str]] = None, unset: bool = True) -> Notifier:
        env = os.environ if environ is None else environ
        address = env.get(NOTIFY_SOCKET_ENV) or None
        usec: Optional[int] = None
        raw = env.get(WATCHDOG_USEC_ENV)
        pid = env.get(WATCHDOG_PID_ENV)
        if raw:
            try:
                usec = int(raw)
            except ValueError:
                log.warning("$WATCHDOG_USEC is %r, not a number of microseconds; the systemd "
                            "watchdog is not pinged", raw)
        if pid and pid.strip() != str(os.getpid()):
            usec = None  # the watchdog belongs to another process (systemd's WATCHDOG_PID)
        if unset:
            for k in (NOTIFY_SOCKET_ENV, WATCHDOG_USEC_ENV, WATCHDOG_PID_ENV):
                env.pop(k, None)
        return cls(address, usec)

    @property
    def enabled(self) -> bool:
        return self.address is not None

    def watchdog_interval(self) -> Optional[float]:
        """Seconds between pings: half of ``WatchdogSec``, as sd_watchdog_enabled(3) advises."""
        return self.watchdog_usec / 2e6 if self.watchdog_usec else None

    def send(self, **fields: Any) -> bool:
        """Send ``KEY=VALUE`` lines (``send(READY=1, STATUS="...")``); False when not sent."""
        if self.address is None:
            return False
        lines = [f"{k}={one_line(str(v))}" for k, v in fields.items()]
        data = "\n".join(lines).encode("utf-8", "replace")
        with self._lock:
            try:
                if self._sock is None:
                    self._sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
                    # systemd drains at once; a full queue must not hold the launcher long
                    self._sock.settimeout(SEND_TIMEOUT_S)
                self._sock.sendto(data, _address(self.address))
                return True
            except OSError as e:
                if not self._warned:
                    self._warned = True
                    log.warning("sd_notify: cannot send to $NOTIFY_SOCKET %s: %s; systemd will "
                                "not see READY/WATCHDOG (is the unit Type=notify?)",
                                self.address, e.strerror or e)
                if self._sock is not None:
                    self._sock.close()
                    self._sock = None
                return False

    def ready(self, status: Optional[str] = None) -> bool:
        return self.send(READY=1, **({"STATUS": status} if status else {}))

    def status(self, text: str) -> bool:
        return self.send(STATUS=text)

    def watchdog(self) -> bool:
        return self.send(WATCHDOG=1)

    def reloading(self) -> bool:
        """For ``Type=notify-reload`` (systemd 253): RELOADING=1 with the monotonic time."""
        return self.send(RELOADING=1, MONOTONIC_USEC=int(time.clock_gettime(time.CLOCK_MONOTONIC) * 1e6))

    def stopping(self, status: Optional[str] = None) -> bool:
        return self.send(STOPPING=1, **({"STATUS": status} if status else {}))

    def close(self) -> None:
        with self._lock:
            if self._sock is not None:
                self._sock.close()
                self._sock = None


class WatchdogPinger(threading.Thread):
    """Sends ``WATCHDOG=1`` every ``interval`` seconds while ``alive()`` returns True.

    ``alive`` should check the launcher's own loops (say, each watcher's last loop pass is
    recent). When it returns False, or raises, the ping is skipped and systemd kills the
    service after ``WatchdogSec``: exactly what a hung supervisor deserves. The thread never
    dies of the callback's exception; it logs it once per run of failures.
    """

    def __init__(self, notifier: Notifier, alive: Callable[[], bool],
                 interval: Optional[float] = None) -> None:
        super().__init__(name="ekl-sd-watchdog", daemon=True)
        iv = interval if interval is not None else notifier.watchdog_interval()
        self.notifier = notifier
        self.alive = alive
        self.interval = iv
        self.pings = 0
        self.skipped = 0
        self._stop_event = threading.Event()

    @property
    def enabled(self) -> bool:
        return self.notifier.enabled and bool(self.interval)

    def start(self) -> None:
        if self.enabled:  # no WatchdogSec: nothing to do, no thread
            super().start()

    def run(self) -> None:
        assert self.interval
        complained = raised = False  # log each kind of trouble once per spell of it
        while not self._stop_event.wait(self.interval):
            try:
                ok = bool(self.alive())
            except Exception:  # noqa: BLE001 -- a liveness probe that throws means "not alive"
                if not raised:
                    log.exception("sd_notify watchdog: the liveness check raised; not pinging")
                    raised = True
                ok = False
            if ok:
                complained = raised = False
                self.notifier.watchdog()
                self.pings += 1
            else:
                if not complained:
                    log.warning("sd_notify watchdog: the launcher's loops are not alive; "
                                "withholding WATCHDOG=1 so systemd restarts the service")
                    complained = True
                self.skipped += 1

    def stop(self, timeout: float = 2.0) -> None:
        self._stop_event.set()
        if self.is_alive():
            self.join(timeout)


class Heartbeats:
    """The liveness check for :class:`WatchdogPinger`: every loop the launcher relies on
    calls ``beat(NAME)`` each pass; ``alive()`` is False once any of them has been silent
    for ``max_age`` seconds (a watcher stuck in a lock, a dead status writer)."""

    def __init__(self, max_age: float) -> None:
        self.max_age = max_age
        self._last: Dict[str, float] = {}
        self._lock = threading.Lock()

    def beat(self, loop: str) -> None:
        with self._lock:
            self._last[loop] = time.monotonic()

    def forget(self, loop: str) -> None:
        """A loop that ended on purpose (its plugin was removed) is no longer waited for."""
        with self._lock:
            self._last.pop(loop, None)

    def stale(self) -> List[str]:
        now = time.monotonic()
        with self._lock:
            return sorted(k for k, t in self._last.items() if now - t > self.max_age)

    def alive(self) -> bool:
        return not self.stale()


def all_running(statuses: Iterable[Mapping[str, Any]]) -> bool:
    """True when there is at least one plugin and every plugin is RUNNING: time for READY=1."""
    states = [p.get("state") for s in statuses for p in (s.get("plugins") or [])
              if isinstance(p, Mapping)]
    return bool(states) and all(st == "RUNNING" for st in states)


def summary(statuses: Iterable[Mapping[str, Any]]) -> str:
    """A one-line ``STATUS=`` text: counts per state, then the first few plugins not RUNNING.

    Example: ``3 plugins: 2 RUNNING, 1 BACKOFF; pyb BACKOFF (exited with code 1)``.
    """
    plugins = [p for s in statuses for p in (s.get("plugins") or []) if isinstance(p, Mapping)]
    if not plugins:
        return "no plugins"
    counts: Dict[str, int] = {}
    for p in plugins:
        st = str(p.get("state") or "UNKNOWN")
        counts[st] = counts.get(st, 0) + 1
    head = f"{len(plugins)} plugin{'s' if len(plugins) != 1 else ''}: " + ", ".join(
        f"{n} {st}" for st, n in sorted(counts.items(), key=lambda kv: (-kv[1], kv[0])))
    bad: List[str] = []
    for p in plugins:
        if p.get("state") == "RUNNING":
            continue
        why = p.get("fatal_reason") or p.get("last_exit") or ""
        bad.append(f"{p.get('name')} {p.get('state')}" + (f" ({why})" if why else ""))
    if bad:
        head += "; " + "; ".join(bad[:3]) + ("; …" if len(bad) > 3 else "")
    return one_line(head)
