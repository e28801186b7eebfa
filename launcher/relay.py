"""The relay behind ``ekl-python``: eKuiper's plugin on the outside, a host on the inside.

eKuiper dials nothing; it listens on ``plugin_NAME.ipc`` and waits for the plugin. The relay
dials it in the plugin's place, answers eKuiper's commands by passing them, unchanged, to
the real plugin over a private control socket, and journals the started symbols. When the
real plugin crashes or hangs, the watcher restarts it and replays the journal, so
eKuiper's rules keep running and eKuiper never notices. Data sockets stay direct between
the plugin and eKuiper: nothing is copied through here.
"""

from __future__ import annotations

import logging
import os
import signal
import threading
import time
from typing import Optional

from ekuiper import protocol
from ekuiper.runtime.logs import one_line
from ekuiper.runtime.reqloop import PeerWatch, serve_inverted
from ekuiper.transport import ReqSocket, TransportError, get_transport

from .arbiter import write_status_file
from .errors import EklError
from .instance import PluginInstance
from .ipc import private_ipc_dir, remove_ipc_dir
from .manifest import PluginManifest
from .process import Lifeline
from .resolve import Resolution
from .settings import HostSettings, SupervisorSettings
from .states import State
from .watcher import Watcher

log = logging.getLogger("ekl")
STATUS_DIR_ENV = "EKL_STATUS_DIR"
DEFAULT_STATUS_DIR = "/tmp/ekl-status"
#: eKuiper gone (its control socket closed) this long: the relay exits, as a plugin would.
HOST_LOST_GRACE_S = 2.0


def status_dir() -> str:
    return os.environ.get(STATUS_DIR_ENV) or DEFAULT_STATUS_DIR


class Relay:
    def __init__(self, manifest: PluginManifest, res: Resolution,
                 sup: SupervisorSettings, host: Optional[HostSettings] = None) -> None:
        self.manifest = manifest
        self.name = manifest.name
        self.lifeline = Lifeline()
        self.private = private_ipc_dir()
        data_dir = protocol.ipc_dir()  # where eKuiper listens: /tmp unless overridden
        self.upstream_url = protocol.control_url(self.name, data_dir)
        hs = host or HostSettings()
        hs.ipc_dir = data_dir
        self.instance = PluginInstance(res.spec, hs, lifeline=self.lifeline, private_ipc=False,
                                       control_dir=self.private)
        self.watcher = Watcher(self.instance, sup, on_state=lambda *_: self.write_status())
        self.stop_event = threading.Event()
        self.exit_code = 0
        self.upstream: Optional[ReqSocket] = None
        os.makedirs(status_dir(), exist_ok=True)
        self.status_file = os.path.join(status_dir(), f"{self.name}.json")
        # eKuiper stops us with SIGKILL: the watchdog removes what we cannot.
        self.lifeline.remove_on_death(self.private)

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
        return result

    # --- lifecycle ---------------------------------------------------------------------

    def write_status(self) -> None:
        try:
            write_status_file(self.status_file, {
                "version": 1, "launcher_pid": os.getpid(), "written_at": time.time(),
                "mode": "ekl-python", "plugins": [self.watcher.status()]})
        except OSError as e:
            log.debug("status file %s: %s", self.status_file, e)

    def _start_plugin(self) -> None:
        try:
            self.watcher.start(fail_fast=False)
        except Exception as e:  # never let the starter thread die silently
            log.error("plugin %s: %s", self.name, e)

    def run(self) -> int:
        def on_signal(signum: int, _f: object) -> None:
            self.stop_event.set()

        for s in (signal.SIGTERM, signal.SIGINT):
            signal.signal(s, on_signal)
        t = get_transport()
        try:
            # eKuiper is waiting for the handshake: dial first, start the plugin meanwhile.
            self.upstream = t.dial_req(self.upstream_url, recv_timeout_ms=protocol.KEEPALIVE_MS,
                                       send_timeout_ms=self.instance.settings.plugin_send_timeout_ms,
                                       retries=protocol.DIAL_RETRIES,
                                       interval_s=protocol.DIAL_INTERVAL_S)
        except TransportError as e:
            log.error("ekl-python: no eKuiper listening on %s (%s); the plugin name must equal "
                      "%s", self.upstream_url, e, self.manifest.path.name)
            self._cleanup()
            return 1
        starter = threading.Thread(target=self._start_plugin, daemon=True)
        starter.start()
        up = self.upstream
        loop = threading.Thread(target=serve_inverted, daemon=True, name="relay",
                                args=(up, self.handle, "relay", self.stop_event.is_set))
        loop.start()
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

    def _cleanup(self) -> None:
        self.stop_event.set()
        self.watcher.stop()
        if self.upstream is not None:
            self.upstream.close()
        self.lifeline.close()
        remove_ipc_dir(self.private)
        try:
            os.unlink(self.status_file)
        except OSError:
            pass
