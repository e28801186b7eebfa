"""``ekl validate``: what eKuiper checks when it installs a plugin, and what it finds only later.

Install time (static): the zip's layout as eKuiper's portable plugin manager reads it
(``NAME.json`` at the root, entry names compared after ``filepath.Clean``, required files
``NAME.json``, the executable and ``sources/{s}.yaml``), the JSON's fields (through
:func:`ekl.launcher.plugin.load`, which already reports every field problem), names,
metadata files, YAML, Python syntax and ``install.sh``.

Run time: the plugin is started under ekl's host; every declared source (with its YAML's
``default`` section and a throwaway rule id), sink and function is started and stopped,
and each function answers ``IsAggregate``. Symbols the program registers but the JSON does
not list are found by asking the plugin to start a symbol it cannot have: ekl's SDK answers
``unknown source symbol 'x': plugin P registers sources: a, b``, and the list is read off
that line. The official SDK answers a traceback instead, so with it that check is skipped
with a note.

Every finding is one line that starts with the file it is about and names the field.
"""

from __future__ import annotations

import json
import logging
import posixpath
import re
import uuid
import zipfile
from pathlib import Path
from typing import Any, Dict, List, Optional, Tuple

from ekuiper.protocol import Meta
from ekuiper.record import field, record

from ..errors import EklError, HostTimeout, ManifestError
from ..plugin import Plugin, load, vendored
from ..plugin.zips import inspect_zip, read_zip_json_limited
from ..progress import Progress
from ..settings import HostSettings, LaunchOptions
from .pkgfiles import select

log = logging.getLogger("ekl")

#: eKuiper's plugin and symbol names (letters, digits, underscores)
SYMBOL_RE = re.compile(r"^[A-Za-z0-9_]+$")
KIND_OF = {"sources": "source", "sinks": "sink", "functions": "function"}
#: How long a started source is watched for an ``open`` that raises (ekl's SDK reports it).
SOURCE_OPEN_GRACE_S = 0.3
#: the one-line answer of ekl's SDK to a start for a symbol it does not register
UNKNOWN_RE = re.compile(r"unknown (source|sink|function) symbol '([^']*)': plugin (\S+) "
                        r"registers (sources|sinks|functions): (.*)$")
ERROR_LINE_RE = re.compile(r"\b(ERROR|CRITICAL)\b|^\s*[A-Za-z_.]*(Error|Exception): ")


@record
class Finding:
    level: str   # "error" (eKuiper refuses or the plugin fails) | "warning" | "note"
    text: str    # one line, starting with the file it is about

    @property
    def file(self) -> str:
        return self.text.split(": ", 1)[0]

    def to_json(self) -> Dict[str, str]:
        return {"level": self.level, "file": self.file, "message": self.text}


@record
class Report:
    target: str
    name: Optional[str] = None
    findings: List[Finding] = field(default_factory=list)
    checked: List[str] = field(default_factory=list)
    registered: Optional[Dict[str, List[str]]] = None
    runtime: str = "skipped"   # done | skipped | failed

    def error(self, text: str) -> None:
        self.findings.append(Finding("error", text))

    def warn(self, text: str) -> None:
        self.findings.append(Finding("warning", text))

    def note(self, text: str) -> None:
        self.findings.append(Finding("note", text))

    @property
    def errors(self) -> List[Finding]:
        return [f for f in self.findings if f.level == "error"]

    @property
    def ok(self) -> bool:
        return not self.errors

    def to_json(self) -> Dict[str, Any]:
        return {"target": self.target, "name": self.name, "ok": self.ok,
                "errors": len(self.errors), "runtime": self.runtime,
                "findings": [f.to_json() for f in self.findings], "checked": self.checked,
                "registered": self.registered}


# --- the zip, as eKuiper's manager reads it ----------------------------------------------


def _go_clean(name: str) -> str:
    """``filepath.ToSlash(filepath.Clean(name))`` as eKuiper applies it to zip entries."""
    cleaned = posixpath.normpath(name)
    return "" if cleaned == "." else cleaned


def check_zip(zpath: Path, report: Report) -> Optional[str]:
    """Check the zip's layout; return the plugin name (its root JSON's stem) or None."""
    zname = zpath.name
    try:
        zf = zipfile.ZipFile(zpath)
    except zipfile.BadZipFile:
        report.error(f"{zname}: not a zip file; build it with `ekl package`")
        return None
    except OSError as e:
        report.error(f"{zname}: cannot read it: {e.strerror}")
        return None
    with zf:
        for problem in inspect_zip(zpath):  # bombs, CRC errors, duplicates, symlinks...
            report.error(problem)
        infos = zf.infolist()
        names = [i.filename for i in infos]
        for info in infos:
            n = info.filename
            if "\\" in n:
                report.error(f"{zname}: entry {n!r} uses backslashes; eKuiper (Go) reads them as "
                             f"part of the file name; rebuild the zip with `ekl package`")
            if n.startswith("/") or ".." in n.split("/"):
                report.error(f"{zname}: entry {n!r} points outside the plugin folder; eKuiper "
                             f"refuses it; rebuild the zip with `ekl package`")
            parts = n.rstrip("/").split("/")
            if "__pycache__" in parts or n.endswith((".pyc", ".pyo")):
                report.warn(f"{zname}: entry {n!r} is a Python cache; `ekl package` leaves "
                            f"caches out")
            elif any(p in (".git", ".venv", "venv", "node_modules") for p in parts[:-1]) or \
                    n.endswith("pyvenv.cfg"):
                report.warn(f"{zname}: entry {n!r} belongs to version control or a virtual "
                            f"environment; `ekl package` leaves them out")
        roots = []
        root_data: Dict[str, Any] = {}
        for n in names:
            if "/" in n or not n.endswith(".json"):
                continue
            try:
                data = read_zip_json_limited(zf, n, zpath)
            except EklError:
                continue
            if isinstance(data, dict) and "executable" in data:
                roots.append(n)
                root_data = data
        if not roots:
            nested = [n for n in names if n.endswith(".json") and n.count("/") == 1
                      and n.split("/")[0] == n.split("/")[1][:-5]]
            if nested:
                folder = nested[0].split("/")[0]
                report.error(f"{zname}: {nested[0]} is inside the folder {folder}/; eKuiper looks "
                             f"for {folder}.json at the zip's root: zip the folder's contents, "
                             f"not the folder (`ekl package` does)")
            else:
                report.error(f"{zname}: no plugin JSON (NAME.json with language, executable and "
                             f"symbols) at the zip's root; eKuiper refuses the zip")
            return None
        if len(roots) > 1:
            report.error(f"{zname}: several plugin JSON files at the root ({', '.join(roots)}); "
                         f"keep only NAME.json")
            return None
        name = roots[0][:-5]
        if zpath.stem != name:
            report.note(f"{zname}: the plugin is {name!r}; eKuiper installs it under the name "
                        f"given in the REST call, which must be {name!r} (naming the file "
                        f"{name}.zip avoids mistakes)")
        data = root_data
        cleaned = {_go_clean(n): i for n, i in zip(names, infos)}
        exe = data.get("executable")
        if isinstance(exe, str) and exe and exe not in cleaned:
            report.error(f"{zname}: executable {exe!r} named in {roots[0]} is not in the zip "
                         f"(eKuiper: \"missing {exe}\"); add it at that path")
        elif isinstance(exe, str) and data.get("language") == "go":
            mode = (cleaned[exe].external_attr >> 16) & 0o777
            if not mode & 0o111:
                report.error(f"{zname}: executable {exe!r} has no execute permission in the "
                             f"zip; eKuiper cannot run it: chmod +x it and rebuild with "
                             f"`ekl package`")
        for s in data.get("sources") or []:
            if isinstance(s, str) and f"sources/{s}.yaml" not in cleaned:
                report.error(f"{zname}: sources/{s}.yaml is not in the zip (eKuiper: \"missing "
                             f"sources/{s}.yaml\"); add it")
        return name


# --- the folder ----------------------------------------------------------------------------


def check_folder(m: Plugin, report: Report) -> None:
    """Everything eKuiper trips over later that the manifest checks do not cover."""
    j = m.path.name
    if not SYMBOL_RE.match(m.name):
        report.error(f"{j}: the plugin name {m.name!r} (the file name) must use letters, "
                     f"digits and underscores only; rename the file and PluginConfig's name")
    for kind in KIND_OF:
        for s in getattr(m, kind):
            if not SYMBOL_RE.match(s):
                report.error(f"{j}: field '{kind}' has {s!r}; symbol names use letters, digits "
                             f"and underscores only")
            elif kind == "functions" and s[0].isdigit():
                report.error(f"{j}: field 'functions' has {s!r}; a function name starting with a "
                             f"digit cannot be called from SQL; rename it")
    exe = m.raw.get("executable")
    if isinstance(exe, str) and exe != _go_clean(exe):
        report.error(f"{j}: field 'executable' is {exe!r}; eKuiper compares it with the zip's "
                     f"cleaned entry names, so write it as {_go_clean(exe)!r}")

    for kind, single in KIND_OF.items():
        d = m.folder / kind
        if not d.is_dir():
            continue
        declared = set(getattr(m, kind))
        for f in sorted(d.rglob("*")):
            if f.is_dir() or "__pycache__" in f.parts:
                continue
            rel = f.relative_to(m.folder).as_posix()
            if f.parent != d or f.suffix not in (".json", ".yaml"):
                report.error(f"{rel}: eKuiper copies {kind}/ into its configuration folder, not "
                             f"the plugin folder, so the program cannot import or read this file "
                             f"there; move it out of {kind}/")
                continue
            if f.suffix == ".yaml" and kind != "sources":
                report.warn(f"{rel}: eKuiper reads configuration YAML for sources only; remove it")
                continue
            if f.stem not in declared:
                report.warn(f"{rel}: describes {single} {f.stem!r}, which {j} does not list in "
                            f"'{kind}'; rename the file or add the symbol")
            if f.suffix == ".json":
                _check_metadata(f, rel, kind, report)
        for s in sorted(declared):
            if not (d / f"{s}.json").is_file():
                report.note(f"{kind}/{s}.json: missing; eKuiper's UI shows no description or "
                            f"properties for {single} {s!r} without it")
    for s in m.sources:
        try:
            m.source_config(s)
        except ManifestError as e:
            for p in e.problems:
                report.error(p.replace(str(m.folder) + "/", ""))

    sel = select(m.folder, m.name)
    if m.language == "python":
        for rel in sel.files:
            if not rel.endswith(".py"):
                continue
            try:
                src = (m.folder / rel).read_bytes()
                compile(src, rel, "exec", dont_inherit=True)
            except SyntaxError as e:
                report.error(f"{rel}: line {e.lineno}: syntax error: {e.msg}; fix it (Python "
                             f"refuses to load the file)")
            except ValueError as e:
                report.error(f"{rel}: cannot be compiled: {e}")
    install = m.folder / "install.sh"
    if install.is_file():
        raw = install.read_bytes()
        if b"\r\n" in raw:
            report.error("install.sh: has Windows line endings (CRLF); /bin/sh fails on them "
                         "when eKuiper runs it; convert it to LF")
    elif (m.folder / "requirements.txt").is_file():
        report.note("requirements.txt: eKuiper never reads it, only install.sh; `ekl package` "
                    "adds ekl's install.sh, which installs it into the plugin's environment")
    elif (m.folder / "environment.yml").is_file():
        report.warn("environment.yml: eKuiper never reads it; only install.sh runs at install "
                    "time: build the environment with `ekl env create` on the target machine")
    check_vendored(m, report)


def check_vendored(m: Plugin, report: Report) -> None:
    """A vendored SDK (``ekuiper/`` beside the main program): intact, and not stale."""
    folder = vendored.find(m.executable.parent)
    if folder is None:
        return
    v = vendored.read(folder, m.folder)
    for p in v.problems:
        report.error(p)
    if v.problems or not v.version:
        return
    rel = (folder / vendored.MANIFEST).relative_to(m.folder).as_posix()
    import ekuiper

    ours = str(getattr(ekuiper, "__version__", ""))
    if not getattr(ekuiper, "EKL_SDK", False) or not ours:
        return
    fix = "rebuild the zip with `ekl package --vendor-sdk` to carry the installed one"
    if vendored.version_key(v.version) < vendored.version_key(ours):
        report.warn(f"{rel}: the vendored SDK is {v.version}, older than the installed ekl-sdk "
                    f"{ours} (a stock eKuiper runs the older one; ekl-python uses {ours}); {fix}")
    elif vendored.version_key(v.version) == vendored.version_key(ours):
        here = vendored.make_manifest(Path(ekuiper.__file__).parent, ours)
        if here["sha256"] != v.sha256:
            report.note(f"{rel}: the vendored SDK {v.version} differs from the installed "
                        f"ekl-sdk {ours} of the same version (a development build?); {fix}")
    report.checked.append(f"vendored SDK {v.version} intact")


def _check_metadata(f: Path, rel: str, kind: str, report: Report) -> None:
    try:
        data = json.loads(f.read_text(encoding="utf-8"))
    except UnicodeDecodeError:
        report.error(f"{rel}: not UTF-8 text")
        return
    except ValueError as e:
        report.error(f"{rel}: not valid JSON ({e}); eKuiper cannot read the symbol's metadata")
        return
    if not isinstance(data, dict):
        report.error(f"{rel}: must hold a JSON object with 'about' (eKuiper's metadata format)")
        return
    if not isinstance(data.get("about"), dict):
        report.warn(f"{rel}: field 'about' is missing; eKuiper's UI shows no description")
    if kind == "functions":
        funcs = data.get("functions")
        if not isinstance(funcs, list):
            report.error(f"{rel}: field 'functions' must be a list of {{\"name\": ...}} objects")
        elif f.stem not in [x.get("name") for x in funcs if isinstance(x, dict)]:
            report.warn(f"{rel}: field 'functions' has no entry with \"name\": {f.stem!r}")
    elif "properties" in data and not isinstance(data["properties"], (dict, list)):
        report.error(f"{rel}: field 'properties' must be a list of properties (for sources: "
                     f"a map of conf keys to such lists)")


# --- run time ------------------------------------------------------------------------------


class _Capture(logging.Handler):
    """Collects the plugin's output lines while the run-time checks run."""

    def __init__(self) -> None:
        super().__init__(logging.DEBUG)
        self.lines: List[str] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.lines.append(record.getMessage())


class _Wedged(Exception):
    """A command got no answer: the plugin's control thread is stuck, so stop asking."""


def _failure_text(e: EklError) -> str:
    text = str(e)
    return text.split(" failed: ", 1)[1] if " failed: " in text else text


def check_runtime(m: Plugin, report: Report, opts: Optional[LaunchOptions] = None,
                  settings: Optional[HostSettings] = None,
                  progress: Optional[Progress] = None, echo: bool = False) -> None:
    """Start the plugin and every symbol; find registered symbols missing from the JSON.

    The plugin's output is captured to report the errors it logs; ``echo`` also passes it
    on to ekl's log (``-v``), otherwise it stays out of the report's way.
    """
    from ..start import prepare
    from ..start.resolve import resolve

    progress = progress or Progress(quiet=True)
    exe = m.executable.relative_to(m.folder).as_posix()
    j = m.path.name
    with progress.step("choosing the interpreter and environment"):
        spec = resolve(m, opts)
    settings = settings or HostSettings()
    inst = prepare(m, opts, settings, spec=spec)
    capture = _Capture()
    out_log = logging.getLogger(f"ekl.plugin.{m.name}")
    saved = out_log.level, out_log.propagate
    out_log.setLevel(logging.INFO)
    out_log.propagate = echo
    out_log.addHandler(capture)
    rule = f"eklvalidate{uuid.uuid4().hex[:6]}"
    try:
        try:
            with progress.step(f"starting plugin {m.name}"):
                inst.start_process()
        except EklError as e:
            report.runtime = "failed"
            report.error(f"{exe}: the plugin does not start: {e}")
            return
        report.checked.append(f"plugin {m.name} started ({spec.origin})")
        with progress.step(f"starting and stopping {len(m.sources) + len(m.sinks)} source(s)/"
                           f"sink(s) and {len(m.functions)} function(s)"):
            try:
                _start_each(m, inst, report, rule, exe, j)
                if spec.ekl_sdk:
                    _find_undeclared(m, inst, report, rule, exe, j)
                else:
                    sdk = "the official SDK" if spec.sdk == "official" else "its SDK"
                    report.note(f"{exe}: not checked for symbols missing from {j}: the plugin "
                                f"runs on {sdk}, and only ekl's SDK names its registered symbols")
            except _Wedged as w:
                report.error(f"{exe}: {w} got no answer within {settings.command_timeout_s:.0f} s; "
                             f"the plugin answers commands one at a time, so a configure() or "
                             f"constructor that blocks hangs it for every rule: return from it "
                             f"promptly and do slow work in open(). The remaining checks were "
                             f"skipped")
        if not inst.alive():
            proc = inst.process
            report.error(f"{exe}: the plugin "
                         f"{proc.exit_description() if proc else 'stopped'} during the checks: "
                         f"{proc.tail() if proc else ''}")
        report.runtime = "done"
    finally:
        inst.close()
        out_log.removeHandler(capture)
        out_log.setLevel(saved[0])
        out_log.propagate = saved[1]
    logged = [ln for ln in capture.lines
              if ERROR_LINE_RE.search(ln) and "ekl_probe_" not in ln]  # our probes' echoes
    for ln in list(dict.fromkeys(logged))[:5]:
        report.warn(f"{exe}: the plugin logged an error during the checks: "
                    f"{ln.replace(f'[{m.name}] ', '', 1).strip()}")


def _start_each(m: Plugin, inst: Any, report: Report, rule: str, exe: str, j: str) -> None:
    for i, s in enumerate(m.sources):
        meta = Meta(rule, f"src{i}", 0)
        try:
            config = m.source_config(s)
        except ManifestError:
            continue  # already reported by the static checks
        try:
            inst.start_source(s, meta, "", config)
            failed = inst.source_failure(s, within_s=SOURCE_OPEN_GRACE_S)
            inst.stop_source(s, meta)
            if failed:
                report.error(f"{exe}: source {s} stopped right after its start: {failed}; "
                             f"an eKuiper rule on it would get no data. Fix its open()")
            else:
                report.checked.append(f"source {s} started with sources/{s}.yaml default "
                                      f"and stopped")
        except HostTimeout:
            raise _Wedged(f"the start of source {s!r}") from None
        except EklError as e:
            _start_failed(report, "sources", s, e, exe, j)
    for i, s in enumerate(m.sinks):
        meta = Meta(rule, f"sink{i}", 0)
        try:
            inst.start_sink(s, meta, {})
            inst.stop_sink(s, meta)
            report.checked.append(f"sink {s} started and stopped")
        except HostTimeout:
            raise _Wedged(f"the start of sink {s!r}") from None
        except EklError as e:
            _start_failed(report, "sinks", s, e, exe, j)
    for s in m.functions:
        try:
            fn = inst.start_function(s)
            agg = fn.is_aggregate()
            report.checked.append(f"function {s} started, IsAggregate={str(agg).lower()}")
        except HostTimeout:
            raise _Wedged(f"the start of function {s!r}") from None
        except EklError as e:
            _start_failed(report, "functions", s, e, exe, j)


def _start_failed(report: Report, kind: str, s: str, e: EklError, exe: str, j: str) -> None:
    text = _failure_text(e)
    u = UNKNOWN_RE.search(text)
    if u:
        report.error(f"{j}: field '{kind}' lists {s!r}, which {exe} does not register (it "
                     f"registers {kind}: {u.group(5)}); fix the name in one of them")
        if report.registered is None:
            report.registered = {}
        report.registered[kind] = _names(u.group(5))
    else:
        report.error(f"{exe}: {KIND_OF[kind]} {s!r} does not start: {text}")


def _names(listed: str) -> List[str]:
    listed = listed.strip()
    return [] if listed == "none" else [x.strip() for x in listed.split(",") if x.strip()]


def _find_undeclared(m: Plugin, inst: Any, report: Report, rule: str, exe: str,
                     j: str) -> None:
    registered: Dict[str, List[str]] = {}
    probe = f"ekl_probe_{uuid.uuid4().hex[:8]}"
    for kind in KIND_OF:
        try:
            if kind == "sources":
                meta = Meta(rule, "probe", 0)
                inst.start_source(probe, meta, "", {})
                inst.stop_source(probe, meta)
            elif kind == "sinks":
                meta = Meta(rule, "probe", 1)
                inst.start_sink(probe, meta, {})
                inst.stop_sink(probe, meta)
            else:
                inst.start_function(probe)
        except HostTimeout:
            raise _Wedged(f"the start of a probe {KIND_OF[kind]}") from None
        except EklError as e:
            u = UNKNOWN_RE.search(_failure_text(e))
            if u and u.group(4) == kind:
                registered[kind] = _names(u.group(5))
                continue
            report.note(f"{exe}: could not list the registered {kind}: {_failure_text(e)}")
            continue
        report.note(f"{exe}: the plugin started a {KIND_OF[kind]} for any name; its registered "
                    f"{kind} cannot be listed")
    report.registered = registered
    for kind, names in registered.items():
        missing = [s for s in names if s not in getattr(m, kind)]
        for s in missing:
            report.error(f"{j}: field '{kind}' does not list {s!r}, which {exe} registers; add "
                         f"it (eKuiper only starts symbols its JSON lists)")
    if registered:
        report.checked.append("registered symbols: " + "; ".join(
            f"{k}: {', '.join(v) or 'none'}" for k, v in registered.items()))


# --- the whole check -----------------------------------------------------------------------


def validate(target: str, opts: Optional[LaunchOptions] = None,
             settings: Optional[HostSettings] = None, run: bool = True,
             progress: Optional[Progress] = None, echo: bool = False) -> Report:
    """Check a plugin folder, its JSON or a zip; never raises for problems of the plugin."""
    path = Path(target)
    if not path.exists():
        raise EklError(f"{target}: no such plugin folder, JSON file or zip")
    report = Report(target=str(target))
    if path.is_file() and path.suffix == ".zip":
        name = check_zip(path, report)
        if name is None:
            return report
        report.checked.append("zip layout")
    try:
        m = load(target)
    except ManifestError as e:
        for p in e.problems:
            report.error(p)
        return report
    report.name = m.name
    report.checked.append(f"{m.path.name} fields")
    check_folder(m, report)
    if not run:
        report.note(f"{m.path.name}: run-time checks skipped (--no-run)")
        return report
    if report.errors:
        report.note(f"{m.path.name}: run-time checks skipped until the errors above are fixed")
        return report
    check_runtime(m, report, opts, settings, progress, echo)
    return report


def format_report(report: Report) -> Tuple[List[str], str]:
    """The finding lines and the summary line, as ``ekl validate`` prints them."""
    lines = [f"{f.level}: {f.text}" for f in report.findings]
    n = len(report.errors)
    what = report.name or report.target
    if n:
        summary = f"{what}: {n} problem{'s' if n != 1 else ''} found"
    else:
        summary = f"{what}: ok ({len(report.checked)} check(s) passed" + \
                  ("" if report.runtime == "done" else ", run-time checks skipped") + ")"
    return lines, summary
