"""``ekl run``: source -> function -> sink, one record at a time, under the supervisor.

If the plugin dies mid-run, the watcher restarts it and replays the journal; the pipeline
waits for that and carries on from the record it was handling, so ``--count`` is reached.
Records are at-least-once: one that was in flight during a crash is sent again.

A function call or sink write that outlives the call timeout (``--call-timeout``,
eKuiper's recvTimeout) is a hang: the watcher restarts the plugin and the record is tried
again, or, with ``--no-restart``, the run stops with one line naming the symbol and the
deadline. A source whose ``open`` raised ends the run with its error (exit 1).
"""

from __future__ import annotations

import logging
import sys
import time

from ekuiper.protocol import FuncMeta, Meta

from ..errors import CommandError, EklError, HostTimeout, PluginStartError
from ..host.instance import PluginInstance
from ..plugin import Plugin
from ..progress import Progress
from ..settings import HostSettings, LaunchOptions, SupervisorSettings
from ..start import RULE, prepare
from .states import State
from .watcher import Watcher

TYPE_CHECKING = False  # typing is not loaded at run time on the start path (docs/architecture.md)
if TYPE_CHECKING:
    from typing import Any, Callable, Dict, Optional

    from ekuiper.protocol import SourceMessage

    from ..host.sources import SourceStream

log = logging.getLogger("ekl")
#: How long the pipeline waits for a restarted plugin before giving up.
RECOVERY_TIMEOUT_S = 60.0
#: Records in a row the function may refuse before the run stops.
MAX_CONSECUTIVE_ERRORS = 10
#: Silence from the source this long: ask the plugin whether the source failed.
SOURCE_CHECK_S = 1.0


class CallHung(EklError):
    """A function call or sink write got no answer within the call timeout."""

    exit_code = 1


def hung_message(what: str, timeout_s: float) -> str:
    return (f"{what}: no answer within {timeout_s:.1f} s (--call-timeout); the call hangs. "
            f"Fix the plugin, or give a longer --call-timeout")


class Pipeline:
    def __init__(self, manifest: Plugin, *, source: str, datasource: str,
                 config: Dict[str, Any], function: Optional[str], field: Optional[str],
                 sink: Optional[str], sink_config: Dict[str, Any], count: Optional[int],
                 out: Callable[[Any], None], rule: str = RULE) -> None:
        self.manifest = manifest
        self.source, self.datasource, self.config = source, datasource, config
        self.function, self.field = function, field
        self.sink, self.sink_config = sink, dict(sink_config)
        self.sink_config.setdefault("requireAck", True)  # print only what the sink took
        self.count = count
        self.out = out
        self.src_meta = Meta(rule, f"src_{source}", 0)
        self.sink_meta = Meta(rule, f"sink_{sink}", 0)
        #: ``ekl supervise`` ends a served pipeline through this
        self.stopping: Callable[[], bool] = lambda: False
        self.watcher: Optional[Watcher] = None
        #: restart a plugin whose call hangs (False: ``ekl run --no-restart`` stops instead)
        self.supervise = True
        self.errors = 0

    def run(self, opts: LaunchOptions, settings: HostSettings, supervise: bool = True,
            progress: Optional[Progress] = None) -> int:
        progress = progress or Progress(quiet=True)
        inst = prepare(self.manifest, opts, settings, progress=progress)
        sup = SupervisorSettings(restart="on-failure" if supervise else "never",
                                 health_interval_s=1.0,
                                 call_timeout_s=settings.function_timeout_s)
        self.supervise = supervise
        self.watcher = Watcher(inst, sup)
        try:
            with progress.step(f"starting plugin {self.manifest.name} on {inst.spec.interpreter}"):
                self.watcher.start(fail_fast=True)
            return self._loop(inst)
        finally:
            self.watcher.stop(interrupted=isinstance(sys.exc_info()[1], KeyboardInterrupt))

    def serve(self, watcher: Watcher, stopping: Callable[[], bool],
              retry_s: float = 5.0) -> None:
        """Keep this data flow going on a plugin ``ekl supervise`` runs, until ``stopping()``.

        Restarts of the plugin are the watcher's (the journal brings the symbols back); a
        failure of the flow itself is logged and the flow starts again after ``retry_s``.
        """
        self.watcher, self.stopping = watcher, stopping
        while not stopping():
            if not watcher.wait_for(State.RUNNING, timeout=1.0):
                continue
            try:
                self._loop(watcher.instance)
            except EklError as e:
                self._stop_symbols(watcher.instance)  # its sockets, or the retry cannot listen
                if stopping():
                    break
                log.error("pipeline %s: %s; starting it again in %.0f s", self.src_meta.rule_id,
                          e, retry_s)
                end = time.monotonic() + retry_s
                while time.monotonic() < end and not stopping():
                    time.sleep(0.1)

    def _recover(self, err: Exception) -> None:
        """Wait for the supervisor to bring the plugin back (journal replayed).

        "Back" means RUNNING in a live process other than the one that failed: right after
        a death the watcher may still say RUNNING while it kills the tree.
        """
        w = self.watcher
        assert w is not None
        old = w.instance.process
        if isinstance(err, CallHung):
            if not self.supervise:
                raise err
            log.warning("%s; restarting plugin %s", err, w.name)
            w.request_restart(f"hung: {err}")
        elif isinstance(err, HostTimeout) and w.state == State.RUNNING and w.instance.alive():
            return  # a plain timeout with a live plugin: just try again

        def back() -> bool:
            if w.state in (State.FATAL, State.EXITED, State.STOPPED):
                return True
            p = w.instance.process
            return (w.state == State.RUNNING and p is not None and p.alive()
                    and (p is not old or not isinstance(err, CallHung) and old.alive()))

        deadline = time.monotonic() + RECOVERY_TIMEOUT_S
        while not back():
            if time.monotonic() >= deadline or self.stopping():
                raise EklError(f"plugin {w.name} did not come back within "
                               f"{RECOVERY_TIMEOUT_S:.0f} s")
            time.sleep(0.02)
        if w.state != State.RUNNING:
            raise PluginStartError(f"plugin {w.name} is {w.state}: "
                                   f"{w.fatal_reason or w.last_exit}; last error: {err}")
        log.info("plugin %s is back; continuing", w.name)

    def _stop_symbols(self, inst: PluginInstance) -> None:
        """Stop this flow's source and sink (their sockets too), best effort."""
        for stop in (lambda: inst.stop_source(self.source, self.src_meta),
                     lambda: inst.stop_sink(self.sink, self.sink_meta) if self.sink else None):
            try:
                stop()
            except EklError as e:
                log.debug("%s", e)

    def _next_message(self, stream: SourceStream,
                      inst: PluginInstance) -> Optional[SourceMessage]:
        """The source's next message, or None once ``stopping()`` (``ekl supervise``'s stop
        or reload): the wait looks at it every ``RECV_SLICE_S``, so a stop never waits out
        a quiet source. After ``SOURCE_CHECK_S`` of silence the plugin is asked whether the
        source failed: CommandError if it did, else HostTimeout (it is just quiet)."""
        try:
            return stream.recv_unless(SOURCE_CHECK_S, self.stopping)
        except HostTimeout:
            failed = inst.source_failure(self.source)
            if failed:
                raise CommandError(f"source {self.source} stopped: {failed}") from None
            raise

    def _loop(self, inst: PluginInstance) -> int:
        stream = inst.start_source(self.source, self.src_meta, self.datasource, self.config)
        fn = inst.start_function(self.function) if self.function else None
        writer = inst.start_sink(self.sink, self.sink_meta, self.sink_config) if self.sink else None
        produced = 0
        consecutive = 0
        pending: Optional[Dict[str, Any]] = None
        while (self.count is None or produced < self.count) and not self.stopping():
            try:
                if pending is None:
                    msg = self._next_message(stream, inst)
                    if msg is None:
                        break  # stopping
                    if msg.error is not None:
                        log.warning("source %s: error: %s", self.source, msg.error)
                        continue
                    pending = msg.message
                assert pending is not None
                record = dict(pending)
                if fn is not None:
                    key = self.field or next(iter(record), None)
                    if key not in record:
                        raise EklError(f"--field {key!r} is not in the message; it has: "
                                       f"{', '.join(record) or 'no fields'}")
                    try:
                        record[self.function] = fn.exec([record[key]],  # type: ignore[index]
                                                        FuncMeta(RULE, "fn", 0, 0))
                    except HostTimeout:
                        if not inst.alive():
                            raise
                        raise CallHung(hung_message(f"function {self.function}",
                                                    fn.timeout_s)) from None
                    except EklError as e:
                        if not inst.alive() or isinstance(e, HostTimeout):
                            raise
                        consecutive += 1
                        log.warning("record skipped: %s", e)
                        pending = None
                        if consecutive >= MAX_CONSECUTIVE_ERRORS:
                            raise EklError(f"{consecutive} records in a row failed in function "
                                           f"{self.function}; last: {e}") from None
                        continue
                if writer is not None:
                    try:
                        writer.write(record)
                    except HostTimeout:
                        if not inst.alive():
                            raise
                        raise CallHung(hung_message(f"sink {self.sink}",
                                                    writer.ack_timeout_s)) from None
                consecutive = 0
                pending = None
                produced += 1
                self.out(record)
            except CallHung as e:
                self._recover(e)
            except HostTimeout as e:
                if self.watcher and self.watcher.state in (State.FATAL, State.EXITED):
                    raise PluginStartError(f"plugin {inst.name} is {self.watcher.state}: "
                                           f"{self.watcher.last_exit}") from None
                if inst.alive() and pending is None:
                    continue  # the source is just quiet
                self._recover(e)
            except EklError as e:
                if inst.alive() and self.watcher and self.watcher.state == State.RUNNING:
                    raise
                self._recover(e)
        self._stop_symbols(inst)
        return 0
