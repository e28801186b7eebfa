"""Many plugins under one launcher: a watcher each, one status file, one stop for all.

The arbiter owns the set of watchers. Its set comes from the command line or a config file
(``PluginEntry`` each); with a config file, SIGHUP reloads it: added plugins start, removed
ones stop, changed ones restart, unchanged ones are untouched, and a bad file is refused
with one line per problem while the running set is kept. Without one, SIGHUP stops it
like SIGTERM. Under systemd (``NOTIFY_SOCKET``) it says READY once every plugin is
RUNNING, keeps STATUS current, pings the watchdog while its loop runs, and says STOPPING.
"""

from __future__ import annotations

import logging
import signal
import threading
import time
from types import MappingProxyType
from typing import Any, Callable, Dict, List, Mapping, Optional, Tuple

from ekuiper.record import field, record, replace
from ekuiper.sigevent import SignalEvent

from ..errors import EklError, ManifestError
from ..plugin import Plugin, load
from ..settings import HostSettings, LaunchOptions, SupervisorSettings
from ..start import prepare
from .control import ControlServer
from .status import MODE_SUPERVISE, StatusWriter, status_document
from .watcher import Watcher

log = logging.getLogger("ekl")


@record(frozen=True)
class PluginEntry:
    """One plugin to supervise and its settings, as the CLI or the config file decided."""

    target: str
    opts: LaunchOptions = field(default_factory=LaunchOptions)
    host: HostSettings = field(default_factory=HostSettings)
    sup: SupervisorSettings = field(default_factory=SupervisorSettings)
    #: the config file's overrides of the plugin JSON (virtualEnvType, env, lock, sdk)
    section: Mapping[str, Any] = field(default_factory=lambda: MappingProxyType({}))

    def load(self) -> Plugin:
        plugin = load(self.target)
        s = self.section
        if not s:
            return plugin
        ekl = replace(plugin.ekl, lock=s.get("lock", plugin.ekl.lock),
                      sdk=s.get("sdk", plugin.ekl.sdk))
        return replace(plugin, env_kind=s.get("virtualEnvType", plugin.env_kind),
                       env=s.get("env", plugin.env), ekl=ekl)


#: How long a stop waits for a flow's thread (the sink's drain included) before it goes on.
FLOW_STOP_TIMEOUT_S = 10.0


class Flow:
    """A pipeline of the config file, served on its plugin's watcher in a thread of its own."""

    def __init__(self, spec: Any, plugin: Plugin, watcher: Watcher) -> None:
        from .pipeline import Pipeline

        self.spec = spec
        self._stop = threading.Event()
        config = plugin.source_config(spec.source, spec.conf_key)
        config.update(dict(spec.config))
        self.pipeline = Pipeline(
            plugin, source=spec.source, datasource=spec.datasource, config=config,
            function=spec.function, field=spec.field, sink=spec.sink,
            sink_config=dict(spec.properties), count=None,
            out=lambda record: log.debug("pipeline %s: %s", spec.name, record),
            rule=f"ekl_{spec.name}")
        self._thread = threading.Thread(target=self.pipeline.serve,
                                        args=(watcher, self._stop.is_set), daemon=True,
                                        name=f"pipeline-{spec.name}")
        self._thread.start()

    def request_stop(self) -> None:
        """Tell the flow to stop (it notices within ``sources.RECV_SLICE_S``) and return:
        many flows stop together (``stop_flows``), not one after the other."""
        self._stop.set()

    def join(self, timeout_s: float) -> None:
        self._thread.join(max(0.0, timeout_s))


def stop_flows(flows: List[Flow]) -> None:
    """Stop ``flows`` together: each is told at once, then all are waited for under one
    ``FLOW_STOP_TIMEOUT_S`` (each may wait for its sink's drain). One after the other,
    six flows on quiet sources took 5 s to stop."""
    for flow in flows:
        flow.request_stop()
    deadline = time.monotonic() + FLOW_STOP_TIMEOUT_S
    for flow in flows:
        flow.join(deadline - time.monotonic())


def _unique(plugins: List[Plugin]) -> None:
    names = [p.name for p in plugins]
    dup = sorted({n for n in names if names.count(n) > 1})
    if dup:
        raise EklError(f"plugin {', '.join(dup)} given twice; each plugin runs once per "
                       f"launcher (its control socket is per name)")


class Arbiter:
    def __init__(self, entries: List[PluginEntry], status_file: Optional[str] = None,
                 reload: Optional[Callable[[], Tuple[List[PluginEntry], List[Any]]]] = None,
                 notifier: Any = None, flows: Optional[List[Any]] = None) -> None:
        """``reload``: read the config again (SIGHUP) -> (entries, pipelines);
        ``notifier``: an ops.sdnotify.Notifier; ``flows``: the config's pipelines."""
        self.entries = list(entries)
        self.flow_specs = list(flows or [])
        self.flows: Dict[str, Flow] = {}
        self._plugins: Dict[str, Plugin] = {}
        self.reload_entries = reload
        self.notifier = notifier
        self.watchers: Dict[str, Watcher] = {}
        self._entry_of: Dict[str, PluginEntry] = {}
        self._stop = threading.Event()
        self._reload = threading.Event()
        self._lock = threading.Lock()
        self._ready_sent = False
        self.control: Optional[ControlServer] = None
        self.status_writer = (StatusWriter.open(status_file, self.status) if status_file
                              else None)

    @property
    def interval(self) -> float:
        ws = list(self.watchers.values())
        return min((w.settings.health_interval_s for w in ws), default=2.0)

    def status(self) -> Dict[str, Any]:
        return status_document([w.status() for w in list(self.watchers.values())],
                               MODE_SUPERVISE, self.control.path if self.control else None)

    def write_status(self) -> None:
        if self.status_writer is not None:
            self.status_writer.changed()

    # --- the set of watchers -------------------------------------------------------------

    def _watcher(self, plugin: Plugin, entry: PluginEntry) -> Watcher:
        inst = prepare(plugin, entry.opts, entry.host)
        return Watcher(inst, entry.sup, on_state=lambda *_: self.write_status())

    def start(self) -> None:
        plugins = [e.load() for e in self.entries]  # every manifest problem before any start
        _unique(plugins)
        self._check_flows(self.flow_specs, {p.name for p in plugins})
        for p, e in zip(plugins, self.entries):
            self.watchers[p.name] = self._watcher(p, e)
            self._entry_of[p.name] = e
            self._plugins[p.name] = p
        self.control = ControlServer(lambda: list(self.watchers),
                                     lambda op, name, t: self.watchers[name].operate(op, t))
        for w in list(self.watchers.values()):
            w.start()
        self._start_flows(self.flow_specs)

    @staticmethod
    def _check_flows(specs: List[Any], names: set) -> None:
        for f in specs:
            if f.plugin not in names:
                raise EklError(f"pipeline {f.name}: plugin {f.plugin} is not supervised here")

    def _start_flows(self, specs: List[Any]) -> None:
        for spec in specs:
            if spec.name not in self.flows:
                self.flows[spec.name] = Flow(spec, self._plugins[spec.plugin],
                                             self.watchers[spec.plugin])

    def apply(self, entries: List[PluginEntry],
              flows: Optional[List[Any]] = None) -> Dict[str, List[str]]:
        """Make the running set ``entries``: start added, stop removed, restart changed;
        pipelines likewise (a pipeline of a changed plugin starts again on the new one)."""
        plugins = [e.load() for e in entries]
        _unique(plugins)
        flows = list(flows or [])
        self._check_flows(flows, {p.name for p in plugins})
        wanted = {p.name: (p, e) for p, e in zip(plugins, entries)}
        done: Dict[str, List[str]] = {"added": [], "removed": [], "changed": [], "unchanged": []}
        with self._lock:
            touched = {n for n in self.watchers
                       if n not in wanted or self._entry_of.get(n) != wanted[n][1]}
            keep = {f.name: f for f in flows}
            stop_flows([self.flows.pop(name) for name, flow in list(self.flows.items())
                        if flow.spec.plugin in touched or keep.get(name) != flow.spec])
            for name in [n for n in self.watchers if n not in wanted]:
                self.watchers.pop(name).stop()
                self._entry_of.pop(name, None)
                done["removed"].append(name)
            for name, (p, e) in wanted.items():
                if name in self.watchers and self._entry_of.get(name) == e:
                    done["unchanged"].append(name)
                    continue
                if name in self.watchers:
                    self.watchers.pop(name).stop()
                    done["changed"].append(name)
                else:
                    done["added"].append(name)
                w = self._watcher(p, e)
                self.watchers[name] = w
                self._entry_of[name] = e
                self._plugins[name] = p
                w.start()
            self.entries = list(entries)
            self.flow_specs = flows
            self._start_flows(flows)
        self.write_status()
        return done

    def _do_reload(self) -> None:
        assert self.reload_entries is not None
        if self.notifier is not None:
            self.notifier.reloading()
        try:
            entries, flows = self.reload_entries()
            done = self.apply(entries, flows)
        except ManifestError as e:
            for line in e.problems:
                log.error("reload refused, the running plugins are kept: %s", line)
        except EklError as e:
            log.error("reload refused, the running plugins are kept: %s", e)
        else:
            log.info("reloaded: %s", "; ".join(f"{k} {', '.join(v)}" for k, v in done.items()
                                                if v) or "nothing changed")
        if self.notifier is not None:
            self.notifier.ready()

    def stop(self) -> None:
        if self.notifier is not None:
            self.notifier.stopping()
        if self.control is not None:
            self.control.close()
        stop_flows(list(self.flows.values()))
        for w in list(self.watchers.values()):
            w.stop()
        if self.status_writer is not None:
            self.status_writer.close()

    # --- the loop ------------------------------------------------------------------------

    def _notify(self) -> None:
        from ..ops.sdnotify import all_running, summary

        plugins = [w.status() for w in list(self.watchers.values())]
        doc = [{"plugins": plugins}]
        self.notifier.status(summary(doc))
        if not self._ready_sent and all_running(doc):
            self.notifier.ready()
            self._ready_sent = True

    def run(self) -> int:
        """Until SIGTERM/SIGINT (or SIGHUP without a config): supervise, then stop all."""
        # The handlers run in this thread, possibly inside one of its Event calls: they
        # only note the request and wake the loop (ekuiper.sigevent says why), and the
        # loop sets the events other threads read.
        wake = SignalEvent()
        asked = {"stop": False, "hup": False}

        def on_stop(signum: int, _f: object) -> None:
            asked["stop"] = True
            wake.set()

        def on_hup(signum: int, _f: object) -> None:
            asked["hup"] = True
            wake.set()

        def take_requests() -> None:
            if asked["hup"]:
                asked["hup"] = False
                (self._reload if self.reload_entries else self._stop).set()
            if asked["stop"]:
                self._stop.set()

        old = {s: signal.signal(s, on_stop) for s in (signal.SIGTERM, signal.SIGINT)}
        old[signal.SIGHUP] = signal.signal(signal.SIGHUP, on_hup)
        pinger = beats = None
        try:
            self.start()
            log.info("supervising %d plugin(s)", len(self.watchers))
            if self.notifier is not None and self.notifier.enabled:
                from ..ops.sdnotify import Heartbeats, WatchdogPinger

                beats = Heartbeats(max_age=max(10.0, 3 * self.interval))
                beats.beat("arbiter")
                pinger = WatchdogPinger(self.notifier, beats.alive)
                pinger.start()
            while not self._stop.is_set():
                wake.wait(self.interval)
                wake.clear()
                take_requests()
                if self._stop.is_set():
                    break
                if self._reload.is_set():
                    self._reload.clear()
                    self._do_reload()
                self.write_status()
                if beats is not None:
                    beats.beat("arbiter")
                    self._notify()
        finally:
            for s, h in old.items():
                signal.signal(s, h)
            wake.close()
            if pinger is not None:
                pinger.stop()
            self.stop()
        return 0
