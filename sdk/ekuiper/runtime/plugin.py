"""``plugin.start``: the plugin process's lifecycle, from dialing the host to exiting.

Order of events: read argv[1]; dial the control socket (exit 1 with a clear message if no
host listens there); answer commands in a thread; wait in the main thread for SIGTERM,
SIGINT or the host going away; then stop every running symbol (``close`` called), close the
sockets and exit 0 within 2 s.
"""

from __future__ import annotations

import logging
import os
import signal
import sys
import threading
import time

from .. import protocol
from ..function import Function
from ..lazylog import one_line
from ..protocol import Control
from ..sigevent import SignalEvent
from ..sink import Sink
from ..source import Source
from ..transport import ReqSocket, Transport, TransportError, get_transport
from .liveness import ping_reply
from .logs import log, setup_logging
from .reqloop import PeerWatch, serve_inverted
from .symbols import RUNTIMES, Settings, StartError, SymbolRuntime

TYPE_CHECKING = False  # typing is not loaded at run time on the start path (docs/architecture.md)
if TYPE_CHECKING:
    from typing import Callable, Dict, List, Optional

_KINDS = {protocol.TYPE_SOURCE: "source", protocol.TYPE_SINK: "sink",
          protocol.TYPE_FUNC: "function"}


class PluginConfig:
    """The plugin's name (it must equal ``NAME.json``) and its symbol factories."""

    def __init__(self, name: str, sources: Dict[str, Callable[[], Source]],
                 sinks: Dict[str, Callable[[], Sink]],
                 functions: Dict[str, Callable[[], Function]]) -> None:
        self.name = name
        self.sources = sources or {}
        self.sinks = sinks or {}
        self.functions = functions or {}

    def _table(self, plugin_type: str) -> Optional[Dict[str, Callable[[], object]]]:
        return {protocol.TYPE_SOURCE: self.sources, protocol.TYPE_SINK: self.sinks,
                protocol.TYPE_FUNC: self.functions}.get(plugin_type)

    def get(self, plugin_type: str, symbol_name: str) -> Optional[Callable[[], object]]:
        table = self._table(plugin_type)
        return None if table is None else table.get(symbol_name)

    def symbols(self) -> Dict[str, List[str]]:
        return {"sources": sorted(self.sources), "sinks": sorted(self.sinks),
                "functions": sorted(self.functions)}


class PluginRuntime:
    """One plugin process: the control channel and the symbols it started."""

    def __init__(self, config: PluginConfig, settings: Optional[Settings] = None,
                 transport: Optional[Transport] = None) -> None:
        self.config = config
        self.settings = settings or Settings()
        self.transport = transport or get_transport()
        self.symbols: Dict[str, SymbolRuntime] = {}
        self.lock = threading.Lock()
        self.control: Optional[ReqSocket] = None
        #: set by the SIGTERM/SIGINT handler while the main thread waits on it
        self.stop_event = SignalEvent()
        self.stop_reason = ""

    # --- commands ----------------------------------------------------------------------

    def handle_command(self, data: bytes) -> bytes:
        """Execute one command and return its result; never raises.

        Whatever the bytes, the answer is ``ok`` or one line of error text, and the control
        channel goes on serving (a RecursionError or OverflowError included)."""
        try:
            cmd, ctrl = protocol.decode_command(data)
        except Exception as e:  # ProtocolError by contract; anything else is a bug, same answer
            text = one_line(e) if isinstance(e, protocol.ProtocolError) else \
                one_line(f"malformed command: {type(e).__name__}: {e}")
            log.warning("rejected command: %s", text)
            return _reply(text)
        if cmd == protocol.CMD_PING or ctrl is None:
            return self.ping_reply()
        try:
            if cmd == protocol.CMD_START:
                self.start_symbol(ctrl)
            else:
                self.stop_symbol(ctrl)
        except StartError as e:
            log.error("%s", e)
            return _reply(one_line(e))
        except Exception as e:  # a bug must not take the control channel down
            log.exception("%s %s failed", cmd, ctrl.describe)
            return _reply(one_line(f"{cmd} {ctrl.describe}: {type(e).__name__}: {e}"))
        return protocol.REPLY_OK

    def ping_reply(self) -> bytes:
        """``ok`` with each running symbol's liveness (liveness.py says why)."""
        with self.lock:
            running = list(self.symbols.values())
        return ping_reply(rt.liveness() for rt in running)

    @staticmethod
    def runtime_key(ctrl: Control) -> str:
        # Functions are shared by all rules: one runtime per symbol (official key func_NAME).
        if ctrl.plugin_type == protocol.TYPE_FUNC:
            return f"func_{ctrl.symbol_name}"
        return ctrl.key

    def start_symbol(self, ctrl: Control) -> None:
        kind = _KINDS[ctrl.plugin_type]
        factory = self.config.get(ctrl.plugin_type, ctrl.symbol_name)
        if factory is None:
            known = ", ".join(sorted(self.config._table(ctrl.plugin_type) or {})) or "none"
            raise StartError(f"unknown {kind} symbol {ctrl.symbol_name!r}: plugin "
                             f"{self.config.name} registers {kind}s: {known}")
        key = self.runtime_key(ctrl)
        with self.lock:
            old = self.symbols.pop(key, None)
        if old is not None:  # a restart of the same instance replaces the old one
            old.stop(self.settings.shutdown_budget_s)
        try:
            instance = factory()
        except Exception as e:
            raise StartError(f"{kind} {ctrl.symbol_name}: creating it raised "
                             f"{type(e).__name__}: {one_line(e)}") from None
        rt = RUNTIMES[ctrl.plugin_type](ctrl, instance, self.transport, self.settings)
        rt.start()
        with self.lock:
            self.symbols[key] = rt
        log.info("started %s", ctrl.describe)

    def stop_symbol(self, ctrl: Control) -> None:
        key = self.runtime_key(ctrl)
        with self.lock:
            rt = self.symbols.pop(key, None)
        if rt is None:
            # eKuiper forgets the symbol only when stop answers ok; the official SDK does too.
            log.warning("stop for %s, which is not running", ctrl.describe)
            return
        rt.stop(self.settings.shutdown_budget_s, self.settings.sink_drain_max_s)
        log.info("stopped %s", ctrl.describe)

    # --- process lifecycle -------------------------------------------------------------

    def connect(self) -> None:
        url = protocol.plugin_control_url(self.config.name, self.settings.ipc_dir)
        st = self.settings
        try:
            self.control = self.transport.dial_req(
                url, recv_timeout_ms=st.keepalive_ms, send_timeout_ms=st.send_timeout_ms,
                retries=st.dial_retries, interval_s=st.dial_interval_s)
        except TransportError:
            waited = st.dial_retries * st.dial_interval_s
            raise SystemExit(
                f"plugin {self.config.name}: no host is listening on {url} (tried for "
                f"{waited:.1f} s). The name given to PluginConfig must equal the plugin's "
                f"JSON file name ({self.config.name}.json), and the plugin must be started by "
                f"eKuiper or ekl, which listen there first.") from None

    def serve(self) -> int:
        """Serve until a signal or the host's disappearance; return the exit code."""
        self.connect()
        assert self.control is not None
        control = self.control
        t = threading.Thread(target=serve_inverted, name="control", daemon=True,
                             args=(control, self.handle_command, "control",
                                   self.stop_event.is_set))
        t.start()
        log.info("plugin %s serving (%s transport, pid %d)", self.config.name,
                 self.transport.name, os.getpid())
        host = PeerWatch(control, self.settings.host_lost_grace_s)
        while not self.stop_event.wait(0.2):
            if not t.is_alive():
                self.stop_reason = "control channel closed"
                break
            if host.gone():
                self.stop_reason = "the host went away"
                log.warning("plugin %s: the host went away; stopping", self.config.name)
                break
        self.shutdown()
        return 0

    def request_stop(self, reason: str) -> None:
        self.stop_reason = reason
        self.stop_event.set()

    def shutdown(self) -> None:
        self.stop_event.set()
        with self.lock:
            running = list(self.symbols.values())
            self.symbols.clear()
        per_symbol = self.settings.shutdown_budget_s
        threads = [threading.Thread(target=rt.stop, args=(per_symbol,), daemon=True)
                   for rt in running]
        for th in threads:
            th.start()
        deadline = time.monotonic() + per_symbol + 0.1
        for th in threads:
            th.join(max(0.0, deadline - time.monotonic()))
        if self.control is not None:
            self.control.close()
        log.info("plugin %s stopped (%s)", self.config.name, self.stop_reason or "shutdown")


#: Result texts land in eKuiper's rule status: a peer's huge symbol name must not bloat it.
MAX_RESULT_CHARS = 2000


def _reply(text: str) -> bytes:
    """A result text as bytes; a lone surrogate a peer sent cannot make encoding fail."""
    if len(text) > MAX_RESULT_CHARS:
        text = text[:MAX_RESULT_CHARS] + "..."
    return text.encode("utf-8", "backslashreplace")


def _settings_from_argv(argv: List[str]) -> Settings:
    try:
        pconf = protocol.decode_portable_config(argv)
    except protocol.ProtocolError as e:
        log.warning("%s; using the defaults", e)
        pconf = {"sendTimeout": protocol.DEFAULT_SEND_TIMEOUT_MS}
    return Settings(send_timeout_ms=pconf["sendTimeout"])


def _install_signal_handlers(rt: PluginRuntime) -> None:
    if threading.current_thread() is not threading.main_thread():
        return

    def handler(signum: int, _frame: object) -> None:
        if rt.stop_event.is_set():  # a second signal: give up on a graceful stop
            os._exit(128 + signum)
        rt.request_stop(f"signal {signal.Signals(signum).name}")

    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, handler)


def _exit(code: int) -> None:
    logging.shutdown()
    for stream in (sys.stdout, sys.stderr):
        try:
            stream.flush()
        except Exception:
            pass
    others = [t for t in threading.enumerate()
              if t is not threading.current_thread() and not t.daemon and t.is_alive()]
    if others:
        # Non-daemon threads started by plugin code would keep the process alive forever.
        os._exit(code)
    sys.exit(code)


def start(c: PluginConfig) -> None:
    """Run the plugin until eKuiper (or ekl) stops it; exits the process."""
    setup_logging()
    rt = PluginRuntime(c, _settings_from_argv(sys.argv))
    _install_signal_handlers(rt)
    try:
        code = rt.serve()
    except SystemExit as e:
        if isinstance(e.code, str):
            log.error("%s", e.code)
            _exit(1)
        raise
    _exit(code)
