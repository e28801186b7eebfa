"""The host side of one plugin: its process, control channel, symbols and journal.

This is ekl's counterpart of eKuiper's ``PluginIns``. The data channels it opens for
symbols (source listeners, sink writers, function listeners) outlive the plugin process,
as in eKuiper, so a restarted plugin re-dials the same sockets after the journal replay.
"""

from __future__ import annotations

import os
import stat
import threading
import time

from ekuiper import lazylog, protocol
from ekuiper.protocol import Control, Meta

from ..early import CACHE_ENV, Early
from ..early import forget as forget_early
from ..early import record as record_early
from ..early import take as take_early
from ..errors import CommandError, EklError, HostTimeout, PluginStartError
from ..process import LaunchSpec, PluginProcess
from ..process.lifeline import Lifeline
from ..settings import HostSettings
from .control import ControlChannel, Probe, check_result
from .functions import FunctionClient
from .ipc import PluginDied, remove_ipc_dir
from .journal import Journal, ReplayResult, journal_key
from .sinks import SinkWriter
from .sources import SourceStream

TYPE_CHECKING = False  # typing is not loaded at run time on the start path (docs/architecture.md)
if TYPE_CHECKING:
    from typing import Dict, List, Optional, Sequence, Tuple

log = lazylog.getLogger("ekl")
#: SIGTERM to SIGKILL of the plugin tree when the user interrupted ekl (Ctrl-C, SIGTERM).
INTERRUPT_GRACE_S = 0.25


class PluginInstance:
    """Start, command and stop one plugin; safe to use from several threads.

    Built only by the start path (``ekl.launcher.start.prepare``), which decides the socket
    folders and the plugin's environment; this class uses them as given.
    """

    def __init__(self, spec: LaunchSpec, settings: HostSettings, *, ipc_dir: str,
                 control_dir: str, owned_dirs: Sequence[str] = (),
                 lifeline: Optional[Lifeline] = None) -> None:
        """``owned_dirs``: private folders this instance removes when it closes."""
        self.spec = spec
        self.name = spec.name
        self.settings = settings
        self.lifeline = lifeline
        self.ipc_dir = ipc_dir
        self.control_dir = control_dir
        self._owned_dirs = tuple(owned_dirs)
        #: sockets the plugin listens on (sinks); a plugin that dies cannot unlink them
        self._plugin_listeners: set = set()
        self.process: Optional[PluginProcess] = None
        self.control: Optional[ControlChannel] = None
        #: started by ``spawn`` and not yet past its handshake (``start_process`` waits)
        self._spawned: Optional[Tuple[PluginProcess, ControlChannel]] = None
        self.journal = Journal()
        self.sources: Dict[tuple, SourceStream] = {}
        self.sinks: Dict[tuple, SinkWriter] = {}
        self.functions: Dict[str, FunctionClient] = {}
        self._lock = threading.RLock()

    # --- the process -------------------------------------------------------------------

    def alive(self) -> bool:
        p = self.process
        return p is not None and p.alive()

    @property
    def pid(self) -> Optional[int]:
        return self.process.pid if self.process else None

    def spawn(self) -> None:
        """Listen on the control socket and start the process, without waiting for its
        handshake (``start_process`` waits). ``ekl-python`` calls it as soon as the start
        is decided, so the plugin boots while the relay loads the rest of itself; does
        nothing when a spawned process is already waiting for ``start_process``."""
        with self._lock:
            if self._spawned is not None:
                return
            self.stop_process()
            path = protocol.url_path(protocol.control_url(self.name, self.control_dir))
            early = take_early()
            if early is not None:  # spawned before the launcher loaded (early.py)
                spec = self.spec
                if early.matches(spec.argv, spec.cwd, spec.env, path):
                    self._spawned = self._adopt(early, path)
                    return
                self._reject(early)
            control = ControlChannel(self.name, self.control_dir)
            proc = PluginProcess(self.spec, self.lifeline)
            try:
                proc.start()
            except PluginStartError:
                control.close()
                raise
            self._spawned = (proc, control)
            self._record(path)

    def _adopt(self, early: Early, path: str) -> Tuple[PluginProcess, ControlChannel]:
        """The early start's process and listening control socket, as ``spawn`` makes them;
        on failure nothing is left of either (as ``spawn`` leaves nothing)."""
        import socket

        from ekuiper.transport.sp import provide_listener

        proc = PluginProcess(self.spec, self.lifeline)
        try:
            proc.adopt(early.child, early.token)
        except PluginStartError:  # its --log-file cannot be written: the process is no use
            early.kill()
            early.close_listener()
            raise
        sock = socket.socket(fileno=early.listener.detach())  # type: ignore[attr-defined]
        early.listener = None
        provide_listener(path, sock, early.inode)
        try:
            control = ControlChannel(self.name, self.control_dir)
        except BaseException:
            proc.kill_tree(0.5)
            raise
        log.debug("plugin %s: adopted the early start, pid %s", self.name, proc.pid)
        return proc, control

    def _reject(self, early: Early) -> None:
        """An early start that is not this start (its record was wrong): kill its tree."""
        PluginProcess(self.spec, self.lifeline).adopt(early.child, early.token).kill_tree(0.5)
        forget_early(early)
        log.debug("plugin %s: the early start did not match this start; killed it",
                  self.name)

    def _record(self, control_path: str) -> None:
        """Record this start for the next identical command line (early.py), if it is one
        an early start can repeat; a record that cannot be written costs only that."""
        if not self._owned_dirs:
            return
        spec = self.spec
        out = record_early(list(spec.argv), spec.cwd, spec.env, spec.deps, control_path,
                           self._owned_dirs[0])
        if out is None:
            return
        from ..fsafe import atomic_write, ensure_private_dir

        path, data = out
        try:
            ensure_private_dir(os.path.dirname(path), "launch cache folder", CACHE_ENV)
            atomic_write(path, data)
        except (EklError, OSError) as e:
            log.debug("early start record not written: %s", e)

    def start_process(self) -> None:
        """Start the plugin (unless ``spawn`` did) and wait for its handshake; on failure
        leave nothing behind."""
        with self._lock:
            self.spawn()
            assert self._spawned is not None
            proc, control = self._spawned
            self._spawned = None
            t = self.settings.init_timeout_s
            try:
                control.handshake(t, alive=proc.alive)
            except PluginDied:
                proc.kill_tree(0.5)
                control.close()
                raise PluginStartError(
                    f"plugin {self.name} {proc.exit_description()} before its handshake: "
                    f"{proc.tail()}") from None
            except HostTimeout:
                proc.kill_tree(1.0)
                control.close()
                raise PluginStartError(
                    f"plugin {self.name} sent no handshake within {t:.1f} s (initTimeout) "
                    f"and was killed; check that it calls plugin.start with "
                    f"PluginConfig(\"{self.name}\", ...). Last stderr: {proc.tail()}") from None
            self.process, self.control = proc, control
            log.debug("plugin %s running, pid %s", self.name, proc.pid)

    def _unlink_plugin_listeners(self) -> None:
        """Remove socket files the dead plugin listened on (it had no chance to)."""
        for path in list(self._plugin_listeners):
            try:
                if stat.S_ISSOCK(os.lstat(path).st_mode):
                    os.unlink(path)
            except OSError:
                pass

    def stop_process(self, timeout_s: Optional[float] = None) -> List[int]:
        """Kill the process tree; returns pids that survived (should be none)."""
        with self._lock:
            proc, control = self.process, self.control
            self.process = self.control = None
            if self._spawned is not None:  # spawned, never waited for
                proc, control = self._spawned
                self._spawned = None
        survivors: List[int] = []
        if proc is not None:
            survivors = proc.kill_tree(self.settings.stop_timeout_s if timeout_s is None
                                       else timeout_s)
            proc.close_log()
            self._unlink_plugin_listeners()
        if control is not None:
            control.close()
        return survivors

    # --- commands ----------------------------------------------------------------------

    def command(self, data: bytes, what: str, timeout_s: Optional[float] = None) -> None:
        """Send a command; raise CommandError unless the plugin answers ``ok``."""
        check_result(self.request(data, what, timeout_s), self.name, what)

    def request(self, data: bytes, what: str, timeout_s: Optional[float] = None) -> bytes:
        """Send a command and return the plugin's raw result (what a relay passes on)."""
        control, proc = self.control, self.process
        if control is None or proc is None:
            raise EklError(f"plugin {self.name} is not running; cannot {what}")
        try:
            return control.request(data, timeout_s or self.settings.command_timeout_s,
                                   alive=proc.alive, what=what)
        except PluginDied:
            raise CommandError(f"plugin {self.name} {proc.exit_description()} during {what}: "
                               f"{proc.tail()}") from None

    def ping(self, timeout_s: float) -> Optional[float]:
        p = self.probe(timeout_s)
        return None if p is None else p.rtt_s

    def probe(self, timeout_s: float) -> Optional[Probe]:
        """Ping with per-symbol liveness (None while a command holds the channel)."""
        control, proc = self.control, self.process
        if control is None or proc is None:
            raise EklError(f"plugin {self.name} is not running")
        try:
            return control.probe(timeout_s, alive=proc.alive)
        except PluginDied:
            raise CommandError(f"plugin {self.name} {proc.exit_description()}") from None

    def source_failure(self, symbol: str, within_s: float = 0.0) -> Optional[str]:
        """Why source ``symbol`` stopped by itself (its ``open`` raised), or None.

        Asked over ``ping``: only ekl's SDK reports it (the official SDK's plain ``ok``
        says nothing, so None). ``within_s``: keep asking that long (an ``open`` that
        fails at once is seen by ``ekl validate`` right after the start).
        """
        end = time.monotonic() + within_s
        while True:
            try:
                probe = self.probe(min(2.0, self.settings.command_timeout_s))
            except EklError:
                return None
            failed = probe.failed(protocol.TYPE_SOURCE, symbol) if probe else None
            if failed or probe is None or probe.symbols is None or time.monotonic() >= end:
                return failed
            time.sleep(0.05)

    def _start(self, ctrl: Control) -> None:
        cmd = protocol.encode_command(protocol.CMD_START, ctrl)
        self.command(cmd, f"start {ctrl.describe}")
        self.journal.record_start(ctrl)

    def _stop(self, ctrl: Control) -> None:
        try:
            if self.alive():
                self.command(protocol.encode_command(protocol.CMD_STOP, ctrl),
                             f"stop {ctrl.describe}")
        finally:
            self.journal.record_stop(ctrl)

    def start_source(self, symbol: str, meta: Meta, data_source: str = "",
                     config: Optional[dict] = None) -> SourceStream:
        ctrl = Control(symbol, protocol.TYPE_SOURCE, meta, data_source, config or None)
        stream = SourceStream(symbol, meta, self.ipc_dir)  # listen first, as eKuiper does
        try:
            self._start(ctrl)
        except BaseException:
            stream.close()
            raise
        self.sources[journal_key(ctrl)] = stream
        return stream

    def stop_source(self, symbol: str, meta: Meta) -> None:
        ctrl = Control(symbol, protocol.TYPE_SOURCE, meta)
        stream = self.sources.pop(journal_key(ctrl), None)
        if stream is not None:
            stream.close()  # eKuiper closes its data channel, then sends stop
        self._stop(ctrl)

    def start_sink(self, symbol: str, meta: Meta, config: Optional[dict] = None) -> SinkWriter:
        ctrl = Control(symbol, protocol.TYPE_SINK, meta, "", config or None)
        st = self.settings
        writer = SinkWriter(symbol, meta, self.ipc_dir, protocol.require_ack(config),
                            st.sink_send_timeout_s, st.ack_timeout_s)
        self._plugin_listeners.add(protocol.url_path(writer.url))
        try:
            self._start(ctrl)
            writer.connect()
        except BaseException:
            writer.close()
            raise
        self.sinks[journal_key(ctrl)] = writer
        return writer

    def stop_sink(self, symbol: str, meta: Meta) -> None:
        """Stop the sink while our end of its data socket is still open, then close it.

        The SDK's sink keeps taking records until none has come for a moment, then stops;
        closing first could drop records the transport still holds (pynng's PUSH drops its
        queue on close; the test suite's pynng re-run lost the last of 300 under load)."""
        ctrl = Control(symbol, protocol.TYPE_SINK, meta)
        writer = self.sinks.pop(journal_key(ctrl), None)
        try:
            self._stop(ctrl)
        finally:
            if writer is not None:
                writer.close()

    def start_function(self, symbol: str) -> FunctionClient:
        """The function's client; functions are shared, so a second call reuses it."""
        with self._lock:
            if symbol in self.functions:
                return self.functions[symbol]
            client = FunctionClient(symbol, self.ipc_dir, self.settings.function_timeout_s,
                                    alive=self.alive)
            try:
                self._start(Control(symbol, protocol.TYPE_FUNC))
            except BaseException:
                client.close()
                raise
            self.functions[symbol] = client
            return client

    def replay(self) -> List[ReplayResult]:
        """Start every journalled symbol again in the new process; record each result."""
        results = []
        for ctrl, cmd in self.journal.entries():
            try:
                self.command(cmd, f"replay start {ctrl.describe}")
                results.append(ReplayResult(ctrl, True))
            except EklError as e:
                log.error("%s", e)
                results.append(ReplayResult(ctrl, False, str(e)))
        return results

    # --- the end -----------------------------------------------------------------------

    def close(self, interrupted: bool = False) -> List[int]:
        """Stop symbols (best effort), the process and every socket; remove private files.

        ``interrupted`` (Ctrl-C, SIGTERM): the user wants the shell back within 0.5 s, so
        no per-symbol stop round trips and only INTERRUPT_GRACE_S before SIGKILL.
        """
        for key, stream in list(self.sources.items()):
            stream.close()
            self.sources.pop(key, None)
        for key, writer in list(self.sinks.items()):
            writer.close()
            self.sinks.pop(key, None)
        if self.alive() and not interrupted:
            for ctrl, _ in reversed(self.journal.entries()):
                if ctrl.plugin_type == protocol.TYPE_FUNC:
                    continue  # eKuiper never stops functions; they end with the process
                try:
                    self.command(protocol.encode_command(protocol.CMD_STOP, ctrl),
                                 f"stop {ctrl.describe}", timeout_s=2.0)
                except EklError as e:
                    log.debug("%s", e)
        survivors = self.stop_process(INTERRUPT_GRACE_S if interrupted else None)
        for client in self.functions.values():
            client.close()
        self.functions.clear()
        for d in self._owned_dirs:
            remove_ipc_dir(d)
        return survivors
