"""The launch cache: a resolved ``LaunchSpec`` reused while nothing it depends on changed.

Every start of a plugin resolves its interpreter and environment: find the environment,
check it against its lock file, probe the interpreter, hash the SDK ekl lends it. That is
the same answer every time until a file changes, and eKuiper restarts plugins (through
``ekl-python``) and authors run ``ekl call`` in loops, so the answer is kept on disk.

An entry is found by a key over the *inputs* (the plugin JSON's path, the current folder,
the launch options, ``host_sdk``, ekl's version and the caller's environment variables)
and is valid while the files it was computed from are unchanged: each is recorded with its
mtime, size and inode (or as missing) and compared on every use. Recorded files: the
plugin JSON and its folder (a lock file or ``.ekl-env`` appearing changes the folder), the
lock file, eKuiper's ``kuiper.yaml`` when given, the interpreter (the path given and the
binary it resolves to) and its ``site-packages`` folders, ekl's own interpreter, the
environment's prefix, ``conda-meta`` (folder, ``history``, ``state``), its activation
folders (``etc/conda/{activate,deactivate,env_vars}.d`` and what they hold) and the folder
it sits in, conda's ``~/.conda/environments.txt`` and ``~/.condarc``, and the sources of
the SDK ekl lends (with the lent copy itself). A hit therefore needs about fifty ``stat``
calls and none of ``ekl.envs``, the probe or the SDK hash.

The environment passed to the plugin is stored as the changes resolution made to the
caller's environment, and re-applied to the current one on a hit, so variables that differ
between otherwise identical calls (``PWD``, ``OLDPWD``, ``_``; left out of the key) reach
the plugin with their current values. Warnings resolution logged (a drifted lock file, a
kuiper.yaml pitfall) are stored and logged again on every hit.

Writers replace an entry atomically (``fsafe.atomic_write``: a private temporary file, then
``os.replace``), so concurrent ekl processes never read half an entry; an unreadable,
oversized or malformed entry is a miss. The folder is made by ``fsafe.ensure_private_dir``
(0700) and not used when it is a link, another user owns it or others may write to it: an
entry names a program to run.
"""

from __future__ import annotations

import json
import os
import sys
from collections.abc import Mapping
from pathlib import Path
from types import MappingProxyType

from ekuiper import lazylog
from ekuiper.record import fields, replace

from .. import __version__
from ..early import CACHE_ENV, VOLATILE_ENV, safe_folder, sha256, signature
from ..early import CACHE_SUBDIR as SUBDIR
from ..early import cache_root as _cache_root
from ..fsafe import file_clock_ns, prune_folder
from ..plugin import Plugin
from ..process import LaunchSpec
from ..settings import LaunchOptions

TYPE_CHECKING = False  # typing is not loaded at run time on the start path (docs/architecture.md)
if TYPE_CHECKING:
    from typing import Any, Dict, Iterable, List, Optional, Tuple
    Sig = Optional[Tuple[int, int, int]]

log = lazylog.getLogger("ekl")
#: "Now" on the file-time clock: a file stamped at or after a resolution's start may have
#: changed while it was read (``store``'s racy check).
clock_ns = file_clock_ns
#: What a recorded file's signature is: (mtime_ns, size, inode), or None when missing.

#: Bump when the entry format or what it records changes.
FORMAT = 1
#: An entry is a few kilobytes; anything larger is not one of ours.
MAX_ENTRY_BYTES = 1024 * 1024
#: Entries kept; the oldest go when a store finds more (one per plugin and environment).
MAX_ENTRIES = 256
# VOLATILE_ENV (left out of the key), CACHE_ENV and the folder (the same variables and
# default as ``ekl.envs.probe.cache_dir``; tests check) are early.py's: its records live
# in the same folder and are keyed the same way.


def cache_root(environ: Optional[Mapping[str, str]] = None) -> Path:
    return Path(_cache_root(environ))


def _options_text(opts: LaunchOptions) -> str:
    parts = []
    for f in fields(opts):
        v = getattr(opts, f.name)
        if isinstance(v, Mapping):
            v = sorted(v.items())
        parts.append(f"{f.name}={v!r}")
    return ";".join(parts)


def _caller_env(opts: LaunchOptions) -> Dict[str, str]:
    """What resolution starts from: this process's variables with the options' on top."""
    env = dict(os.environ)
    env.update(opts.extra_env)
    return env


def usable() -> bool:
    """False when the current folder is gone: relative paths could not be made absolute,
    so the cache stands aside rather than key entries on nothing."""
    try:
        os.getcwd()
    except OSError:
        return False
    return True


def launch_key(manifest: Plugin, opts: LaunchOptions, host_sdk: str) -> str:
    """The inputs of a resolution, hashed: everything but the files' contents."""
    env = _caller_env(opts)
    h = sha256()
    for part in (f"format={FORMAT}", f"ekl={__version__}",
                 f"json={os.path.abspath(manifest.path)}", f"cwd={os.getcwd()}",
                 f"opts={_options_text(opts)}", f"host_sdk={host_sdk}",
                 f"executable={sys.executable}"):
        h.update(part.encode("utf-8", "surrogateescape") + b"\0")
    for k in sorted(env):
        if k not in VOLATILE_ENV:
            h.update(f"{k}={env[k]}".encode("utf-8", "surrogateescape") + b"\0")
    return h.hexdigest()[:40]


def entry_path(key: str) -> Path:
    return cache_root() / SUBDIR / f"{key}.json"


# --- what an entry depends on -----------------------------------------------------------


def sdk_sources() -> List[str]:
    """The files of the SDK ekl lends (``ekuiper``): editing one changes the lent copy."""
    import ekuiper

    root = os.path.dirname(ekuiper.__file__)
    out = []
    for dirpath, dirnames, filenames in os.walk(root):
        dirnames[:] = sorted(d for d in dirnames if d != "__pycache__")
        out.append(dirpath)
        out += [os.path.join(dirpath, f) for f in sorted(filenames) if f.endswith(".py")]
    return out


def _site_packages(python: str) -> List[str]:
    lib = os.path.join(os.path.dirname(os.path.dirname(python)), "lib")
    try:
        names = sorted(n for n in os.listdir(lib) if n.startswith("python"))
    except OSError:
        return []
    return [os.path.join(lib, n, "site-packages") for n in names]


def prefix_files(prefix: str) -> List[str]:
    """The files of an environment prefix that activation and the lock check read."""
    out = [prefix, os.path.dirname(prefix.rstrip("/")) or "/"]
    meta = os.path.join(prefix, "conda-meta")
    out += [meta, os.path.join(meta, "history"), os.path.join(meta, "state")]
    for sub in ("activate.d", "deactivate.d", "env_vars.d"):
        d = os.path.join(prefix, "etc", "conda", sub)
        out.append(d)
        try:
            out += [os.path.join(d, n) for n in sorted(os.listdir(d))]
        except OSError:
            pass
    return out


def dependencies(manifest: Plugin, opts: LaunchOptions, spec: LaunchSpec,
                 prefix: Optional[str], lock_file: Optional[str],
                 hosted_sdk: Optional[str]) -> List[str]:
    """Every file whose change may change ``spec``."""
    exe_dir = os.path.abspath(manifest.executable.parent)
    files = [os.path.abspath(manifest.path), os.path.abspath(manifest.folder), sys.executable,
             os.path.realpath(sys.executable),
             # a vendored SDK beside the program: which copy wins depends on its manifest
             os.path.join(exe_dir, "ekuiper"), os.path.join(exe_dir, "ekuiper", "_vendored.json")]
    if opts.ekuiper_conf:
        files.append(os.path.abspath(opts.ekuiper_conf))
    if lock_file:
        files.append(lock_file)
    if spec.interpreter:
        python = spec.interpreter
        if not os.path.isabs(python):
            from shutil import which
            python = which(python, path=spec.env.get("PATH")) or python
        files += [python, os.path.realpath(python), *_site_packages(python)]
    if prefix:
        files += prefix_files(prefix)
        home = os.path.expanduser("~")
        files += [os.path.join(home, ".conda", "environments.txt"),
                  os.path.join(home, ".condarc")]
    if hosted_sdk:
        files.append(os.path.join(hosted_sdk, "ekuiper", "__init__.py"))
        files += sdk_sources()
    seen: Dict[str, None] = {}
    for f in files:
        seen.setdefault(f, None)
    return list(seen)


# --- entries ----------------------------------------------------------------------------


def _spec_dict(spec: LaunchSpec, base_env: Mapping[str, str]) -> Dict[str, Any]:
    env = dict(spec.env)
    changed = {k: v for k, v in env.items() if base_env.get(k) != v}
    removed = sorted(k for k in base_env if k not in env)
    return {"name": spec.name, "argv": list(spec.argv), "cwd": spec.cwd,
            "env_set": changed, "env_unset": removed, "interpreter": spec.interpreter,
            "environment": spec.environment, "origin": spec.origin, "sdk": spec.sdk,
            "log_file": spec.log_file}


def _is_str_list(v: Any) -> bool:
    return isinstance(v, list) and all(isinstance(x, str) for x in v)


def _opt_str(v: Any) -> bool:
    return v is None or isinstance(v, str)


def _spec_from(d: Any, base_env: Mapping[str, str]) -> Optional[LaunchSpec]:
    """The stored spec, or None when the entry is not shaped as ours."""
    if not isinstance(d, dict):
        return None
    env_set, env_unset = d.get("env_set"), d.get("env_unset")
    if not (isinstance(d.get("name"), str) and _is_str_list(d.get("argv")) and d["argv"]
            and isinstance(d.get("cwd"), str) and isinstance(env_set, dict)
            and all(isinstance(k, str) and isinstance(v, str) for k, v in env_set.items())
            and _is_str_list(env_unset) and isinstance(d.get("origin"), str)
            and all(_opt_str(d.get(k)) for k in ("interpreter", "environment", "sdk",
                                                  "log_file"))):
        return None
    env = dict(base_env)
    for k in env_unset:
        env.pop(k, None)
    env.update(env_set)
    return LaunchSpec(d["name"], tuple(d["argv"]), d["cwd"], MappingProxyType(env),
                      interpreter=d["interpreter"], environment=d["environment"],
                      origin=d["origin"], sdk=d["sdk"], log_file=d["log_file"])


def _valid_deps(deps: Any) -> bool:
    if not isinstance(deps, list):
        return False
    for item in deps:
        if not (isinstance(item, list) and len(item) == 2 and isinstance(item[0], str)):
            return False
        sig = item[1]
        now = signature(item[0])
        if sig is None:
            if now is not None:
                return False
        elif not (isinstance(sig, list) and now is not None and tuple(sig) == now):
            return False
    return True


def _replay(logs: Any) -> bool:
    if not (isinstance(logs, list) and all(
            isinstance(x, list) and len(x) == 2 and isinstance(x[0], int)
            and isinstance(x[1], str) for x in logs)):
        return False
    for level, msg in logs:
        log.log(level, "%s", msg)
    return True


def lookup(manifest: Plugin, opts: LaunchOptions, host_sdk: str) -> Optional[LaunchSpec]:
    """The cached spec for this start, or None (a miss: resolve, then ``store``)."""
    key = launch_key(manifest, opts, host_sdk)
    path = entry_path(key)
    if not safe_folder(str(path.parent)):
        return None
    try:
        with open(path, "rb") as f:
            raw = f.read(MAX_ENTRY_BYTES + 1)
    except OSError:
        return None
    if len(raw) > MAX_ENTRY_BYTES:
        return None
    try:
        entry = json.loads(raw)
    except (ValueError, RecursionError):  # garbage, or nested deep enough to blow the stack
        return None
    if not (isinstance(entry, dict) and entry.get("format") == FORMAT
            and entry.get("key") == key and _valid_deps(entry.get("deps"))):
        return None
    spec = _spec_from(entry.get("spec"), _caller_env(opts))
    if spec is None or spec.name != manifest.name or not _replay(entry.get("logs")):
        return None
    return _with_sigs(spec, entry["deps"])


def store(manifest: Plugin, opts: LaunchOptions, host_sdk: str, spec: LaunchSpec,
          deps: Iterable[str], logs: Iterable[Tuple[int, str]],
          started_ns: int) -> Optional[LaunchSpec]:
    """Write the entry atomically; a cache that cannot be written only costs the next start.

    Returns ``spec`` carrying the signatures just stored (``LaunchSpec.deps``, as ``lookup``
    returns it on a hit), or None when nothing was stored.

    ``started_ns`` (``clock_ns()`` before resolving): a file stamped at or after it may
    have changed while resolution read it, so its recorded state could be newer than what
    was resolved; then nothing is stored and the next start resolves again (as git treats
    "racily clean" files).
    """
    key = launch_key(manifest, opts, host_sdk)
    path = entry_path(key)
    sigs = [[f, signature(f)] for f in deps]
    racy = [f for f, sig in sigs if sig is not None and sig[0] >= started_ns]
    if racy:
        log.debug("launch cache: %s changed while resolving; not stored", racy[0])
        return None
    entry = {"format": FORMAT, "key": key, "plugin": os.path.abspath(manifest.path),
             "deps": sigs,
             "spec": _spec_dict(spec, _caller_env(opts)),
             "logs": [[int(lv), str(m)] for lv, m in logs]}
    from ..errors import EklError
    from ..fsafe import atomic_write, ensure_private_dir

    try:
        ensure_private_dir(path.parent, "launch cache folder", CACHE_ENV)
        atomic_write(path, json.dumps(entry).encode("utf-8"))
    except (EklError, OSError) as e:  # a cache that cannot be written only costs a resolve
        log.debug("launch cache: not stored: %s", e)
        return None
    prune_folder(str(path.parent), MAX_ENTRIES)  # temporary files writers left go too
    return _with_sigs(spec, sigs)


def _with_sigs(spec: LaunchSpec, sigs: List[List[Any]]) -> LaunchSpec:
    """``spec`` carrying an entry's recorded files and signatures (``LaunchSpec.deps``)."""
    return replace(spec, deps=tuple((f, None if sig is None else tuple(sig))
                                    for f, sig in sigs))
