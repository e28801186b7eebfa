"""ekl's pytest plugin: test an eKuiper plugin folder without eKuiper.

Registered through the ``pytest11`` entry point, so it is active wherever ekl is
installed. It gives two fixtures:

``ekl_plugin``
    The plugin started under ekl's host, as a :class:`PluginHandle`. Which plugin, first
    match wins: the ``@pytest.mark.ekl_plugin("PATH", **options)`` marker (PATH relative to
    the test file), the ``--ekl-plugin PATH`` option, the ``ekl_plugin`` ini option
    (relative to the ini file), and finally the test file's own folder or the nearest
    parent folder holding a plugin JSON (so a ``test_*.py`` next to ``NAME.json`` needs no
    configuration at all).

``ekl_plugin_factory``
    ``ekl_plugin_factory(path, **options)`` starts any number of plugins in one test.

Options (marker keywords or factory keywords): ``python`` (interpreter, as ``--python``;
``--ekl-python`` sets a default), ``ekuiper_conf``, ``init_timeout``, ``send_timeout_ms``,
``env`` (extra environment variables), ``function_timeout``, ``ack_timeout``.

Every process the fixtures start is stopped when the test ends, pass or fail, with its
whole process tree, its sockets and its private socket folder; a process that survives
makes the test error at teardown. Plugins on ekl's SDK get a private socket folder each,
so tests run in parallel (``pytest -n``); the official SDK only knows ``/tmp``, so two
tests running the *same* plugin on it at the same time would collide.
"""

from __future__ import annotations

import logging
import os
import re
import threading
import time
import uuid
from pathlib import Path
from typing import Any, Dict, Iterable, Iterator, List, Optional, Union

import pytest

from ..errors import EklError, HostTimeout

MARKER = "ekl_plugin"
INI = "ekl_plugin"


def pytest_addoption(parser: pytest.Parser) -> None:
    parser.addini(INI, "plugin folder (or NAME.json) the ekl_plugin fixture starts, relative "
                       "to the ini file", default="")
    group = parser.getgroup("ekl", "eKuiper plugins (ekl)")
    group.addoption("--ekl-plugin", metavar="PATH", default=None,
                    help="plugin folder the ekl_plugin fixture starts")
    group.addoption("--ekl-python", metavar="PATH", default=None,
                    help="interpreter to run plugins with (default: ekl's resolution)")


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line(
        "markers", f"{MARKER}(path, **options): the plugin folder the ekl_plugin fixture "
                   f"starts (relative to the test file) and its launch options")


class _Output(logging.Handler):
    """The plugin's stdout and stderr lines, without ekl's ``[NAME]`` prefix."""

    def __init__(self, name: str) -> None:
        super().__init__(logging.DEBUG)
        self.prefix = f"[{name}] "
        self.lines: List[str] = []
        self.cond = threading.Condition()

    def emit(self, record: logging.LogRecord) -> None:
        line = record.getMessage()
        if line.startswith(self.prefix):
            line = line[len(self.prefix):]
        with self.cond:
            self.lines.append(line)
            self.cond.notify_all()


class PluginHandle:
    """A running plugin: call its functions, read its sources, feed its sinks.

    Every source and sink instance a method opens uses a fresh rule id, so calls never
    interfere with each other (or with other tests on the official SDK's ``/tmp``).
    """

    def __init__(self, target: Path, options: Dict[str, Any]) -> None:
        from ..plugin import load
        from ..settings import HostSettings, LaunchOptions
        from ..start import prepare

        self.target = target
        self.manifest = load(target)
        self.name = self.manifest.name
        self.folder = self.manifest.folder
        opts = LaunchOptions(python=options.get("python"),
                             ekuiper_conf=options.get("ekuiper_conf"),
                             send_timeout_ms=int(options.get("send_timeout_ms", 1000)),
                             extra_env=dict(options.get("env") or {}))
        timeouts = {attr: float(options[key]) for key, attr in (
            ("init_timeout", "init_timeout_s"), ("function_timeout", "function_timeout_s"),
            ("ack_timeout", "ack_timeout_s")) if key in options}
        hs = HostSettings(plugin_send_timeout_ms=opts.send_timeout_ms, **timeouts)
        self.instance = prepare(self.manifest, opts, hs)
        self._out = _Output(self.name)
        self._logger = logging.getLogger(f"ekl.plugin.{self.name}")
        self._logger.addHandler(self._out)
        if self._logger.level == logging.NOTSET or self._logger.level > logging.INFO:
            self._logger.setLevel(logging.INFO)
        self._rule = f"pt{uuid.uuid4().hex[:8]}"
        self._n = 0
        self.instance.start_process()

    # --- introspection -------------------------------------------------------------------

    @property
    def pid(self) -> Optional[int]:
        return self.instance.pid

    @property
    def output(self) -> List[str]:
        """Every line the plugin wrote to stdout or stderr so far."""
        with self._out.cond:
            return list(self._out.lines)

    def wait_output(self, pattern: str, timeout: float = 5.0) -> str:
        """The first output line matching the regex ``pattern``; waits up to ``timeout`` s."""
        rx = re.compile(pattern)
        end = time.monotonic() + timeout
        with self._out.cond:
            while True:
                for line in self._out.lines:
                    if rx.search(line):
                        return line
                left = end - time.monotonic()
                if left <= 0:
                    raise HostTimeout(f"plugin {self.name}: no output line matched {pattern!r} "
                                      f"within {timeout:.1f} s")
                self._out.cond.wait(left)

    def _meta(self, what: str) -> Any:
        from ekuiper.protocol import Meta

        self._n += 1
        return Meta(self._rule, f"{what}{self._n}", 0)

    # --- the protocol --------------------------------------------------------------------

    def ping(self, timeout: float = 5.0) -> float:
        """The control channel's round trip in seconds (the supervisor's liveness probe)."""
        rtt = self.instance.ping(timeout)
        return 0.0 if rtt is None else rtt

    def call(self, function: str, *args: Any) -> Any:
        """Exec the function with ``args``; its result, or :class:`FunctionError`."""
        from ekuiper.protocol import FuncMeta

        self._check("functions", function)
        return self.instance.start_function(function).exec(list(args), FuncMeta(self._rule, "call", 0, 0))

    def validate(self, function: str, *args: Any) -> Optional[str]:
        """What the function's Validate says about ``args``: None when valid, else its text."""
        self._check("functions", function)
        return self.instance.start_function(function).validate(list(args))

    def is_aggregate(self, function: str) -> bool:
        self._check("functions", function)
        return self.instance.start_function(function).is_aggregate()

    def read(self, source: str, n: int = 1, *, datasource: str = "",
             config: Optional[Dict[str, Any]] = None, conf_key: str = "default",
             timeout: float = 10.0, meta: bool = False, errors: bool = False) -> List[Any]:
        """Start ``source`` as a stream would, read ``n`` messages, stop it.

        ``config`` is merged over the ``conf_key`` section of ``sources/SOURCE.yaml``, as
        eKuiper merges stream options over it. Messages come back as dicts, or as
        ``{"message": ..., "meta": ...}`` with ``meta=True``. An error the source emits
        raises :class:`EklError`, or is returned as ``{"error": text}`` with ``errors=True``
        (and counts towards ``n``).
        """
        self._check("sources", source)
        conf = self.manifest.source_config(source, conf_key)
        conf.update(config or {})
        m = self._meta(f"read_{source}_")
        stream = self.instance.start_source(source, m, datasource, conf)
        out: List[Any] = []
        try:
            while len(out) < n:
                msg = stream.recv(timeout)
                if msg.error is not None:
                    if not errors:
                        raise EklError(f"source {source}: emitted an error: {msg.error}")
                    out.append({"error": msg.error})
                    continue
                out.append({"message": msg.message, "meta": msg.meta} if meta else msg.message)
        finally:
            self.instance.stop_source(source, m)
        return out

    def feed(self, sink: str, records: Iterable[Any], *, config: Optional[Dict[str, Any]] = None,
             require_ack: bool = True, timeout: Optional[float] = None) -> List[Optional[str]]:
        """Start ``sink`` with ``config``, send each record, stop it; return the acks.

        A record is sent as eKuiper sends it: JSON-encoded (a dict, or a list of dicts for
        a batch), or as given when it is ``bytes``. With ``require_ack`` (the rule's
        ``requireAck``) each ack is returned in order: None for success, the sink's error
        text otherwise. Without it nothing is acked and the list is empty. The sink is
        stopped after the last record; it collects everything it received first.
        """
        self._check("sinks", sink)
        conf = dict(config or {})
        if require_ack:
            conf["requireAck"] = True
        m = self._meta(f"feed_{sink}_")
        writer = self.instance.start_sink(sink, m, conf)
        acks: List[Optional[str]] = []
        try:
            writer.require_ack = False  # we read the acks ourselves, errors included
            for record in records:
                writer.write(record)
                if require_ack:
                    acks.append(writer.wait_ack(timeout))
        finally:
            self.instance.stop_sink(sink, m)
        return acks

    def _check(self, kind: str, symbol: str) -> None:
        names = getattr(self.manifest, kind)
        if symbol not in names:
            raise EklError(f"{self.manifest.path.name} lists no {kind[:-1]} {symbol!r}; it has: "
                           f"{', '.join(names) or 'none'}")

    def close(self) -> List[int]:
        """Stop everything; returns the pids that survived (should be none)."""
        try:
            return self.instance.close()
        finally:
            self._logger.removeHandler(self._out)


class PluginFactory:
    """Starts plugins for one test and stops all of them at its end."""

    def __init__(self, base: Path, defaults: Dict[str, Any]) -> None:
        self.base = base
        self.defaults = defaults
        self.handles: List[PluginHandle] = []

    def __call__(self, path: Union[str, os.PathLike], **options: Any) -> PluginHandle:
        target = Path(path)
        if not target.is_absolute():
            target = self.base / target
        opts = dict(self.defaults)
        opts.update(options)
        try:
            handle = PluginHandle(target, opts)
        except EklError as e:
            pytest.fail(f"ekl: {e}", pytrace=False)
        self.handles.append(handle)
        return handle

    def close(self) -> None:
        from ..process import is_gone

        survivors: List[int] = []
        pids = []
        for h in self.handles:
            if h.pid is not None:
                pids.append(h.pid)
            survivors += h.close()
        survivors += [p for p in pids if not is_gone(p) and p not in survivors]
        if survivors:
            pytest.fail(f"ekl: plugin processes {survivors} survived the end of the test",
                        pytrace=False)


def _find_plugin_folder(start: Path, stop: Path) -> Optional[Path]:
    from ..errors import ManifestError
    from ..plugin import find_json

    d = start
    while True:
        try:
            find_json(d)
            return d
        except ManifestError:
            pass
        if d == stop or d.parent == d:
            return None
        d = d.parent


def _default_target(request: pytest.FixtureRequest) -> Path:
    config = request.config
    marker = request.node.get_closest_marker(MARKER)
    test_dir = Path(str(request.node.path)).parent
    if marker is not None and marker.args:
        return test_dir / str(marker.args[0])
    cli = config.getoption("--ekl-plugin")
    if cli:
        return Path(config.invocation_params.dir) / cli
    ini = config.getini(INI)
    if ini:
        base = Path(str(config.inipath)).parent if config.inipath else Path(str(config.rootpath))
        return base / str(ini)
    found = _find_plugin_folder(test_dir, Path(str(config.rootpath)))
    if found is None:
        pytest.fail(f"ekl: no plugin for the ekl_plugin fixture: {test_dir} holds no NAME.json; "
                    f"use @pytest.mark.ekl_plugin('PATH'), --ekl-plugin PATH or the ini option "
                    f"ekl_plugin = PATH", pytrace=False)
    return found


def _defaults(request: pytest.FixtureRequest) -> Dict[str, Any]:
    python = request.config.getoption("--ekl-python")
    return {"python": python} if python else {}


@pytest.fixture
def ekl_plugin_factory(request: pytest.FixtureRequest) -> Iterator[PluginFactory]:
    """``factory(path, **options)`` starts a plugin; all are stopped when the test ends."""
    factory = PluginFactory(Path(str(request.node.path)).parent, _defaults(request))
    try:
        yield factory
    finally:
        factory.close()


@pytest.fixture
def ekl_plugin(request: pytest.FixtureRequest, ekl_plugin_factory: PluginFactory) -> PluginHandle:
    """The plugin chosen by marker, option, ini or the test's folder, started under ekl."""
    marker = request.node.get_closest_marker(MARKER)
    options = dict(marker.kwargs) if marker is not None else {}
    return ekl_plugin_factory(_default_target(request), **options)
