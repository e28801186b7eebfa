"""The relay behind ``ekl-python``: eKuiper's plugin on the outside, a host on the inside.

eKuiper dials nothing; it listens on ``plugin_NAME.ipc`` and waits for the plugin. The relay
dials it in the plugin's place, answers eKuiper's commands by passing them, unchanged, to
the real plugin over a private control socket, and journals the started symbols. When the
real plugin crashes or hangs, the watcher restarts it and replays the journal, so
eKuiper's rules keep running and eKuiper never notices. Data sockets stay direct between
the plugin and eKuiper: nothing is copied through here.
"""

from __future__ import annotations

import os
import signal
import threading
import time

from ekuiper import lazylog, protocol
from ekuiper.reqrep import PeerWatch, one_line, serve_inverted
from ekuiper.sigevent import SignalEvent
from ekuiper.transport import ReqSocket, TransportError, get_transport

from ..errors import EklError
from ..host.instance import PluginInstance
from ..plugin import Plugin
from ..settings import SupervisorSettings
from ..supervise.states import State
from ..supervise.watcher import Watcher

TYPE_CHECKING = False  # typing is not loaded at run time on the start path (docs/architecture.md)
if TYPE_CHECKING:
    from typing import Optional

if TYPE_CHECKING:  # loaded by _open_bookkeeping, after the dial: eKuiper does not wait for it
    from ..supervise.control import ControlServer
    from ..supervise.status import StatusWriter

log = lazylog.getLogger("ekl")
#: eKuiper gone (its control socket closed) this long: the relay exits, as a plugin would.
HOST_LOST_GRACE_S = 2.0
#: The status file and the operator's socket open once eKuiper's first command has been
#: answered, or after this long: their imports would hold the GIL while that command waits
#: to be relayed (they cost the first answer 6-10 ms). eKuiper sends its first command as
#: soon as the plugin is up, so the status file appears within a few ms of RUNNING.
BOOKKEEPING_WAIT_S = 1.0


class Relay:
    def __init__(self, plugin: Plugin, instance: PluginInstance,
                 sup: SupervisorSettings, status_folder: str) -> None:
        """``instance``: prepared by the start path with ``relay=True`` (data sockets where
        eKuiper listens, the control socket in a private folder the plugin dials);
        ``status_folder``: checked by the caller before the plugin was spawned."""
        self.plugin = plugin
        self.name = plugin.name
        self.instance = instance
        self.upstream_url = protocol.control_url(self.name, instance.ipc_dir)
        self.watcher = Watcher(self.instance, sup, on_state=lambda *_: self.write_status())
        #: set by the signal handlers while the main thread waits on it
        self.stop_event = SignalEvent()
        self.exit_code = 0
        self.upstream: Optional[ReqSocket] = None
        self.status_folder = status_folder
        #: opened in ``run`` once the plugin is starting: bookkeeping waits, eKuiper does not
        self.status: Optional[StatusWriter] = None
        self.control: Optional[ControlServer] = None
        #: set once a command from eKuiper has been answered (``BOOKKEEPING_WAIT_S``)
        self.answered = threading.Event()

    def _open_bookkeeping(self) -> None:
        """The status file and the operator's control socket (``ekl operate``)."""
        lazylog.load()  # the lazy window ends: modules from here on use logging directly
        from ..supervise.control import ControlServer
        from ..supervise.status import MODE_EKL_PYTHON, STATUS_DIR_ENV, StatusWriter, status_document

        folder = self.status_folder
        control = ControlServer(lambda: [self.name],
                                lambda op, _name, t: self.watcher.operate(op, t))
        try:
            self.status = StatusWriter.open(
                os.path.join(folder, f"{self.name}.json"),
                lambda: status_document([self.watcher.status()], MODE_EKL_PYTHON,
                                        control.path),
                option=f"status folder (${STATUS_DIR_ENV})")
        except BaseException:
            control.close()
            raise
        self.control = control

    # --- eKuiper's commands ------------------------------------------------------------

    def handle(self, data: bytes) -> bytes:
        """Pass one command to the real plugin; its result goes back to eKuiper unchanged."""
        w = self.watcher
        timeout = self.instance.settings.command_timeout_s
        if not w.wait_for(State.RUNNING, State.FATAL, State.EXITED, timeout=timeout):
            return f"plugin {self.name} is {w.state}; not running after {timeout:.0f} s".encode()
        if w.state != State.RUNNING:
            return one_line(f"plugin {self.name} is {w.state}: "
                            f"{w.fatal_reason or w.last_exit}").encode()
        try:
            cmd, ctrl = protocol.decode_command(data)
        except protocol.ProtocolError:
            cmd, ctrl = "", None  # the plugin answers malformed commands itself
        try:
            result = self.instance.request(data, "relayed command")
        except EklError as e:
            return one_line(e).encode()
        if result == protocol.REPLY_OK and ctrl is not None:
            if cmd == protocol.CMD_START:
                self.instance.journal.record_start(ctrl, data)
            elif cmd == protocol.CMD_STOP:
                self.instance.journal.record_stop(ctrl)
        self.answered.set()
        return result

    # --- lifecycle ---------------------------------------------------------------------

    def write_status(self) -> None:
        if self.status is not None:
            self.status.changed()

    def _start_plugin(self) -> None:
        try:
            self.watcher.start(fail_fast=False)
        except Exception as e:  # never let the starter thread die silently
            log.error("plugin %s: %s", self.name, e)

    def run(self) -> int:
        def on_signal(signum: int, _f: object) -> None:
            self.stop_event.set()

        for s in (signal.SIGTERM, signal.SIGINT, signal.SIGHUP):  # SIGHUP stops too
            signal.signal(s, on_signal)
        # What eKuiper waits for is the plugin's own start (its first command waits for
        # RUNNING), so the plugin is spawned first and everything else overlaps its boot:
        # the dial (eKuiper listens before it starts us) and then the bookkeeping.
        starter = threading.Thread(target=self._start_plugin, daemon=True, name="starter")
        starter.start()
        try:
            self.upstream = self._dial_upstream()  # None: told to stop meanwhile (exit 0)
        except TransportError as e:
            log.error("ekl-python: no eKuiper listening on %s (%s); the plugin name must equal "
                      "%s", self.upstream_url, e, self.plugin.path.name)
            self.exit_code = 1
        if self.upstream is None:
            self._cleanup()
            starter.join(timeout=self.instance.settings.init_timeout_s + 1)
            return self.exit_code
        up = self.upstream
        loop = threading.Thread(target=serve_inverted, daemon=True, name="relay",
                                args=(up, self.handle, "relay", self.stop_event.is_set))
        loop.start()
        deadline = time.monotonic() + BOOKKEEPING_WAIT_S
        while (not self.answered.wait(0.05) and not self.stop_event.is_set()
               and time.monotonic() < deadline):
            pass
        try:
            self._open_bookkeeping()
        except BaseException:  # a status folder that cannot be used: stop what started
            self._cleanup()
            raise
        host = PeerWatch(up, HOST_LOST_GRACE_S)
        next_status = 0.0
        while not self.stop_event.wait(0.2):
            now = time.monotonic()
            if now >= next_status:
                self.write_status()
                next_status = now + self.watcher.settings.health_interval_s
            if self.watcher.state == State.FATAL:
                log.error("plugin %s is FATAL: %s", self.name, self.watcher.fatal_reason)
                self.exit_code = 1
                break
            if host.gone():
                log.warning("ekl-python: eKuiper went away; stopping plugin %s", self.name)
                break
        starter.join(timeout=self.instance.settings.init_timeout_s + 1)
        self._cleanup()
        return self.exit_code

    def _dial_upstream(self) -> Optional[ReqSocket]:
        """eKuiper's control socket, dialled as the SDK dials it (``DIAL_RETRIES`` more
        tries ``DIAL_INTERVAL_S`` apart; TransportError when all fail), except that a stop
        (SIGTERM, Ctrl-C) ends the dial at once: None then. A blocking dial with retries
        would keep a stopped ekl-python, and its plugin, for up to 5 s."""
        last: Optional[TransportError] = None
        for _ in range(protocol.DIAL_RETRIES + 1):
            try:
                return get_transport().dial_req(
                    self.upstream_url, recv_timeout_ms=protocol.KEEPALIVE_MS,
                    send_timeout_ms=self.instance.settings.plugin_send_timeout_ms,
                    retries=0, interval_s=0)
            except TransportError as e:
                last = e
            if self.stop_event.wait(protocol.DIAL_INTERVAL_S):
                return None
        assert last is not None
        raise last

    def _cleanup(self) -> None:
        self.stop_event.set()
        self.watcher.stop()  # closes the instance: its private control folder goes too
        if self.upstream is not None:
            self.upstream.close()
        if self.status is not None:
            self.status.remove()
        if self.control is not None:
            self.control.close()
