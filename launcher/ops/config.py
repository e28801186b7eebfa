"""``ekl supervise --config FILE.toml``: plugins, their settings and pipelines, as a service.

An operator used to supervisord or systemd expects one file that says what runs and how,
checked before anything starts and reloaded on SIGHUP. This module parses and checks that
file into frozen records and computes what a reload must do; it starts nothing.

Every per-plugin setting the CLI flags and the plugin JSON's ``ekl`` section have is a key
here, under the ``ekl`` section's name (see :data:`PLUGIN_KEYS`; docs/deploy.md lists
them). ``[defaults]`` applies to every plugin; a plugin's own table overrides it. Relative
paths are taken from the config file's folder, so a config and its plugins can move
together. A bad file yields every problem at once, one line each, with ``FILE:LINE`` when
the line can be found, the key's path, and the fix.

TOML is read with :mod:`tomllib` (Python 3.11+) or the ``tomli`` backport.
"""

from __future__ import annotations

import difflib
import math
import os
import re
import sys
from types import MappingProxyType
from typing import Any, Callable, Dict, List, Mapping, Optional, Sequence, Tuple

from ekuiper.record import field as dc_field
from ekuiper.record import record

from ..errors import ManifestError

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover - exercised on 3.9/3.10 only
    import tomli as tomllib

#: a config file is a few KiB; anything near this is not one
MAX_CONFIG_BYTES = 1024 * 1024
RESTART_POLICIES = ("always", "on-failure", "never")
LOG_FORMATS = ("text", "json")
_NAME = re.compile(r"[A-Za-z0-9_][A-Za-z0-9_.-]{0,63}")
_ENV_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")

Check = Callable[[Any], Optional[str]]  # None when fine, else "is X; use Y"


class ConfigError(ManifestError):
    """Every problem in a config file, one line each (printed like a manifest's problems)."""


# --- value checks --------------------------------------------------------------------------


def _number(minimum: float = 0.0, strict: bool = False, integer: bool = False) -> Check:
    word = "an integer" if integer else "a number"
    bound = f"> {minimum:g}" if strict else f">= {minimum:g}"

    def check(v: Any) -> Optional[str]:
        ok = not isinstance(v, bool) and isinstance(v, int if integer else (int, float))
        if ok and isinstance(v, float) and not math.isfinite(v):
            ok = False
        if ok and (v <= minimum if strict else v < minimum):
            ok = False
        return None if ok else f"is {_show(v)}; use {word} {bound}"
    return check


def _choice(*options: str) -> Check:
    def check(v: Any) -> Optional[str]:
        return None if v in options else f"is {_show(v)}; use {' or '.join(repr(o) for o in options)}"
    return check


def _bool(v: Any) -> Optional[str]:
    return None if isinstance(v, bool) else f"is {_show(v)}; use true or false"


def _kind(v: Any) -> Optional[str]:
    from ekl.envs.model import KINDS  # the one table of environment kinds

    return None if v in KINDS else f"must be one of {', '.join(KINDS)}, not {_show(v)}"


def _string(v: Any) -> Optional[str]:
    if not isinstance(v, str) or not v or "\0" in v:
        return f"is {_show(v)}; use a non-empty string"
    return None


def _env_table(v: Any) -> Optional[str]:
    if not isinstance(v, dict):
        return f'is {_show(v)}; use a table like {{ HTTP_PROXY = "http://proxy:3128" }}'
    for k, x in v.items():
        if not _ENV_NAME.fullmatch(k) or not isinstance(x, str) or "\0" in x:
            return (f"has {k} = {_show(x)}; use NAME = \"value\" pairs (names of letters, digits, "
                    f"_; string values)")
    return None


def _show(v: Any) -> str:
    text = repr(v) if not isinstance(v, bool) else str(v).lower()
    return text if len(text) <= 60 else text[:57] + "..."


# --- the schema ----------------------------------------------------------------------------

#: where a key goes: SupervisorSettings, HostSettings, LaunchOptions or the JSON ``ekl`` section
SUPERVISOR, HOST, LAUNCH, SECTION = "supervisor", "host", "launch", "ekl_section"
PATH_KEYS = {"ipc_dir", "ekuiper_conf", "log_file", "lock"}

#: key -> (group, check, what it is). Names are the plugin JSON ``ekl`` section's (which are
#: SupervisorSettings' and HostSettings' field names) and LaunchOptions' for the rest.
PLUGIN_KEYS: Dict[str, Tuple[str, Check, str]] = {
    # SupervisorSettings (--restart, --max-rss, --health-interval, ...)
    "restart": (SUPERVISOR, _choice(*RESTART_POLICIES), "restart policy"),
    "backoff_initial_s": (SUPERVISOR, _number(0), "first restart delay"),
    "backoff_factor": (SUPERVISOR, _number(1), "delay multiplier per failed start"),
    "backoff_max_s": (SUPERVISOR, _number(0), "longest restart delay"),
    "startsecs": (SUPERVISOR, _number(0), "healthy this long and the back-off resets"),
    "start_limit": (SUPERVISOR, _number(1, integer=True), "starts within the window before FATAL"),
    "start_limit_window_s": (SUPERVISOR, _number(0, strict=True), "start-limit window"),
    "health_interval_s": (SUPERVISOR, _number(0, strict=True), "seconds between health checks"),
    "probe_timeout_s": (SUPERVISOR, _number(0, strict=True), "ping deadline"),
    "max_rss_mb": (SUPERVISOR, _number(0, strict=True), "memory limit of the process tree"),
    "rss_strikes": (SUPERVISOR, _number(1, integer=True), "checks above max_rss_mb before restart"),
    "rss_growth_mb_s": (SUPERVISOR, _number(0, strict=True), "growth rate memory sampling assumes"),
    "rss_fast_interval_s": (SUPERVISOR, _number(0, strict=True), "fastest memory sampling near max_rss_mb"),
    "call_timeout_s": (SUPERVISOR, _number(0, strict=True), "a call or sink write busy longer is a hang"),
    # HostSettings (--init-timeout, --ipc-dir, ...)
    "init_timeout_s": (HOST, _number(0, strict=True), "handshake deadline"),
    "command_timeout_s": (HOST, _number(0, strict=True), "start/stop command deadline"),
    "function_timeout_s": (HOST, _number(0, strict=True), "function answer deadline"),
    "sink_send_timeout_s": (HOST, _number(0, strict=True), "sink send deadline"),
    "ack_timeout_s": (HOST, _number(0, strict=True), "sink ack deadline"),
    "stop_timeout_s": (HOST, _number(0), "SIGTERM to SIGKILL"),
    "ipc_dir": (HOST, _string, "socket folder"),
    # LaunchOptions (--python, --ekuiper-conf, --conda-run, --lock, --send-timeout, --log-file)
    "python": (LAUNCH, _string, "interpreter"),
    "ekuiper_conf": (LAUNCH, _string, "eKuiper's kuiper.yaml"),
    "conda_run": (LAUNCH, _bool, "start through conda run"),
    "send_timeout_ms": (LAUNCH, _number(0, strict=True, integer=True), "sendTimeout in argv[1]"),
    "lock_policy": (LAUNCH, _choice("strict", "warn", "off"), "drift from the lock file"),
    "log_file": (LAUNCH, _string, "copy of the plugin's output"),
    "create_env": (LAUNCH, _bool, "build .ekl-env from the lock file when missing"),
    "extra_env": (LAUNCH, _env_table, "environment variables for the plugin"),
    # the plugin JSON's ``ekl`` section (read when resolving the interpreter)
    "sdk": (SECTION, _choice("ekl", "official"), "which SDK runs the plugin"),
    "lock": (SECTION, _string, "the conda-lock file"),
    "virtualEnvType": (SECTION, _kind, "environment kind"),
    "env": (SECTION, _string, "environment name or path"),
}
PLUGIN_ONLY_KEYS = {"path"}
SUPERVISE_KEYS: Dict[str, Check] = {"status_file": _string, "log_dir": _string,
                                    "log_format": _choice(*LOG_FORMATS)}
PIPELINE_KEYS = {"plugin", "source", "datasource", "conf_key", "config", "function", "field",
                 "sink", "properties"}
TOP_KEYS = {"supervise", "defaults", "plugins", "pipelines"}


# --- the result ----------------------------------------------------------------------------


def _freeze(v: Any) -> Any:
    if isinstance(v, dict):
        return MappingProxyType({k: _freeze(x) for k, x in v.items()})
    if isinstance(v, list):
        return tuple(_freeze(x) for x in v)
    return v


def thaw(v: Any) -> Any:
    """A plain, JSON-encodable copy of a frozen value (for a source config, sink properties)."""
    if isinstance(v, Mapping):
        return {k: thaw(x) for k, x in v.items()}
    if isinstance(v, tuple):
        return [thaw(x) for x in v]
    return v


_EMPTY: Mapping[str, Any] = MappingProxyType({})


@record(frozen=True)
class PluginConfig:
    """One ``[plugins.NAME]`` with ``[defaults]`` merged in; only the keys the file sets.

    The groups are meant to be splatted over ekl's defaults, e.g.
    ``SupervisorSettings(**{**vars(SupervisorSettings()), **pc.supervisor})``; ``launch``
    also carries ``send_timeout_ms``, which HostSettings knows as ``plugin_send_timeout_ms``.
    """

    name: str
    path: str
    supervisor: Mapping[str, Any] = dc_field(default_factory=lambda: _EMPTY)
    host: Mapping[str, Any] = dc_field(default_factory=lambda: _EMPTY)
    launch: Mapping[str, Any] = dc_field(default_factory=lambda: _EMPTY)
    ekl_section: Mapping[str, Any] = dc_field(default_factory=lambda: _EMPTY)


@record(frozen=True)
class PipelineConfig:
    """``[pipelines.NAME]``: source -> optional function -> sink, kept running in one plugin."""

    name: str
    plugin: str
    source: str
    sink: str
    datasource: str = ""
    conf_key: str = "default"
    config: Mapping[str, Any] = dc_field(default_factory=lambda: _EMPTY)
    function: Optional[str] = None
    field: Optional[str] = None
    properties: Mapping[str, Any] = dc_field(default_factory=lambda: _EMPTY)


@record(frozen=True)
class SuperviseConfig:
    path: str
    plugins: Tuple[PluginConfig, ...]
    pipelines: Tuple[PipelineConfig, ...] = ()
    status_file: Optional[str] = None
    log_dir: Optional[str] = None
    log_format: Optional[str] = None

    def plugin(self, name: str) -> Optional[PluginConfig]:
        return next((p for p in self.plugins if p.name == name), None)


@record(frozen=True)
class ConfigDiff:
    """What a reload does: start ``added``, stop ``removed``, restart ``changed``."""

    added: Tuple[str, ...] = ()
    removed: Tuple[str, ...] = ()
    changed: Tuple[str, ...] = ()
    unchanged: Tuple[str, ...] = ()
    pipelines_added: Tuple[str, ...] = ()
    pipelines_removed: Tuple[str, ...] = ()
    pipelines_changed: Tuple[str, ...] = ()
    #: ``[supervise]`` keys that changed; they take effect only when ekl supervise restarts
    launcher_changed: Tuple[str, ...] = ()

    @property
    def empty(self) -> bool:
        return not (self.added or self.removed or self.changed or self.pipelines_added
                    or self.pipelines_removed or self.pipelines_changed or self.launcher_changed)


def _compare(old: Dict[str, Any], new: Dict[str, Any]) -> Tuple[Tuple[str, ...], ...]:
    added = tuple(n for n in new if n not in old)
    removed = tuple(n for n in old if n not in new)
    changed = tuple(n for n in new if n in old and old[n] != new[n])
    same = tuple(n for n in new if n in old and old[n] == new[n])
    return added, removed, changed, same


def diff(old: SuperviseConfig, new: SuperviseConfig) -> ConfigDiff:
    """Plugin and pipeline names by what a SIGHUP reload must do with them, in file order.

    A plugin is ``changed`` when anything in its merged settings (its table or
    ``[defaults]``) or its path differs; its plugin code changing on disk is not seen here
    (``ekl restart NAME`` picks that up). A changed pipeline is stopped and started again
    without restarting its plugin.
    """
    a, r, c, u = _compare({p.name: p for p in old.plugins}, {p.name: p for p in new.plugins})
    pa, pr, pc, _ = _compare({p.name: p for p in old.pipelines}, {p.name: p for p in new.pipelines})
    launcher = tuple(k for k in SUPERVISE_KEYS if getattr(old, k) != getattr(new, k))
    return ConfigDiff(a, r, c, u, pa, pr, pc, launcher)


# --- parsing -------------------------------------------------------------------------------


_HEADER_PART = re.compile(r'"((?:[^"\\]|\\.)*)"|\'([^\']*)\'|([A-Za-z0-9_-]+)')


def _header_parts(header: str) -> List[str]:
    return [a or b or c for a, b, c in _HEADER_PART.findall(header)]


class _Locator:
    """Best-effort ``FILE:LINE`` for a key path: tomllib reports lines for syntax errors only."""

    def __init__(self, text: str) -> None:
        self.lines = text.splitlines()

    def line(self, keypath: Sequence[str]) -> Optional[int]:
        table: List[str] = []
        header_line: Optional[int] = None
        best: Optional[int] = None
        for i, raw in enumerate(self.lines, 1):
            s = raw.strip()
            m = re.match(r"^\[\[?([^\]]*)\]\]?", s)
            if m:
                table = _header_parts(m.group(1))
                if table == list(keypath):
                    return i
                if table == list(keypath[:-1]):
                    header_line = i
                continue
            m = re.match(r'^("[^"]*"|\'[^\']*\'|[A-Za-z0-9_.\-"\' ]+?)\s*=', s)
            if m:
                full = table + _header_parts(m.group(1))
                if full == list(keypath):
                    return i
                if best is None and full == list(keypath[: len(full)]) and len(full) < len(keypath):
                    best = i  # an inline table holding the key
        return best or header_line


class _Problems:
    def __init__(self, path: str, text: str) -> None:
        self.path = path
        self.loc = _Locator(text)
        self.lines: List[str] = []

    def add(self, keypath: Sequence[str], what: str) -> None:
        line = self.loc.line(keypath) if keypath else None
        where = f"{self.path}:{line}" if line else self.path
        key = ".".join(keypath)
        self.lines.append(f"{where}: {key}: {what}" if key else f"{where}: {what}")

    def unknown(self, keypath: Sequence[str], known: Sequence[str]) -> None:
        near = difflib.get_close_matches(keypath[-1], list(known), n=1)
        hint = f"did you mean {near[0]!r}?" if near else f"use one of {', '.join(sorted(known))}"
        self.add(keypath, f"is not a known key; {hint}")


def _resolve_path(base: str, value: str) -> str:
    return value if os.path.isabs(value) else os.path.normpath(os.path.join(base, value))


def _json_safe(v: Any) -> bool:
    if isinstance(v, dict):
        return all(_json_safe(x) for x in v.values())
    if isinstance(v, list):
        return all(_json_safe(x) for x in v)
    if isinstance(v, float):
        return math.isfinite(v)
    return isinstance(v, (str, int, bool))


def _plugin_settings(table: Dict[str, Any], where: List[str], base: str,
                     problems: _Problems) -> Dict[str, Any]:
    """The checked per-plugin keys of one table (``[defaults]`` or a plugin's)."""
    out: Dict[str, Any] = {}
    for k, v in table.items():
        if k in PLUGIN_ONLY_KEYS and where[0] == "plugins":
            continue
        if k not in PLUGIN_KEYS:
            problems.unknown(where + [k], list(PLUGIN_KEYS) + (["path"] if where[0] == "plugins" else []))
            continue
        bad = PLUGIN_KEYS[k][1](v)
        if bad:
            problems.add(where + [k], bad)
            continue
        if k in PATH_KEYS or (k == "python" and "/" in v):
            v = _resolve_path(base, v)
        out[k] = v
    return out


def _group(settings: Dict[str, Any], group: str) -> Mapping[str, Any]:
    return _freeze({k: v for k, v in settings.items() if PLUGIN_KEYS[k][0] == group})


def parse(text: str, path: str = "<config>") -> SuperviseConfig:
    """Check and convert a config file's text; ``path`` names it and anchors relative paths."""
    problems = _Problems(path, text)
    try:
        doc = tomllib.loads(text)
    except tomllib.TOMLDecodeError as e:
        msg = str(e)
        m = re.search(r"\(at line (\d+), column (\d+)\)", msg)
        what = re.sub(r"\s*\(at line \d+, column \d+\)", "", msg) or "syntax error"
        where = f"{path}:{m.group(1)}" if m else path
        col = f" (column {m.group(2)})" if m else ""
        raise ConfigError([f"{where}: not valid TOML: {what}{col}; fix the syntax"]) from None
    base = os.path.dirname(os.path.abspath(path)) if path != "<config>" else os.getcwd()

    for k in doc:
        if k not in TOP_KEYS:
            problems.unknown([k], sorted(TOP_KEYS))

    def table(key: str) -> Dict[str, Any]:
        v = doc.get(key, {})
        if not isinstance(v, dict):
            problems.add([key], f"must be a table: [{key}]")
            return {}
        return v

    sup = table("supervise")
    launcher: Dict[str, Any] = {}
    for k, v in sup.items():
        if k not in SUPERVISE_KEYS:
            problems.unknown(["supervise", k], list(SUPERVISE_KEYS))
            continue
        bad = SUPERVISE_KEYS[k](v)
        if bad:
            problems.add(["supervise", k], bad)
        else:
            launcher[k] = _resolve_path(base, v) if k in ("status_file", "log_dir") else v

    defaults = _plugin_settings(table("defaults"), ["defaults"], base, problems)

    plugins: List[PluginConfig] = []
    ptables = table("plugins")
    if not ptables and isinstance(doc.get("plugins", {}), dict):
        problems.add([], 'declares no plugins; add a [plugins.NAME] table with path = "..."')
    for name, t in ptables.items():
        where = ["plugins", name]
        if not isinstance(t, dict):
            problems.add(where, f'must be a table: [plugins.{name}] with path = "..."')
            continue
        if not _NAME.fullmatch(name):
            problems.add(where, "is not a plugin name; use letters, digits, _ . - (at most 64)")
        own = _plugin_settings(t, where, base, problems)
        p = t.get("path")
        if p is None:
            problems.add(where, 'has no path; add path = "PLUGIN folder, NAME.json or zip"')
            continue
        if _string(p):
            problems.add(where + ["path"], _string(p) or "")
            continue
        full = _resolve_path(base, p)
        if not os.path.exists(full):
            problems.add(where + ["path"], f"{full} does not exist; give the plugin's folder, "
                                           f"NAME.json or zip")
        merged = {**defaults, **own}
        plugins.append(PluginConfig(name=name, path=full, supervisor=_group(merged, SUPERVISOR),
                                    host=_group(merged, HOST), launch=_group(merged, LAUNCH),
                                    ekl_section=_group(merged, SECTION)))
    seen_paths: Dict[str, str] = {}
    for pc in plugins:
        other = seen_paths.setdefault(os.path.realpath(pc.path), pc.name)
        if other != pc.name:
            problems.add(["plugins", pc.name, "path"], f"is also plugins.{other}.path; each plugin "
                                                       f"runs once per launcher")

    pipelines: List[PipelineConfig] = []
    names = {p.name for p in plugins} | set(ptables)
    for name, t in table("pipelines").items():
        where = ["pipelines", name]
        if not isinstance(t, dict):
            problems.add(where, "must be a table: [pipelines.NAME] with plugin, source and sink")
            continue
        ok = True
        for k in t:
            if k not in PIPELINE_KEYS:
                problems.unknown(where + [k], sorted(PIPELINE_KEYS))
                ok = False
        for k in ("plugin", "source", "sink"):
            if k not in t:
                problems.add(where, f"has no {k}; add {k} = \"...\"")
                ok = False
        for k in ("plugin", "source", "sink", "function", "field", "conf_key"):
            if k in t and _string(t[k]):
                problems.add(where + [k], _string(t[k]) or "")
                ok = False
        if "datasource" in t and not isinstance(t["datasource"], str):
            problems.add(where + ["datasource"], f"is {_show(t['datasource'])}; use a string")
            ok = False
        for k in ("config", "properties"):
            if k in t and not isinstance(t[k], dict):
                problems.add(where + [k], f"is {_show(t[k])}; use a table like {{ interval = 1.0 }}")
                ok = False
            elif k in t and not _json_safe(t[k]):
                problems.add(where + [k], "holds a TOML date/time or inf/nan, which cannot be sent "
                                          "to the plugin as JSON; write it as a string or number")
                ok = False
        if "field" in t and "function" not in t:
            problems.add(where + ["field"], "is set without function; add function = \"...\" or "
                                            "remove field")
            ok = False
        if isinstance(t.get("plugin"), str) and t["plugin"] not in names:
            problems.add(where + ["plugin"], f"is {t['plugin']!r}, not a plugin of this file; "
                                             f"declare [plugins.{t['plugin']}] or use one of "
                                             f"{', '.join(sorted(names)) or 'none'}")
            ok = False
        if ok:
            pipelines.append(PipelineConfig(
                name=name, plugin=t["plugin"], source=t["source"], sink=t["sink"],
                datasource=t.get("datasource", ""), conf_key=t.get("conf_key", "default"),
                config=_freeze(t.get("config", {})), function=t.get("function"),
                field=t.get("field"), properties=_freeze(t.get("properties", {}))))

    if problems.lines:
        raise ConfigError(problems.lines)
    return SuperviseConfig(path=path, plugins=tuple(plugins), pipelines=tuple(pipelines),
                           status_file=launcher.get("status_file"), log_dir=launcher.get("log_dir"),
                           log_format=launcher.get("log_format"))


def load(path: str) -> SuperviseConfig:
    """Read and check ``--config FILE``; :class:`ConfigError` lists every problem."""
    try:
        fd = os.open(path, os.O_RDONLY | getattr(os, "O_NONBLOCK", 0))
        with os.fdopen(fd, "rb") as f:
            if not os.path.isfile(path):
                raise ConfigError([f"--config {path}: not a regular file; give the supervise "
                                   f"TOML file"])
            data = f.read(MAX_CONFIG_BYTES + 1)
    except FileNotFoundError:
        raise ConfigError([f"--config {path}: no such file; give the supervise TOML file "
                           f"(see docs/deploy.md)"]) from None
    except IsADirectoryError:
        raise ConfigError([f"--config {path}: is a folder; give the supervise TOML file"]) from None
    except OSError as e:
        raise ConfigError([f"--config {path}: cannot read it: {e.strerror or e}"]) from None
    if len(data) > MAX_CONFIG_BYTES:
        raise ConfigError([f"--config {path}: larger than {MAX_CONFIG_BYTES // 1024} KiB; not a "
                           f"supervise config file"])
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError as e:
        line = data[: e.start].count(b"\n") + 1
        raise ConfigError([f"{path}:{line}: not UTF-8 text (byte {e.start}); save the file as "
                           f"UTF-8"]) from None
    return parse(text, path)


@record
class Reloader:
    """Holds the running config; :meth:`reload` returns the diff, or keeps the old one.

    For SIGHUP: a bad file raises :class:`ConfigError` and ``current`` stays as it was, so
    the running set is kept.
    """

    path: str
    current: Optional[SuperviseConfig] = None

    def load(self) -> SuperviseConfig:
        self.current = load(self.path)
        return self.current

    def reload(self) -> ConfigDiff:
        new = load(self.path)
        d = diff(self.current, new) if self.current is not None else ConfigDiff(
            added=tuple(p.name for p in new.plugins),
            pipelines_added=tuple(p.name for p in new.pipelines))
        self.current = new
        return d
