"""Is the environment the one that was tested? Lock files against what is installed.

Two lock formats are read: conda-lock's unified ``conda-lock.yml`` (version 1) and conda's
``@EXPLICIT`` lists (``conda list --explicit --md5``, ``conda-lock --kind explicit``). The
lock is compared with the ``conda-meta/*.json`` records the installer wrote, and its pip
entries with the ``*.dist-info`` folders of the environment.

Plugins start often, so :func:`check_lock_for_launch` caches its verdict keyed by the lock
file (path, mtime, size) and every ``conda-meta/*.json`` record (name, mtime, size: a record
edited in place changes its mtime even when the folder's does not), and imports nothing
heavy: PyYAML is loaded only when a ``conda-lock.yml`` must actually be parsed.

Bad input (a lock of the wrong shape, a binary file, a line that is not a package URL, a
truncated record) is one :class:`EnvError` naming the file and line, never a traceback.
"""

from __future__ import annotations

import hashlib
import json
import os
import platform
import re
from pathlib import Path

from ekuiper.record import asdict, field, record

from .model import EnvError, Environment, LockDrift

TYPE_CHECKING = False  # typing is not loaded at run time on the start path (docs/architecture.md)
if TYPE_CHECKING:
    from typing import Any, Dict, List, Optional, Sequence, Tuple, Union

POLICIES = ("strict", "warn", "off")
#: Manifest key naming the lock file (relative to the plugin folder):
#: ``"ekl": {"lock": "locks/conda-lock.yml"}``. eKuiper ignores keys it does not know.
MANIFEST_SECTION = "ekl"
MANIFEST_LOCK_KEY = "lock"
_CACHE_VERSION = "2"
#: Bytes of a lock file read at most: a lock is text of a few hundred KB at most; anything
#: larger is refused rather than parsed (an outsider controls the file).
MAX_LOCK_BYTES = 64 << 20


def current_subdir() -> str:
    """conda's platform name for this machine (``CONDA_SUBDIR`` overrides, as in conda)."""
    if os.environ.get("CONDA_SUBDIR"):
        return os.environ["CONDA_SUBDIR"]
    system = platform.system().lower()
    machine = platform.machine().lower()
    osname = {"linux": "linux", "darwin": "osx", "windows": "win"}.get(system, system)
    arch = {"x86_64": "64", "amd64": "64", "aarch64": "aarch64", "arm64": "arm64",
            "ppc64le": "ppc64le", "s390x": "s390x", "armv7l": "armv7l", "i686": "32",
            "i386": "32"}.get(machine, machine)
    if osname == "osx" and arch == "aarch64":
        arch = "arm64"
    if osname == "linux" and arch == "arm64":
        arch = "aarch64"
    return f"{osname}-{arch}"


def lock_candidates(plugin_dir: Path) -> List[Path]:
    sub = current_subdir()
    return [plugin_dir / "conda-lock.yml", plugin_dir / "conda-lock.yaml",
            plugin_dir / f"conda-{sub}.lock"]


def find_lock_file(plugin_dir: Path, lock: Optional[str] = None) -> Optional[Path]:
    """The plugin's lock: the one its ``ekl.lock`` field names, else a conventional name
    beside its JSON (``conda-lock.yml``, ``conda-lock.yaml``, ``conda-<subdir>.lock``)."""
    named = lock or None
    if named:
        p = Path(os.path.expanduser(str(named)))
        if not p.is_absolute():
            p = plugin_dir / p
        if not p.is_file():
            raise EnvError(f"lock file {p} named by \"{MANIFEST_SECTION}\": "
                           f"{{\"{MANIFEST_LOCK_KEY}\": ...}} in the plugin's JSON does not "
                           f"exist; fix the path or remove the key")
        return p
    for p in lock_candidates(plugin_dir):
        if p.is_file():
            return p
    return None


@record
class LockedPackage:
    manager: str  # "conda" | "pip"
    name: str
    version: str
    build: Optional[str] = None
    url: Optional[str] = None
    md5: Optional[str] = None
    sha256: Optional[str] = None
    depends: List[str] = field(default_factory=list)

    @property
    def spec(self) -> str:
        return f"{self.name} {self.version}" + (f" {self.build}" if self.build else "")


@record
class Lock:
    path: Path
    format: str  # "conda-lock" | "explicit"
    platforms: List[str]
    subdir: str
    packages: List[LockedPackage]
    channels: List[str] = field(default_factory=list)

    @property
    def conda(self) -> List[LockedPackage]:
        return [p for p in self.packages if p.manager == "conda"]

    @property
    def pip(self) -> List[LockedPackage]:
        return [p for p in self.packages if p.manager == "pip"]


_EXT = (".conda", ".tar.bz2")


def split_filename(fn: str) -> Tuple[str, str, str]:
    """``numpy-1.26.0-py311h_0.conda`` -> (name, version, build)."""
    for ext in _EXT:
        if fn.endswith(ext):
            fn = fn[: -len(ext)]
            break
    parts = fn.rsplit("-", 2)
    if len(parts) != 3:
        raise ValueError(f"not a conda package file name: {fn}")
    return parts[0], parts[1], parts[2]


def read_lock(path: Path, subdir: Optional[str] = None) -> Lock:
    """Parse a lock file for one platform (default: this machine's)."""
    sub = subdir or current_subdir()
    try:
        with open(path, "rb") as fb:
            raw = fb.read(MAX_LOCK_BYTES + 1)
    except OSError as e:
        raise EnvError(f"cannot read lock file {path}: {e.strerror}") from None
    if len(raw) > MAX_LOCK_BYTES:
        raise EnvError(f"lock file {path} is larger than {MAX_LOCK_BYTES >> 20} MB, which no "
                       f"lock is; point \"ekl\": {{\"lock\": ...}} at the right file")
    text = _decode(path, raw)
    head = text[:4096]
    yaml_like = head.lstrip().startswith(("version:", "metadata:", "package:"))
    if "@EXPLICIT" in head or (path.suffix in (".txt", ".lock") and not yaml_like):
        return _read_explicit(path, sub, text)
    return _read_conda_lock(path, sub, text)


def _decode(path: Path, raw: bytes) -> str:
    """UTF-8 text, or one line naming the file and the line of the first bad byte."""
    if b"\0" in raw:
        line = raw[:raw.index(b"\0")].count(b"\n") + 1
        raise EnvError(f"{path}:{line}: lock file is binary (a NUL byte), not a conda-lock.yml "
                       f"or @EXPLICIT list; regenerate it with `conda-lock lock`")
    try:
        return raw.decode("utf-8")
    except UnicodeDecodeError as e:
        line = raw[:e.start].count(b"\n") + 1
        raise EnvError(f"{path}:{line}: lock file is not UTF-8 text (byte {raw[e.start]:#04x}); "
                       f"regenerate it with `conda-lock lock`") from None


#: conda's own rule for an explicit line (conda/misc.py url_pat): a file name ending in
#: .conda or .tar.bz2, optionally after a URL or path, optionally with #md5 or #sha256.
_EXPLICIT_URL = re.compile(r"^(?:[A-Za-z][A-Za-z0-9+.-]*://\S*/|/\S*/)?"
                           r"[^/\\#\s]+(?:\.tar\.bz2|\.conda)$")


def _read_explicit(path: Path, sub: str, text: str) -> Lock:
    plat: Optional[str] = None
    seen_marker = False
    pkgs: List[LockedPackage] = []
    for n, raw in enumerate(text.splitlines(), 1):
        line = raw.strip()
        if not line:
            continue
        if line.startswith("#"):
            m = re.match(r"#\s*platform:\s*(\S+)", line)
            if m:
                plat = m.group(1)
            continue
        if line == "@EXPLICIT":
            seen_marker = True
            continue
        if not seen_marker:
            raise EnvError(f"{path}:{n}: an explicit lock must have the line @EXPLICIT "
                           f"before its URLs; regenerate it with "
                           f"`conda list --explicit --md5 > {path.name}`")
        url, _, frag = line.partition("#")
        url = url.strip()
        fn = url.rsplit("/", 1)[-1]
        try:
            if not _EXPLICIT_URL.match(url):
                raise ValueError(url)
            name, version, build = split_filename(fn)
        except ValueError:
            shown = line if len(line) <= 80 else line[:77] + "..."
            raise EnvError(f"{path}:{n}: {shown!r} is not a conda package URL "
                           f"(.../NAME-VERSION-BUILD.conda or .tar.bz2, optionally "
                           f"#md5 or #sha256:HASH); regenerate it with "
                           f"`conda list --explicit --md5`") from None
        md5 = sha256 = None
        frag = frag.strip()
        if frag.startswith("sha256:"):
            sha256 = frag[7:].lower()
        elif re.fullmatch(r"[0-9a-fA-F]{64}", frag):
            sha256 = frag.lower()
        elif re.fullmatch(r"[0-9a-fA-F]{32}", frag):
            md5 = frag.lower()
        pkgs.append(LockedPackage("conda", name, version, build, url, md5, sha256))
    if not seen_marker:
        raise EnvError(f"{path} has no @EXPLICIT line, so it is not an explicit lock; "
                       f"regenerate it with `conda list --explicit --md5`")
    platforms = [plat] if plat else [sub]
    return Lock(path, "explicit", platforms, sub, pkgs if sub in platforms else [])


def _yaml_load(path: Path, text: str) -> Any:
    import yaml

    loader = getattr(yaml, "CSafeLoader", yaml.SafeLoader)
    try:
        return yaml.load(text, Loader=loader)  # noqa: S506 - a safe loader
    except yaml.YAMLError as e:
        mark = getattr(e, "problem_mark", None)
        where = f"{path}:{mark.line + 1}" if mark is not None else str(path)
        problem = getattr(e, "problem", None) or (str(e).splitlines() or [type(e).__name__])[0]
        raise EnvError(f"{where}: lock file is not valid YAML ({problem}); regenerate it with "
                       f"`conda-lock lock`") from None
    except RecursionError:
        raise EnvError(f"{path}: lock file nests too deeply to be a conda-lock.yml; "
                       f"regenerate it with `conda-lock lock`") from None


def _yaml_line(text: str, keys: Sequence[Union[str, int]]) -> Optional[int]:
    """Line (1-based) of the node at ``keys`` in the YAML text; only used to word an error."""
    import yaml

    try:
        node = yaml.compose(text, Loader=yaml.SafeLoader)
        best = node.start_mark.line + 1 if node is not None else None
        for k in keys:
            if isinstance(node, yaml.MappingNode):
                node = next((v for kn, v in node.value if kn.value == k), None)
            elif isinstance(node, yaml.SequenceNode) and isinstance(k, int) \
                    and k < len(node.value):
                node = node.value[k]
            else:
                node = None
            if node is None:
                break
            best = node.start_mark.line + 1
        return best
    except (yaml.YAMLError, RecursionError):
        return None


def _brief(v: Any) -> str:
    """A short repr of an outsider's value: bounded in depth and width, so an aliased YAML
    structure (a "billion laughs") cannot make the error message itself explode."""
    import reprlib

    r = reprlib.Repr()
    r.maxlevel, r.maxlist, r.maxdict, r.maxstring, r.maxother = 2, 4, 4, 40, 40
    return r.repr(v)


class _Shape:
    """Raises the one-line error for a conda-lock.yml whose YAML is fine but shape is not."""

    def __init__(self, path: Path, text: str) -> None:
        self.path, self.text = path, text

    def bad(self, keys: Sequence[Union[str, int]], what: str) -> EnvError:
        line = _yaml_line(self.text, keys)
        field_ = ".".join(str(k) if isinstance(k, str) else f"[{k}]" for k in keys)
        field_ = field_.replace(".[", "[")
        where = f"{self.path}:{line}" if line else str(self.path)
        return EnvError(f"{where}: {field_} {what}; this is not a conda-lock.yml of format "
                        f"version 1, regenerate it with `conda-lock lock`")


def _read_conda_lock(path: Path, sub: str, text: str) -> Lock:
    data = _yaml_load(path, text)
    shape = _Shape(path, text)
    if not isinstance(data, dict) or "package" not in data:
        raise EnvError(f"{path} is neither a conda-lock.yml (no 'package' list) nor an "
                       f"@EXPLICIT list; regenerate it with `conda-lock lock`")
    version = data.get("version")
    if version != 1:
        raise EnvError(f"{path} has lock format version {version!r}; ekl reads conda-lock "
                       f"version 1 (conda-lock >= 1.0 writes it)")
    meta = data.get("metadata")
    if meta is None:
        meta = {}
    if not isinstance(meta, dict):
        raise shape.bad(["metadata"], f"is {type(meta).__name__} {_brief(meta)}, not a mapping")
    raw_platforms = meta.get("platforms") or []
    if not isinstance(raw_platforms, list):
        raise shape.bad(["metadata", "platforms"], "is not a list")
    platforms = [str(p) for p in raw_platforms]
    raw_channels = meta.get("channels") or []
    if not isinstance(raw_channels, list):
        raise shape.bad(["metadata", "channels"], "is not a list")
    channels = [str(c.get("url", "")) if isinstance(c, dict) else str(c) for c in raw_channels]
    entries = data.get("package")
    if entries is None:
        entries = []
    if not isinstance(entries, list):
        raise shape.bad(["package"], f"is {type(entries).__name__} {_brief(entries)}, not a list")
    pkgs: List[LockedPackage] = []
    for i, p in enumerate(entries):
        if not isinstance(p, dict):
            raise shape.bad(["package", i], f"is {type(p).__name__} {_brief(p)}, not a mapping")
        for key in ("name", "version", "platform"):
            if not isinstance(p.get(key), (str, int, float)) or p.get(key) in ("", None):
                raise shape.bad(["package", i], f"has no {key!r}")
        h = p.get("hash") or {}
        if not isinstance(h, dict):
            raise shape.bad(["package", i, "hash"], "is not a mapping of md5/sha256")
        deps = p.get("dependencies") or {}
        if not isinstance(deps, dict):
            raise shape.bad(["package", i, "dependencies"], "is not a mapping")
        if str(p.get("platform")) != sub or p.get("optional"):
            continue
        manager = str(p.get("manager", "conda"))
        name = str(p.get("name", ""))
        url = p.get("url")
        build = None
        if manager == "conda":
            try:
                fn = str(url).rsplit("/", 1)[-1]
                if not fn.endswith(_EXT):
                    raise ValueError(fn)
                _, _, build = split_filename(fn)
            except ValueError:
                raise shape.bad(["package", i, "url"], f"({name}) is {_brief(url)}, not a "
                                f"conda package file") from None
        pkgs.append(LockedPackage(
            manager, name, str(p.get("version", "")), build, str(url) if url else None,
            str(h["md5"]).lower() if h.get("md5") else None,
            str(h["sha256"]).lower() if h.get("sha256") else None,
            [f"{k} {v}".strip() for k, v in deps.items()] if isinstance(deps, dict) else []))
    if not platforms:
        platforms = sorted({str(p.get("platform")) for p in entries})
    return Lock(path, "conda-lock", platforms, sub, pkgs, channels)


# -- what is installed --------------------------------------------------------------------

@record
class Installed:
    name: str
    version: str
    build: Optional[str]
    md5: Optional[str] = None
    sha256: Optional[str] = None
    url: Optional[str] = None
    source: str = ""


#: A conda-meta record larger than this is refused as corrupt (real ones are < 1 MB, even
#: with a long files list; an outsider could plant a huge one).
MAX_RECORD_BYTES = 32 << 20


def read_records(prefix: Path) -> Tuple[Dict[str, Installed], List[str]]:
    """The ``conda-meta/*.json`` records, and one problem line per corrupt record.

    conda refuses such an environment (``CorruptedEnvironmentError``: a record that is not
    JSON, usually from a killed transaction), so a lock check must not call it a match.
    """
    out: Dict[str, Installed] = {}
    problems: List[str] = []
    meta = prefix / "conda-meta"
    try:
        names = sorted(n for n in os.listdir(meta) if n.endswith(".json"))
    except OSError:
        return out, problems
    fix = "the environment is corrupted (an interrupted install?); recreate it"
    for n in names:
        p = meta / n
        try:
            with open(p, "rb") as f:
                raw = f.read(MAX_RECORD_BYTES + 1)
            if len(raw) > MAX_RECORD_BYTES:
                raise ValueError(f"larger than {MAX_RECORD_BYTES >> 20} MB")
            rec = json.loads(raw.decode("utf-8"))
        except json.JSONDecodeError as e:
            problems.append(f"{p}:{e.lineno}: corrupt record ({e.msg}); {fix}")
            continue
        except UnicodeDecodeError:
            problems.append(f"{p}:1: corrupt record (not UTF-8); {fix}")
            continue
        except ValueError as e:
            problems.append(f"{p}:1: corrupt record ({e}); {fix}")
            continue
        except OSError as e:
            problems.append(f"{p}: unreadable record ({e.strerror}); fix its permissions")
            continue
        if not isinstance(rec, dict) or not isinstance(rec.get("name"), str) \
                or not rec.get("name") or "version" not in rec:
            problems.append(f"{p}:1: corrupt record (no package name/version); {fix}")
            continue
        out[rec["name"]] = Installed(
            str(rec["name"]), str(rec.get("version", "")),
            str(rec["build"]) if rec.get("build") is not None else None,
            str(rec["md5"]) if rec.get("md5") else None,
            str(rec["sha256"]) if rec.get("sha256") else None,
            str(rec["url"]) if rec.get("url") else None, str(p))
    return out, problems


def installed_conda(prefix: Path) -> Dict[str, Installed]:
    """The readable records only (see :func:`read_records` for the corrupt ones)."""
    return read_records(prefix)[0]


def _norm_pip(name: str) -> str:
    return re.sub(r"[-_.]+", "-", name).lower()


def site_packages(prefix: Path) -> List[Path]:
    return sorted(prefix.glob("lib/python*/site-packages"))


def installed_pip(prefix: Path) -> Dict[str, Tuple[Installed, str]]:
    """Distributions in the prefix's site-packages, with who installed them."""
    out: Dict[str, Tuple[Installed, str]] = {}
    for sp in site_packages(prefix):
        try:
            entries = os.listdir(sp)
        except OSError:
            continue
        for e in entries:
            if not e.endswith((".dist-info", ".egg-info")):
                continue
            stem = e.rsplit(".", 1)[0]
            name, _, version = stem.partition("-")
            version = version.split("-", 1)[0]
            installer = ""
            try:
                installer = (sp / e / "INSTALLER").read_text(encoding="utf-8").strip()
            except OSError:
                pass
            out[_norm_pip(name)] = (Installed(name, version, None, source=str(sp / e)),
                                    installer)
    return out


# -- comparison -----------------------------------------------------------------------------

@record
class Drift:
    lock: str
    prefix: str
    subdir: str
    missing: List[str] = field(default_factory=list)
    extra: List[str] = field(default_factory=list)
    changed: List[str] = field(default_factory=list)
    problems: List[str] = field(default_factory=list)

    @property
    def clean(self) -> bool:
        return not (self.missing or self.extra or self.changed or self.problems)

    def counts(self) -> str:
        parts = []
        if self.problems:
            parts.append(self.problems[0])
        if self.missing:
            parts.append(f"{len(self.missing)} missing")
        if self.extra:
            parts.append(f"{len(self.extra)} extra")
        if self.changed:
            parts.append(f"{len(self.changed)} changed ({self.changed[0]})")
        return ", ".join(parts)

    def summary(self, plugin_ref: str = "PLUGIN") -> str:
        return (f"env {self.prefix} drifted from {self.lock}: {self.counts()}; "
                f"run `ekl env check {plugin_ref}` for the list")

    def lines(self) -> List[str]:
        out = [f"problem: {p}" for p in self.problems]
        out += [f"missing: {m}" for m in self.missing]
        out += [f"extra:   {m}" for m in self.extra]
        out += [f"changed: {m}" for m in self.changed]
        return out

    def to_dict(self) -> Dict[str, Any]:
        d = asdict(self)
        d["clean"] = self.clean
        return d


def compare(lock: Lock, prefix: Path) -> Drift:
    """Every difference between the lock (for this platform) and the prefix."""
    d = Drift(str(lock.path), str(prefix), lock.subdir)
    if lock.subdir not in lock.platforms:
        d.problems.append(f"the lock covers {', '.join(lock.platforms) or 'no platform'}, "
                          f"not {lock.subdir}")
        return d
    inst, corrupt = read_records(prefix)
    d.problems.extend(corrupt)
    locked = {p.name: p for p in lock.conda}
    for name, p in sorted(locked.items()):
        i = inst.get(name)
        if i is None:
            d.missing.append(p.spec)
            continue
        if i.version != p.version:
            d.changed.append(f"{name} {p.version} -> {i.version}")
        elif p.build and i.build != p.build:
            d.changed.append(f"{name} {p.version} build {p.build} -> {i.build}")
        elif p.sha256 and i.sha256 and p.sha256 != i.sha256.lower():
            d.changed.append(f"{name} {p.version} sha256 {p.sha256[:12]}… -> "
                             f"{i.sha256.lower()[:12]}…")
        elif p.md5 and i.md5 and p.md5 != i.md5.lower():
            d.changed.append(f"{name} {p.version} md5 {p.md5[:12]}… -> {i.md5.lower()[:12]}…")
    for name, i in sorted(inst.items()):
        if name not in locked:
            d.extra.append(f"{name} {i.version} {i.build or ''}".rstrip())
    if lock.pip:
        pip = installed_pip(prefix)
        lp = {_norm_pip(p.name): p for p in lock.pip}
        for key, p in sorted(lp.items()):
            got = pip.get(key)
            if got is None:
                d.missing.append(f"{p.name} {p.version} (pip)")
            elif got[0].version != p.version:
                d.changed.append(f"{p.name} {p.version} -> {got[0].version} (pip)")
        conda_names = {_norm_pip(n) for n in inst}
        for key, (i, installer) in sorted(pip.items()):
            if key not in lp and key not in conda_names and installer == "pip":
                d.extra.append(f"{i.name} {i.version} (pip)")
    return d


def check_environment(plugin_dir: Path, lock: Optional[str], env: Environment) -> Optional[Drift]:
    """The full comparison (for ``ekl env check``), or None when the plugin has no lock."""
    lock_path = find_lock_file(plugin_dir, lock)
    if lock_path is None:
        return None
    return compare(read_lock(lock_path), env.prefix)


# -- the launch path -----------------------------------------------------------------------

def _mtime(p: Path) -> str:
    try:
        return str(p.stat().st_mtime_ns)
    except OSError:
        return "-"


def _records_key(prefix: Path) -> List[str]:
    """Name, mtime and size of every record: an edit in place changes the file's mtime (and
    usually size) but not the folder's, which only changes when names come and go. One
    ``stat`` per record (about 1.5 ms for 300 records; bench/bench_envs.py measures it)."""
    meta = os.path.join(prefix, "conda-meta")
    recs: List[Tuple[str, int, int]] = []
    try:
        with os.scandir(meta) as it:
            for e in it:
                if e.name.endswith(".json"):
                    try:
                        st = e.stat()
                        recs.append((e.name, st.st_mtime_ns, st.st_size))
                    except OSError:
                        recs.append((e.name, -1, -1))
    except OSError:
        return ["no-conda-meta"]
    recs.sort()
    return [_mtime(Path(meta)), repr(recs)]


def _cache_key(lock_path: Path, prefix: Path) -> str:
    st = lock_path.stat()
    parts = [_CACHE_VERSION, str(lock_path.resolve()), str(st.st_mtime_ns), str(st.st_size),
             str(prefix), current_subdir(), *_records_key(prefix)]
    parts += [f"{sp}:{_mtime(sp)}" for sp in site_packages(prefix)]
    return hashlib.sha256("|".join(parts).encode()).hexdigest()[:32]


def check_lock_for_launch(plugin_dir: Path, lock: Optional[str], env: Environment,
                          policy: str) -> Optional[str]:
    """Lock policy at plugin start: None (no lock, clean, or off), a warning text, or raise.

    ``strict`` raises :class:`LockDrift` (exit 1) on drift and :class:`EnvError` (exit 2) on
    a lock it cannot read; ``warn`` returns the one-line summary, or the reason the lock
    could not be checked, for the launcher to log; ``off`` reads nothing.
    """
    if policy not in POLICIES:
        raise EnvError(f"lock policy {policy!r} is not one of {', '.join(POLICIES)}")
    if policy == "off":
        return None
    # a lock the JSON names but that is not there is the JSON's error: always raised
    lock_path = find_lock_file(plugin_dir, lock)
    if lock_path is None:
        return None
    try:
        return _check_lock(plugin_dir, lock_path, env, policy)
    except LockDrift:
        raise
    except EnvError as e:
        if policy == "strict":
            raise
        return f"cannot check the lock, so the env is unchecked: {e}"


def _check_lock(plugin_dir: Path, lock_path: Path, env: Environment,
                policy: str) -> Optional[str]:
    from .probe import cache_dir

    key = _cache_key(lock_path, env.prefix)
    cache_file = cache_dir() / "lockcheck" / f"{key}.json"
    summary: Optional[str] = None
    try:
        summary = json.loads(cache_file.read_text(encoding="utf-8"))["summary"]
        hit = True
    except (OSError, ValueError, KeyError, TypeError):
        hit = False
    if not hit:
        drift = compare(read_lock(lock_path), env.prefix)
        summary = None if drift.clean else drift.summary(str(plugin_dir))
        try:
            cache_file.parent.mkdir(parents=True, exist_ok=True)
            tmp = cache_file.with_suffix(f".{os.getpid()}.tmp")
            tmp.write_text(json.dumps({"summary": summary, "lock": str(lock_path),
                                       "prefix": str(env.prefix)}), encoding="utf-8")
            os.replace(tmp, cache_file)
        except OSError:
            pass  # an unwritable cache only costs the comparison again
    if summary is None:
        return None
    if policy == "strict":
        raise LockDrift(summary)
    return summary
