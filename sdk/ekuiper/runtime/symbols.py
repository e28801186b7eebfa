"""Running symbols: one object per started source, sink or function, with its thread."""

from __future__ import annotations

import threading
import time

from .. import protocol
from ..lazylog import one_line
from ..protocol import Control, FuncMeta, Meta
from ..record import record
from ..transport import (
    PullSocket,
    PushSocket,
    ReqSocket,
    Transport,
    TransportClosed,
    TransportError,
    TransportTimeout,
)
from .contextimpl import ContextImpl
from .liveness import Beat, entry
from .logs import log
from .reqloop import serve_inverted

TYPE_CHECKING = False  # typing is not loaded at run time on the start path (docs/architecture.md)
if TYPE_CHECKING:
    from typing import Any, Callable, Dict, Optional

_monotonic = time.monotonic
_split_exec_request = protocol.split_exec_request
_exec_args = protocol.exec_args
_EXEC_PREFIX = protocol._EXEC_PREFIX
_EXEC_START = len(_EXEC_PREFIX)
_encode_func_reply = protocol.encode_func_reply


@record
class Settings:
    """Timeouts and retries of the plugin side; every one has a named default."""

    send_timeout_ms: int = protocol.DEFAULT_SEND_TIMEOUT_MS
    keepalive_ms: int = protocol.KEEPALIVE_MS
    dial_retries: int = protocol.DIAL_RETRIES
    dial_interval_s: float = protocol.DIAL_INTERVAL_S
    listen_retries: int = 10
    listen_interval_s: float = 0.05
    #: how long the control peer may be gone before the plugin concludes the host died
    host_lost_grace_s: float = 2.0
    #: total time for stopping every symbol on shutdown (the process exits within 2 s)
    shutdown_budget_s: float = 1.5
    #: a stopping sink keeps collecting until nothing has arrived for this long
    sink_drain_ms: int = 100
    #: eKuiper's stop of a sink: past its share of ``shutdown_budget_s`` the sink keeps
    #: draining while it still takes records, up to this long in all (under eKuiper's default
    #: 5 s recvTimeout for the answer); a process shutdown keeps to ``shutdown_budget_s`` alone
    sink_drain_max_s: float = 4.0
    ipc_dir: Optional[str] = None


class StartError(Exception):
    """A symbol could not start; the text goes back to the host as the command result."""


def call_with_deadline(fn: Callable[[], Any], timeout: float, what: str) -> None:
    """Run user code that may hang (``close``) without letting it hold up shutdown."""
    done = threading.Event()
    err: list = []

    def target() -> None:
        try:
            fn()
        except Exception as e:  # user code: report and go on
            err.append(e)
        finally:
            done.set()

    threading.Thread(target=target, name=what, daemon=True).start()
    if not done.wait(timeout):
        log.warning("%s did not return within %.1f s; going on without it", what, timeout)
    elif err:
        log.warning("%s raised %s: %s", what, type(err[0]).__name__, one_line(err[0]))


class SymbolRuntime:
    """Lifecycle of one running symbol: ``start`` (sockets, configure) then ``stop``."""

    kind = ""

    def __init__(self, ctrl: Control, instance: Any, transport: Transport,
                 settings: Settings) -> None:
        self.ctrl = ctrl
        self.s = instance
        self.transport = transport
        self.settings = settings
        self.running = False
        self.thread: Optional[threading.Thread] = None
        self.ctx = ContextImpl(ctrl.meta, ctrl.symbol_name)
        #: liveness for the host's ping (see liveness.py)
        self.beat = Beat()
        self.ctx.beat = self.beat

    def liveness(self) -> dict:
        return entry(self.kind, self.ctrl.key, self.ctrl.symbol_name, self.ctrl.meta.rule_id,
                     self.beat)

    @property
    def name(self) -> str:
        return self.ctrl.describe

    def start(self) -> None:
        raise NotImplementedError

    def _spawn(self, target: Callable[[], None]) -> None:
        self.running = True
        self.thread = threading.Thread(target=target, name=self.ctrl.key, daemon=True)
        self.thread.start()

    def stop(self, timeout: float = 1.0, drain_max_s: float = 0.0) -> None:
        """Stop within about ``timeout``; ``drain_max_s``: a sink's longer drain while
        records still come (``Settings.sink_drain_max_s``); other kinds ignore it."""
        raise NotImplementedError

    def is_running(self) -> bool:
        return self.running

    def _configure(self, fn: Callable[[], Any]) -> None:
        try:
            fn()
        except Exception as e:
            raise StartError(f"{self.name}: configure failed: {type(e).__name__}: "
                             f"{one_line(e)}") from None

    def _dial_push(self, url: str) -> PushSocket:
        try:
            return self.transport.dial_push(url, send_timeout_ms=self.settings.send_timeout_ms,
                                            retries=self.settings.dial_retries,
                                            interval_s=self.settings.dial_interval_s)
        except TransportError as e:
            raise StartError(f"{self.name}: {one_line(e)}") from None


class SourceRuntime(SymbolRuntime):
    kind = protocol.TYPE_SOURCE

    def __init__(self, *a: Any, **kw: Any) -> None:
        super().__init__(*a, **kw)
        self.sock: Optional[PushSocket] = None

    def start(self) -> None:
        self._configure(lambda: self.s.configure(self.ctrl.data_source, self.ctrl.config or {}))
        self.sock = self._dial_push(protocol.data_url(self.ctrl.meta, self.settings.ipc_dir))
        self.ctx.set_emitter(self.sock)
        self._spawn(self._run)

    def _run(self) -> None:
        try:
            self.s.open(self.ctx)
        except TransportClosed:
            pass  # stopped while emitting
        except Exception as e:
            if self.running:
                self.beat.fail(f"open raised {type(e).__name__}: {one_line(e)}")
                log.error("%s: open raised %s: %s", self.name, type(e).__name__, one_line(e),
                          exc_info=log.isEnabledFor(10))
        finally:
            if self.running:
                log.info("%s: open returned; the source stops", self.name)
                self.running = False
                self._close_socket()

    def _close_socket(self) -> None:
        if self.sock is not None:
            self.sock.close()

    def stop(self, timeout: float = 1.0, drain_max_s: float = 0.0) -> None:
        was_running, self.running = self.running, False
        if was_running or self.thread is not None:
            call_with_deadline(lambda: self.s.close(self.ctx), timeout, f"{self.name}: close")
        self._close_socket()
        if self.thread is not None:
            self.thread.join(timeout=min(0.2, timeout))


class SinkRuntime(SymbolRuntime):
    kind = protocol.TYPE_SINK

    def __init__(self, *a: Any, **kw: Any) -> None:
        super().__init__(*a, **kw)
        self.pull: Optional[PullSocket] = None
        self.ack: Optional[PushSocket] = None
        self._closed = False
        self.stopping = False

    def start(self) -> None:
        config = self.ctrl.config or {}
        self._configure(lambda: self.s.configure(config))
        meta, d = self.ctrl.meta, self.settings.ipc_dir
        try:
            self.pull = self.transport.listen_pull(
                protocol.data_url(meta, d), retries=self.settings.listen_retries,
                interval_s=self.settings.listen_interval_s,
                recv_timeout_ms=self.settings.sink_drain_ms)
        except TransportError as e:
            raise StartError(f"{self.name}: {one_line(e)}") from None
        self.ctx.require_ack = protocol.require_ack(config)
        if self.ctx.require_ack:
            try:
                self.ack = self._dial_push(protocol.ack_url(meta, d))
            except StartError:
                self.pull.close()
                raise
            self.ctx.set_ack_emitter(self.ack)
        self._spawn(self._run)

    def _run(self) -> None:
        try:
            self.s.open(self.ctx)
        except Exception as e:
            log.error("%s: open raised %s: %s", self.name, type(e).__name__, one_line(e))
            self.running = False
            self._close_sockets()
            return
        assert self.pull is not None
        while self.running:
            try:
                data = self.pull.recv()
            except TransportTimeout:
                if self.stopping:
                    break  # drained: nothing arrived for sink_drain_ms since stop
                continue
            except TransportClosed:
                break
            except Exception as e:  # TransportError, or a bug: the sink keeps receiving
                log.warning("%s: receive failed: %s", self.name, _safe_line(e))
                time.sleep(0.05)  # a socket that fails at once must not spin
                continue
            self.ctx.acked = False
            self.beat.begin()
            try:
                self.s.collect(self.ctx, data)
            except BaseException as e:  # noqa: B036 -- one record must not end the sink
                text = f"{self.ctrl.symbol_name}: collect raised {type(e).__name__}: {_safe_line(e)}"
                log.error("%s", text)
                if not self.ctx.acked:
                    # The host waits for an ack per message when requireAck is set.
                    try:
                        self.ctx.ack_error(text)  # counts the error too
                    except Exception as e2:
                        log.warning("%s: ack not sent: %s", self.name, _safe_line(e2))
                else:
                    self.beat.error(text)
            finally:
                self.beat.end()

    def _close_sockets(self) -> None:
        for s in (self.pull, self.ack):
            if s is not None:
                s.close()

    def stop(self, timeout: float = 1.0, drain_max_s: float = 0.0) -> None:
        """Finish the records already received (the host stops sending first), then close.

        The sink drains until nothing has come for ``sink_drain_ms``, within 0.6 of
        ``timeout``; with ``drain_max_s`` (eKuiper's stop), past that it goes on while it
        still takes records, up to ``drain_max_s`` in all: a sink with a backlog (a slow
        ``collect``, a loaded machine) would otherwise drop the rest of what the host had
        sent. A ``collect`` that begins no record for ``DRAIN_STALL_S`` (it hangs) ends
        the wait then."""
        self.stopping = True
        t = self.thread
        if t is not None and t is not threading.current_thread():
            start = time.monotonic()
            t.join(timeout=timeout * 0.6)
            seen, last = self.beat.count, time.monotonic()
            while t.is_alive():
                now = time.monotonic()
                if now - start >= drain_max_s or now - last >= DRAIN_STALL_S:
                    break
                t.join(timeout=DRAIN_PROGRESS_S)
                if self.beat.count != seen:
                    seen, last = self.beat.count, time.monotonic()
        self.running = False
        self._close_sockets()
        if self.thread is not None:
            self.thread.join(timeout=0.1)
        if not self._closed:
            self._closed = True
            call_with_deadline(lambda: self.s.close(self.ctx), timeout, f"{self.name}: close")


class FunctionRuntime(SymbolRuntime):
    kind = protocol.TYPE_FUNC

    def __init__(self, *a: Any, **kw: Any) -> None:
        super().__init__(*a, **kw)
        self.sock: Optional[ReqSocket] = None
        self.contexts: Dict[str, ContextImpl] = {}
        #: the function context string exactly as it arrives -> its context. eKuiper sends
        #: the same string on every call from one call site, so the hot path skips decoding.
        self._ctx_by_raw: Dict[str, ContextImpl] = {}
        #: the same, keyed by the context's JSON string literal as it sits in the request
        #: (``protocol.split_exec_request``): the hot path parses neither the envelope nor
        #: the context, only the arguments.
        self._ctx_by_literal: Dict[bytes, ContextImpl] = {}
        #: the last call site's request ending (``protocol.exec_tail``) and its context:
        #: a request that ends the same way needs only its arguments parsed
        self._tail: Optional[bytes] = None
        self._tail_ctx: Optional[ContextImpl] = None

    def start(self) -> None:
        url = protocol.function_url(self.ctrl.symbol_name, self.settings.ipc_dir)
        st = self.settings
        try:
            self.sock = self.transport.dial_req(url, recv_timeout_ms=st.keepalive_ms,
                                                send_timeout_ms=st.send_timeout_ms,
                                                retries=st.dial_retries,
                                                interval_s=st.dial_interval_s)
        except TransportError as e:
            raise StartError(f"{self.name}: {one_line(e)}") from None
        self._spawn(self._run)

    def _run(self) -> None:
        assert self.sock is not None
        serve_inverted(self.sock, self.handle, self.name, lambda: not self.running,
                       lambda text: _func_error(text))
        self.running = False

    def handle(self, data: bytes) -> bytes:
        """Answer one call; never raises, so the function keeps serving whatever happens.

        The one place every call passes through, start to end, and the one place ``exec``
        runs (a per-call hook goes here). An Exec exactly as eKuiper writes it, from the
        call site seen last, is recognised here by its ending and only its arguments are
        parsed; everything else, and every error, goes through :meth:`_route`, which
        answers it or says what to execute. No other frame sits between the transport
        and the plugin's ``exec`` on the per-call path: in the serving loop, where the
        thread sleeps in ``recv`` between calls and comes back to cold caches, each call
        costs two to three times its warm figure (docs/performance.md)."""
        try:
            tail = self._tail
            args = None
            if tail is not None and type(data) is bytes and data.endswith(tail) \
                    and data.startswith(_EXEC_PREFIX):
                i = len(data) - len(tail)
                if i > _EXEC_START:
                    args = _exec_args(data, i)
            if args is not None:
                ctx = self._tail_ctx
            else:
                routed = self._route(data)
                if type(routed) is bytes:
                    return routed
                args, ctx = routed
            beat = self.beat  # (liveness, counters) Beat.begin and Beat.end, inlined
            beat.count += 1
            beat.busy_since = _monotonic()
            try:
                result = self.s.exec(args, ctx)
            except protocol.ProtocolError as e:
                name = self.ctrl.symbol_name
                log.warning("%s: rejected %s: %s", name, protocol.FUNC_EXEC, e)
                return self._failed(f"{name}: {e}")
            except Exception as e:
                name = self.ctrl.symbol_name
                log.warning("%s: %s raised %s: %s", name, protocol.FUNC_EXEC, type(e).__name__,
                            _safe_line(e), exc_info=log.isEnabledFor(10))
                return self._failed(f"{name}: {protocol.FUNC_EXEC} raised "
                                    f"{type(e).__name__}: {_safe_line(e)}")
            finally:
                beat.last = _monotonic()
                beat.busy_since = None
            try:
                return _encode_func_reply(True, result)
            except Exception as e:  # TypeError, ValueError (NaN), RecursionError (too deep), ...
                name = self.ctrl.symbol_name
                return self._failed(
                    f"{name}: {protocol.FUNC_EXEC} returned a {type(result).__name__}, which "
                    f"is not JSON-encodable: {type(e).__name__}: {_safe_line(e)}")
        except BaseException as e:  # noqa: B036 -- a call must never end the function's loop
            name = self.ctrl.symbol_name
            log.warning("%s: call failed: %s: %s", name, type(e).__name__, _safe_line(e))
            return _func_error(f"{name}: {type(e).__name__}: {_safe_line(e)}")

    def _route(self, data: bytes) -> Any:
        """Every request but the last call site's Exec: ``(args, ctx)`` for an Exec that
        :meth:`handle` is to execute, else the reply (bytes), errors included. An Exec as
        Go writes it from a call site seen before costs one dictionary lookup; its ending
        then becomes the one :meth:`handle` recognises."""
        split = _split_exec_request(data)
        if split is not None:
            ctx = self._ctx_by_literal.get(split[1])
            if ctx is not None:
                self._tail, self._tail_ctx = protocol.exec_tail(split[1]), ctx
                return split[0], ctx
            if self._learn_literal(split[1]):
                return self._route(data)
        return self._decoded(self.ctrl.symbol_name, data)

    def _decoded(self, name: str, data: bytes) -> Any:
        """:meth:`_route` for what the fast forms do not cover: the request decoded in full."""
        try:
            func, arg = protocol.decode_func_request(data)
        except protocol.ProtocolError as e:
            log.warning("%s: rejected call: %s", name, e)
            return _func_error(f"{name}: {e}")
        try:
            if func == protocol.FUNC_EXEC:
                if not isinstance(arg, list) or not arg:
                    return _func_error(
                        f"{name}: Exec needs a list of arguments ending with the "
                        f"function context, got {protocol.short_repr(arg)}")
                raw = arg[-1]
                ctx = self._ctx_by_raw.get(raw) if isinstance(raw, str) else None
                if ctx is None:
                    ctx = self._context(raw)
                return arg[:-1], ctx
            elif func == protocol.FUNC_VALIDATE:
                err = self.s.validate(arg if isinstance(arg, list) else [])
                state, result = (True, "") if not err else (False, one_line(err))
            elif func == protocol.FUNC_IS_AGGREGATE:
                state, result = True, bool(self.s.is_aggregate())
            else:
                log.warning("%s: rejected unknown call %s", name, protocol.short_repr(func))
                return _func_error(f"{name}: unknown call {protocol.short_repr(func)}; expected "
                                   "Validate, Exec or IsAggregate")
        except protocol.ProtocolError as e:
            log.warning("%s: rejected %s: %s", name, func, e)
            return _func_error(f"{name}: {e}")
        except Exception as e:
            log.warning("%s: %s raised %s: %s", name, func, type(e).__name__, _safe_line(e),
                        exc_info=log.isEnabledFor(10))
            return _func_error(f"{name}: {func} raised {type(e).__name__}: {_safe_line(e)}")
        try:
            return protocol.encode_func_reply(state, result)
        except Exception as e:  # TypeError, ValueError (NaN), RecursionError (too deep), ...
            return _func_error(
                f"{name}: {func} returned a {type(result).__name__}, which is not "
                f"JSON-encodable: {type(e).__name__}: {_safe_line(e)}")

    def _failed(self, text: str) -> bytes:
        """A failed call: counted (errors, last error) and answered ``state: false``."""
        self.beat.error(text)
        return _func_error(text)

    def _learn_literal(self, literal: bytes) -> bool:
        """Parse a function context's string literal once and remember its context;
        False if it is not a valid one (the full path then answers with the reason)."""
        try:
            raw = protocol.loads_strict(literal)
            if not isinstance(raw, str):
                return False
            ctx = self._ctx_by_raw.get(raw) or self._context(raw)
        except protocol.ProtocolError:
            return False
        if len(self._ctx_by_literal) >= 10000:  # a host that varies the string: bounded
            self._ctx_by_literal.clear()
        self._ctx_by_literal[literal] = ctx
        return True

    def _context(self, raw: Any) -> ContextImpl:
        """Decode the function context (ProtocolError if malformed) and find or make its
        ContextImpl, keyed by rule, op, instance and funcId."""
        fmeta = FuncMeta.decode(raw)
        ctx = self.contexts.get(fmeta.key)
        if ctx is None:
            ctx = ContextImpl(Meta(fmeta.rule_id, fmeta.op_id, fmeta.instance_id),
                              self.ctrl.symbol_name)
            self.contexts[fmeta.key] = ctx
        if isinstance(raw, str):
            if len(self._ctx_by_raw) >= 10000:  # a host that varies the string: stay bounded
                self._ctx_by_raw.clear()
            self._ctx_by_raw[raw] = ctx
        return ctx

    def stop(self, timeout: float = 1.0, drain_max_s: float = 0.0) -> None:
        self.running = False
        if self.sock is not None:
            self.sock.close()
        if self.thread is not None:
            self.thread.join(timeout=min(0.2, timeout))


#: how often a sink draining past its base budget checks that records still come
DRAIN_PROGRESS_S = 0.1
#: a draining sink that begins no record for this long is stopped (its collect hangs)
DRAIN_STALL_S = 1.0

#: Error texts of function replies are bounded: they may quote what a peer sent.
MAX_ERROR_CHARS = 2000


def _safe_line(e: BaseException) -> str:
    """``one_line(e)``, bounded, for exceptions whose text cannot even be built."""
    try:
        text = one_line(e)
    except Exception:
        return f"<{type(e).__name__} whose text cannot be shown>"
    return text if len(text) <= MAX_ERROR_CHARS else text[:MAX_ERROR_CHARS] + "..."


def _func_error(text: str) -> bytes:
    """``{"state": false, "result": text}``: one bounded line, encodable whatever it quotes."""
    if len(text) > MAX_ERROR_CHARS:
        text = text[:MAX_ERROR_CHARS] + "..."
    return protocol.encode_func_reply(False, one_line(text))


RUNTIMES = {protocol.TYPE_SOURCE: SourceRuntime, protocol.TYPE_SINK: SinkRuntime,
            protocol.TYPE_FUNC: FunctionRuntime}
