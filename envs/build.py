"""``ekl env create``, ``install`` and ``pack``: making a plugin's environment and shipping it.

A conda tool on PATH is used when there is one (``conda-lock``, ``micromamba``, ``mamba``,
``conda``), because it is what the plugin's author tested with; without one, py-rattler (the
``rattler`` extra) installs straight from the lock's URLs. Either way the result is compared
with the lock afterwards: an installer's exit code says nothing about what it wrote. A failed
create removes the prefix it started, so a retry never meets half an environment.
"""

from __future__ import annotations

import hashlib
import os
import shlex
import shutil
import subprocess
import sys
import tempfile
import urllib.parse
import urllib.request
from pathlib import Path
from typing import IO, Any, Dict, List, Optional, Tuple

from .locate import (
    RESERVED_NAMES,
    _looks_like_path,
    default_create_prefix,
    find_environment,
    plugin_environment,
)
from .lock import Lock, LockedPackage, compare, find_lock_file, read_lock
from .model import LOCAL_ENV_DIR, EnvError, EnvFailed, Environment, PluginEnv
from .probe import cache_dir, clean_env

TOOLS = ("auto", "conda-lock", "micromamba", "mamba", "conda", "rattler", "venv")
EXTRA_HINT = "pip install 'ekuiper-launcher[{extra}]'"
DOWNLOAD_TIMEOUT_S = 120


def _need(module: str, extra: str, what: str) -> Any:
    import importlib

    try:
        return importlib.import_module(module)
    except ImportError:
        raise EnvError(f"{what} needs the {extra!r} extra, which is not installed; run "
                       f"`{EXTRA_HINT.format(extra=extra)}`") from None


class Progress:
    """One line per step on stderr: creating an env can take minutes and must show life."""

    def __init__(self, stream: Optional[IO[str]] = None) -> None:
        self.stream = stream or sys.stderr

    def __call__(self, msg: str) -> None:
        print(f"ekl: {msg}", file=self.stream, flush=True)


# -- where and from what -------------------------------------------------------------------

def target_prefix(plugin: PluginEnv) -> Tuple[str, str]:
    """(prefix, kind) the plugin's JSON asks for; kind is ``venv`` or a conda-style kind."""
    kind = (plugin.kind or "").lower() or None
    env = plugin.env
    if not env and kind is None and find_lock_file(plugin.folder, plugin.lock):
        return str(plugin.folder / LOCAL_ENV_DIR), "conda"
    if not env:
        if kind == "pixi":
            raise EnvError("pixi environments are made by `pixi install` in the project")
        raise EnvError(f"{plugin.json_path} has no \"env\"; set \"virtualEnvType\" and "
                       f"\"env\" (a name or a path) to say where the environment goes")
    if kind == "venv" or _looks_like_path(env):
        p = Path(os.path.expanduser(env))
        if not p.is_absolute():
            p = plugin.folder / p
        return os.path.abspath(p), kind or "conda"
    if kind == "pixi":
        raise EnvError("pixi environments are made by `pixi install` in the project")
    if env in RESERVED_NAMES:
        # conda: "CondaValueError: 'base' is a reserved environment name"; base is the root
        # prefix, which an installer made and ekl must never build over
        raise EnvError(f"{plugin.json_path}: \"env\": {env!r} is a reserved environment name "
                       f"(the conda root prefix), so `ekl env create` will not make it, as "
                       f"conda will not; name another env in \"env\"")
    return default_create_prefix(kind, env), kind or "conda"


def _spec_files(plugin: PluginEnv) -> Tuple[Optional[Path], Optional[Path], Optional[Path]]:
    lock = find_lock_file(plugin.folder, plugin.lock)
    yml = next((plugin.folder / n for n in ("environment.yml", "environment.yaml")
                if (plugin.folder / n).is_file()), None)
    req = plugin.folder / "requirements.txt"
    return lock, yml, req if req.is_file() else None


def _which(tool: str) -> Optional[str]:
    return shutil.which(tool)


def choose_method(lock: Optional[Lock], yml: Optional[Path], req: Optional[Path], kind: str,
                  tool: str = "auto") -> Tuple[str, str]:
    """(tool, source) to build with; raises when nothing fits."""
    if tool not in TOOLS:
        raise EnvError(f"--tool {tool!r} is not one of {', '.join(TOOLS)}")
    if kind == "venv":
        if req is None:
            raise EnvError("a venv is made from requirements.txt beside the plugin's JSON, "
                           "and there is none; add one")
        if tool not in ("auto", "venv"):
            raise EnvError(f"--tool {tool} cannot make a venv; use --tool venv")
        return "venv", "requirements.txt"
    if lock is not None:
        if tool != "auto":
            return tool, "lock"
        if lock.format == "conda-lock" and _which("conda-lock"):
            return "conda-lock", "lock"
        if _which("micromamba"):
            return "micromamba", "lock"
        if lock.format == "explicit":
            for t in ("mamba", "conda"):
                if _which(t):
                    return t, "lock"
        return "rattler", "lock"
    if yml is not None:
        if tool != "auto":
            return tool, "environment.yml"
        for t in ("micromamba", "mamba", "conda"):
            if _which(t):
                return t, "environment.yml"
        return "rattler", "environment.yml"
    if req is not None:
        raise EnvError("only requirements.txt found, which makes a venv: set "
                       "\"virtualEnvType\": \"venv\", or add environment.yml or a conda lock")
    raise EnvError("nothing to build from: add conda-lock.yml, an @EXPLICIT lock, "
                   "environment.yml or requirements.txt beside the plugin's JSON")


def _run(argv: List[str], say: Progress, env: Optional[Dict[str, str]] = None,
         cwd: Optional[str] = None) -> None:
    say("running " + " ".join(shlex.quote(a) for a in argv))
    try:
        rc = subprocess.call(argv, env=env, cwd=cwd)
    except OSError as e:
        raise EnvError(f"cannot run {argv[0]}: {e.strerror}") from None
    if rc != 0:
        raise EnvFailed(f"{os.path.basename(argv[0])} failed with exit code {rc} "
                       f"(its output is above)")


# -- the rattler way -----------------------------------------------------------------------

def _hashes_ok(path: Path, p: LockedPackage) -> Optional[str]:
    sha = hashlib.sha256()
    md5 = hashlib.md5()  # noqa: S324 - conda's own integrity field
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            sha.update(chunk)
            md5.update(chunk)
    if p.sha256 and sha.hexdigest() != p.sha256:
        return f"sha256 {sha.hexdigest()} != locked {p.sha256}"
    if p.md5 and md5.hexdigest() != p.md5:
        return f"md5 {md5.hexdigest()} != locked {p.md5}"
    return None


def fetch_verified(p: LockedPackage, dest: Path) -> Path:
    """The package file, local and checked against the lock's hashes (rattler does not check
    files it reads from ``file://`` URLs, and a lock is only worth its hashes)."""
    if not p.url:
        raise EnvError(f"lock entry {p.spec} has no url; regenerate the lock")
    if not (p.sha256 or p.md5):
        raise EnvError(f"lock entry {p.spec} has no md5 or sha256, so it cannot be verified; "
                       f"regenerate the lock with hashes (conda list --explicit --md5)")
    parsed = urllib.parse.urlparse(p.url)
    fn = os.path.basename(parsed.path)
    if parsed.scheme == "file" or parsed.scheme == "":
        local = Path(urllib.parse.unquote(parsed.path))
        if not local.is_file():
            raise EnvError(f"package file {local} (lock entry {p.spec}) does not exist")
    elif parsed.scheme in ("http", "https"):
        dest.mkdir(parents=True, exist_ok=True)
        local = dest / f"{(p.sha256 or p.md5)}-{fn}"
        if not (local.is_file() and _hashes_ok(local, p) is None):
            tmp = local.with_suffix(local.suffix + f".{os.getpid()}.part")
            try:
                with urllib.request.urlopen(p.url, timeout=DOWNLOAD_TIMEOUT_S) as r, \
                        open(tmp, "wb") as f:
                    shutil.copyfileobj(r, f)
                os.replace(tmp, local)
            except OSError as e:
                tmp.unlink(missing_ok=True)
                raise EnvFailed(f"cannot download {p.url}: {e}") from None
    else:
        raise EnvError(f"lock entry {p.spec} has an unsupported url {p.url}")
    bad = _hashes_ok(local, p)
    if bad:
        raise EnvFailed(f"{local} does not match the lock ({p.spec}): {bad}; the package was "
                       f"changed after locking, or the lock is wrong")
    return local


def _rattler(req: Dict[str, Any], what: str) -> int:
    """Run rattler's part in a child (see _rattler_worker: it must not crash us at exit)."""
    import importlib.util
    import json

    try:
        present = importlib.util.find_spec("rattler") is not None
    except ValueError:
        present = False
    if not present:
        raise EnvError(f"{what} needs the 'rattler' extra, which is not installed; run "
                       f"`{EXTRA_HINT.format(extra='rattler')}`")
    try:
        cp = subprocess.run([sys.executable, "-m", "ekl.envs._rattler_worker"],
                            input=json.dumps(req), stdout=subprocess.PIPE, text=True,
                            env=clean_env())
    except OSError as e:
        raise EnvFailed(f"cannot run py-rattler: {e.strerror}") from None
    lines = cp.stdout.strip().splitlines()
    try:
        ans = json.loads(lines[-1])
    except (IndexError, ValueError):
        ans = {"ok": False, "error": f"py-rattler exited with {cp.returncode} and no answer"}
    if not ans.get("ok"):
        raise EnvFailed(f"py-rattler failed: {ans.get('error')}")
    return int(ans.get("count", 0))


def _rattler_install_lock(lock: Lock, prefix: str, say: Progress) -> None:
    pkgs = lock.conda
    if not pkgs:
        raise EnvError(f"{lock.path} has no conda packages for {lock.subdir}")
    dl = cache_dir() / "downloads"
    files = []
    for i, p in enumerate(pkgs, 1):
        local = fetch_verified(p, dl)
        say(f"[{i}/{len(pkgs)}] verified {local.name}")
        files.append(str(local))
    _rattler({"op": "install", "files": files, "prefix": prefix,
              "cache": str(cache_dir() / "rattler-pkgs")},
             "creating an env without conda or micromamba")


#: A channel entry that is a keyword, not a channel: "do not add the defaults channel"
#: (conda, mamba and conda-lock read it so; it must never be fetched as a channel).
NODEFAULTS = "nodefaults"


def _read_env_yml(path: Path) -> Tuple[List[str], List[str], List[str]]:
    import yaml

    try:
        data = yaml.safe_load(path.read_text(encoding="utf-8")) or {}
    except (OSError, UnicodeDecodeError, yaml.YAMLError) as e:
        raise EnvError(f"cannot read {path}: {str(e).splitlines()[0]}") from None
    if not isinstance(data, dict) or not isinstance(data.get("channels") or [], list) or \
            not isinstance(data.get("dependencies") or [], list):
        raise EnvError(f"{path} is not an environment.yml (a mapping with 'channels' and "
                       f"'dependencies' lists); fix it")
    channels = [str(c) for c in data.get("channels") or [] if str(c) != NODEFAULTS]
    specs: List[str] = []
    pip: List[str] = []
    for d in data.get("dependencies") or []:
        if isinstance(d, dict) and "pip" in d:
            pip.extend(str(x) for x in d["pip"] or [])
        elif isinstance(d, str):
            specs.append(d)
    if not channels:
        raise EnvError(f"{path} lists no channels; add one (for example conda-forge)")
    return channels, specs, pip


def _rattler_solve_install(yml: Path, prefix: str, say: Progress) -> List[str]:
    channels, specs, pip = _read_env_yml(yml)
    say(f"solving {len(specs)} specs from {', '.join(channels)}")
    _rattler({"op": "solve", "channels": channels, "specs": specs, "prefix": prefix,
              "cache": str(cache_dir() / "rattler-pkgs")},
             "creating an env without conda or micromamba")
    return pip


def _write_history(prefix: str, source: str) -> None:
    hist = Path(prefix, "conda-meta", "history")
    if hist.is_file() and hist.stat().st_size > 0:
        return
    import time

    hist.parent.mkdir(parents=True, exist_ok=True)
    with open(hist, "a", encoding="utf-8") as f:
        f.write(f"==> {time.strftime('%Y-%m-%d %H:%M:%S')} <==\n# cmd: ekl env create "
                f"(from {source})\n")


def _pip_from_lock(lock: Lock, prefix: str, say: Progress) -> None:
    pip = lock.pip
    if not pip:
        return
    lines = []
    for p in pip:
        if not p.url or not p.sha256:
            raise EnvError(f"pip entry {p.name} {p.version} in {lock.path} has no url or "
                           f"sha256; regenerate the lock")
        lines.append(f"{p.name} @ {p.url} --hash=sha256:{p.sha256}")
    python = os.path.join(prefix, "bin", "python")
    with tempfile.NamedTemporaryFile("w", suffix=".txt", delete=False) as f:
        f.write("\n".join(lines) + "\n")
    try:
        _run([python, "-m", "pip", "install", "--no-deps", "--require-hashes", "-r", f.name],
             say, env=clean_env())
    finally:
        os.unlink(f.name)


# -- create --------------------------------------------------------------------------------

def create(plugin: PluginEnv, tool: str = "auto", say: Optional[Progress] = None) -> str:
    """Build the plugin's environment; returns its prefix. Nothing is left on failure."""
    say = say or Progress()
    prefix, kind = target_prefix(plugin)
    lock_path, yml, req = _spec_files(plugin)
    lock = read_lock(lock_path) if lock_path else None
    method, source = choose_method(lock, yml, req, kind, tool)
    if os.path.exists(prefix) and (not os.path.isdir(prefix) or os.listdir(prefix)):
        raise EnvError(f"{prefix} already exists; check it with `ekl env check "
                       f"{shlex.quote(str(plugin.folder))}`, or remove it first to rebuild")
    made_parent = [] if os.path.isdir(os.path.dirname(prefix)) else [os.path.dirname(prefix)]
    say(f"creating {prefix} with {method} from "
        f"{lock_path.name if source == 'lock' and lock_path else source}")
    try:
        if method == "venv":
            assert req is not None
            _run([sys.executable, "-m", "venv", prefix], say, env=clean_env())
            _run([os.path.join(prefix, "bin", "python"), "-m", "pip", "install", "-r",
                  str(req)], say, env=clean_env(), cwd=str(plugin.folder))
            return prefix
        if source == "lock":
            assert lock is not None and lock_path is not None
            _create_from_lock(method, lock, lock_path, prefix, say)
            _write_history(prefix, lock_path.name)
            _pip_from_lock(lock, prefix, say)
            drift = compare(lock, Path(prefix))
            if not drift.clean:
                raise EnvFailed(f"{method} finished but the env does not match the lock: "
                               f"{drift.counts()}")
            say(f"verified {len(lock.packages)} packages against {lock_path.name}")
            if req is not None and has_requirements(req):  # the plugin's own, on top
                pip_install(find_environment(None, prefix), req, say)
            elif req is not None:
                say(f"{req.name} lists nothing to install")
        else:
            assert yml is not None
            pip = _create_from_yml(method, yml, prefix, say)
            _write_history(prefix, yml.name)
            if pip:
                _run([os.path.join(prefix, "bin", "python"), "-m", "pip", "install", *pip],
                     say, env=clean_env(), cwd=str(plugin.folder))
            if not os.path.isdir(os.path.join(prefix, "conda-meta")):
                raise EnvFailed(f"{method} finished but wrote no conda-meta/ in {prefix}")
        return prefix
    except BaseException:
        say(f"removing the unfinished {prefix}")
        shutil.rmtree(prefix, ignore_errors=True)
        for d in made_parent:
            shutil.rmtree(d, ignore_errors=True)
        raise


def _create_from_lock(method: str, lock: Lock, lock_path: Path, prefix: str,
                      say: Progress) -> None:
    if method == "rattler":
        _rattler_install_lock(lock, prefix, say)
        return
    exe = _which(method)
    if exe is None:
        raise EnvError(f"--tool {method}: {method} is not on PATH")
    if method == "conda-lock":
        _run([exe, "install", "-p", prefix, str(lock_path)], say)
    elif method == "micromamba":
        _run([exe, "create", "-y", "-p", prefix, "-f", str(lock_path)], say)
    else:
        if lock.format != "explicit":
            raise EnvError(f"{method} cannot read {lock_path.name}; install conda-lock "
                           f"(`{EXTRA_HINT.format(extra='lock')}`) or use --tool rattler")
        _run([exe, "create", "-y", "-p", prefix, "--file", str(lock_path)], say)


def _create_from_yml(method: str, yml: Path, prefix: str, say: Progress) -> List[str]:
    if method == "rattler":
        return _rattler_solve_install(yml, prefix, say)
    exe = _which(method)
    if exe is None:
        raise EnvError(f"--tool {method}: {method} is not on PATH")
    if method == "micromamba":
        _run([exe, "create", "-y", "-p", prefix, "-f", str(yml)], say)
    else:
        _run([exe, "env", "create", "-p", prefix, "-f", str(yml)], say)
    return []


# -- pack ----------------------------------------------------------------------------------

def pack(plugin: PluginEnv, output: str, say: Optional[Progress] = None) -> str:
    """conda-pack the plugin's env into ``output`` (.tar.gz): unpack it on an edge machine,
    run ``bin/conda-unpack`` once, and point the plugin's ``env`` at the folder."""
    say = say or Progress()
    env = plugin_environment(plugin)
    if env is None:
        raise EnvError(f"{plugin.json_path} names no env to pack (and has no lock file "
                       f"beside it for a plugin-local {LOCAL_ENV_DIR})")
    if env.kind == "venv":
        raise EnvError(f"{env.prefix} is a venv; conda-pack packs conda environments only")
    conda_pack = _need("conda_pack", "pack", "ekl env pack")
    out = os.path.abspath(output)
    if not out.endswith((".tar.gz", ".tgz")):
        raise EnvError(f"-o {output}: give a .tar.gz file name")
    say(f"packing {env.prefix} into {out}")
    try:
        conda_pack.pack(prefix=str(env.prefix), output=out, force=True, format="tar.gz",
                        ignore_missing_files=False, ignore_editable_packages=False)
    except conda_pack.CondaPackException as e:
        Path(out).unlink(missing_ok=True)
        first = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
        raise EnvFailed(f"conda-pack refused {env.prefix}: {first}") from None
    return out


# -- pip into an environment ---------------------------------------------------------------

#: pip's output kept per environment; a runaway install is cut here (the terminal still sees it)
MAX_PIP_LOG_BYTES = 16 * 1024 * 1024
#: one line of pip's output read at a time, at most this long
MAX_PIP_LINE = 64 * 1024


def has_requirements(path: Path) -> bool:
    """Whether a requirements file asks for anything (not only comments and blank lines)."""
    with open(path, encoding="utf-8", errors="replace") as f:
        return any(ln.strip() and not ln.lstrip().startswith("#") for ln in f)


def pip_log_path(env: Environment) -> Path:
    """Where pip's output for ``env`` is kept: one file per environment, the last install."""
    tag = hashlib.sha256(str(env.prefix).encode()).hexdigest()[:10]
    name = "".join(c if c.isalnum() or c in "-_." else "_" for c in (env.name or env.prefix.name))
    return cache_dir() / "logs" / f"pip-install-{name[:60]}-{tag}.log"


def pip_install(env: Environment, requirements: Path, say: Optional[Progress] = None,
                stream: Optional[IO[str]] = None) -> Optional[Path]:
    """``pip install -r requirements`` with ``env`` activated, as a user would after
    ``conda activate`` (activation hooks and ``env_vars`` included, no ``conda run``).

    pip's own lines (Collecting, Downloading, Installing...) are shown as they come, so a
    slow install shows life, and kept in a log file, because the terminal eKuiper ran
    install.sh in is gone when someone asks why it failed. Returns the log's path, or None
    when the file asks for nothing.
    """
    say = say or Progress()
    out = stream or sys.stderr
    req = Path(requirements)
    if not req.is_file():
        raise EnvError(f"{req}: no such requirements file; add requirements.txt beside the "
                       f"plugin's JSON or give one with -r")
    try:
        wanted = has_requirements(req)
    except OSError as e:
        raise EnvError(f"cannot read {req}: {e.strerror}") from None
    if not wanted:
        say(f"{req.name} lists nothing to install")
        return None
    if not env.python.is_file():
        raise EnvError(f"{env.prefix} has no {env.python}; install python into it first")
    log = pip_log_path(env)
    log.parent.mkdir(parents=True, exist_ok=True)
    child = env.activation(clean_env())
    child["PYTHONUNBUFFERED"] = "1"
    argv = env.wrap_command([str(env.python), "-m", "pip", "install",
                             "--disable-pip-version-check", "-r", str(req.resolve())])
    say(f"installing {req} into {env.prefix} (pip's output is also kept in {log})")
    try:
        proc = subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                                stdin=subprocess.DEVNULL, cwd=str(req.resolve().parent),
                                env=child)
    except OSError as e:
        raise EnvError(f"cannot run {env.python}: {e.strerror}") from None
    written = 0
    try:
        assert proc.stdout is not None
        with open(log, "wb") as f:
            f.write(("$ " + " ".join(shlex.quote(a) for a in argv) + "\n").encode())
            while True:
                line = proc.stdout.readline(MAX_PIP_LINE)
                if not line:
                    break
                out.write(line.decode("utf-8", "replace"))
                out.flush()
                if written < MAX_PIP_LOG_BYTES:
                    f.write(line)
                    written += len(line)
                    if written >= MAX_PIP_LOG_BYTES:
                        f.write(b"\n[ekl: log cut at %d bytes]\n" % MAX_PIP_LOG_BYTES)
        rc = proc.wait()
    except BaseException:
        proc.kill()
        proc.wait()
        raise
    if rc != 0:
        raise EnvFailed(f"pip install -r {req} into {env.prefix} failed with exit code {rc}; "
                        f"its output is above and in {log}")
    say(f"installed {req.name} into {env.prefix}")
    return log
