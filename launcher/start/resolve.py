"""Decide how to start a plugin: which interpreter, which environment, which argv.

Precedence for Python plugins: ``--python``, then ``$EKL_PYTHON_BIN``, then
``portable.pythonBin`` from an eKuiper ``kuiper.yaml`` (``--ekuiper-conf``), then the
plugin's own environment (``virtualEnvType``/``env``), then the interpreter ekl runs on.

``resolve`` answers from the launch cache (``cache.py``) while nothing it depends on
changed; ``ekl.envs`` and the probe are imported only when it does not, so a cached start
pays neither.
"""

from __future__ import annotations

import functools
import os
import sys
from pathlib import Path

from ekuiper import lazylog, protocol
from ekuiper.record import record
from ekuiper.transport import TRANSPORT_ENV, transport_name

from ..errors import EklError, EnvironmentDrift
from ..plugin import Plugin, vendored
from ..plugin.vendored import Vendored
from ..process import LaunchSpec
from ..settings import LaunchOptions
from .cache import clock_ns, dependencies
from .cache import lookup as cache_lookup
from .cache import store as cache_store
from .cache import usable as cache_usable

TYPE_CHECKING = False  # typing is not loaded at run time on the start path (docs/architecture.md)
if TYPE_CHECKING:
    from typing import Any, Callable, Dict, List, Optional, Tuple

log = lazylog.getLogger("ekl")
PYTHON_BIN_ENV = "EKL_PYTHON_BIN"
MIN_PYTHON = (3, 8)


def read_kuiper_yaml(path: str) -> Dict[str, Any]:
    """``portable`` settings from eKuiper's kuiper.yaml; warns about eKuiper's pitfalls."""
    import yaml

    p = Path(path)
    try:
        data = yaml.safe_load(p.read_text()) or {}
    except OSError as e:
        raise EklError(f"--ekuiper-conf {path}: cannot read it: {e.strerror}") from None
    except yaml.YAMLError as e:
        raise EklError(f"--ekuiper-conf {path}: not valid YAML: {' '.join(str(e).split())}") from None
    portable = data.get("portable") if isinstance(data, dict) else None
    if not isinstance(portable, dict):
        raise EklError(f"--ekuiper-conf {path}: has no 'portable' section; it is not an eKuiper "
                       f"kuiper.yaml")
    if "initTimeout" not in portable:
        log.warning("%s: portable.initTimeout is missing; eKuiper then waits 5000 *nanoseconds* "
                    "for every handshake and every plugin start fails. Add 'initTimeout: 5000'.",
                    path)
    return portable


@functools.lru_cache(maxsize=None)
def _sdk_digest() -> str:
    """The SDK's content hash, once per process (it reads every file of the SDK)."""
    import hashlib

    import ekuiper

    src = Path(ekuiper.__file__).parent
    h = hashlib.sha256()
    for f in sorted(src.rglob("*.py")):
        h.update(f.relative_to(src).as_posix().encode())
        h.update(f.read_bytes())
    return h.hexdigest()[:16]


def hosted_sdk_dir() -> Path:
    """A cached copy of our ``ekuiper`` package folder alone, to put on PYTHONPATH.

    Only the SDK is exposed to the plugin's interpreter, never ekl's own site-packages.
    The copy is checked on every call (a cleaned cache must not hand a plugin a folder
    that is gone); only the hash is computed once per process.
    """
    import ekuiper
    from ekl.envs.probe import CACHE_ENV, cache_dir

    from ..fsafe import ensure_private_dir

    src = Path(ekuiper.__file__).parent
    # plugins import from here: the folder must be ours alone (refused with one line if not)
    root = ensure_private_dir(cache_dir(), "cache folder", CACHE_ENV)
    dest = root / "sdk" / _sdk_digest()
    if not (dest / "ekuiper" / "__init__.py").is_file():
        tmp = dest.with_name(f".{dest.name}.{os.getpid()}")
        import shutil  # a cache miss only

        shutil.rmtree(tmp, ignore_errors=True)
        shutil.copytree(src, tmp / "ekuiper", ignore=shutil.ignore_patterns("__pycache__"))
        tmp.parent.mkdir(parents=True, exist_ok=True)
        try:
            os.replace(tmp, dest)
        except OSError:  # another ekl won the race
            shutil.rmtree(tmp, ignore_errors=True)
    return dest


def needs_pynng(sdk_flavour: Optional[str], env: Dict[str, str]) -> bool:
    """The official SDK always imports pynng; ekl's only with ``EKUIPER_TRANSPORT=pynng``."""
    if sdk_flavour == "official":
        return True
    return transport_name(env) == "pynng"


def _pip_command(python: str, env_desc: Optional[str]) -> str:
    if env_desc and env_desc.startswith("conda"):
        return f"{python} -m pip install pynng   (or: conda install -p <prefix> -c conda-forge pynng)"
    return f"{python} -m pip install pynng"


@record
class Choice:
    """The interpreter and the environment it runs with, before any plugin specifics."""

    python: str
    env: Dict[str, str]
    source: str
    wrap: Optional[Callable[[List[str]], List[str]]] = None
    env_desc: Optional[str] = None
    #: the environment's prefix, when one was chosen (the launch cache watches it)
    prefix: Optional[str] = None


def local_environment(manifest: Plugin, opts: LaunchOptions,
                      notes: Optional[Dict[str, Optional[str]]] = None) -> Optional[str]:
    """The plugin-local environment (``.ekl-env``) when a lock file beside the JSON says so.

    Used when the JSON names no environment. ekl-python builds it on first start (through
    ``ekl env create`` in a child process, so the heavy tooling stays out of this one);
    the local verbs say how to build it and carry on with the default interpreter.
    """
    from ekl.envs import LOCAL_ENV_DIR
    from ekl.envs.lock import find_lock_file

    lock = find_lock_file(manifest.folder, manifest.ekl.lock)
    if lock is None:
        return None
    prefix = manifest.folder / LOCAL_ENV_DIR
    if (prefix / "conda-meta").is_dir():
        return str(prefix)
    fix = f"ekl env create {manifest.folder}"
    if not opts.create_env:
        log.warning("%s beside %s describes the plugin's environment, which is not built; "
                    "build it with `%s`. Running on the default interpreter meanwhile.",
                    lock.name, manifest.path.name, fix)
        return None
    log.info("building %s from %s (first start)", prefix, lock.name)
    if notes is not None:
        notes["built"] = str(prefix)
    import subprocess  # only to build an environment: a cached start never gets here

    cp = subprocess.run([sys.executable, "-m", "ekl.launcher.cli", "env", "create",
                         str(manifest.folder)], stdout=subprocess.PIPE,
                        stderr=subprocess.STDOUT, text=True)
    for line in cp.stdout.splitlines():
        log.info("%s", line)
    if cp.returncode != 0 or not (prefix / "conda-meta").is_dir():
        last = (cp.stdout.strip().splitlines() or ["no output"])[-1]
        raise EklError(f"cannot build {prefix} from {lock.name}: {last}; build it with `{fix}`")
    return str(prefix)


def choose_interpreter(manifest: Optional[Plugin], opts: LaunchOptions,
                       notes: Optional[Dict[str, Optional[str]]] = None) -> Choice:
    """Apply the precedence rules (no probing); ``manifest`` may be None (no plugin).

    ``notes`` receives ``built`` when the plugin-local environment was built just now.
    """
    from ekl.envs import LOCAL_ENV_DIR
    from ekl.envs.probe import clean_env

    base_env = clean_env()
    base_env.update(opts.extra_env)
    if opts.python:
        return Choice(opts.python, base_env, "--python")
    if os.environ.get(PYTHON_BIN_ENV):
        return Choice(os.environ[PYTHON_BIN_ENV], base_env, f"${PYTHON_BIN_ENV}")
    portable = read_kuiper_yaml(opts.ekuiper_conf) if opts.ekuiper_conf else {}
    if portable.get("pythonBin"):
        return Choice(str(portable["pythonBin"]), base_env,
                      f"portable.pythonBin in {opts.ekuiper_conf}")
    kind, name = (manifest.env_kind, manifest.env) if manifest else (None, None)
    if manifest is not None and kind is None:
        local = local_environment(manifest, opts, notes)
        if local is not None:
            kind, name = "conda", local
    if manifest is not None and kind:
        from ekl.envs import EnvError, check_lock_for_launch, find_environment
        from ekl.envs.model import EnvFailed

        try:
            environment = find_environment(kind, name or "", plugin_dir=manifest.folder)
        except EnvError as e:
            where = "field 'env'" if manifest.env_kind else LOCAL_ENV_DIR
            raise EklError(f"{manifest.path.name}: {where}: {e}") from None
        if opts.lock_policy != "off":
            try:
                warning = check_lock_for_launch(manifest.folder, manifest.ekl.lock, environment,
                                                opts.lock_policy)
            except EnvFailed as e:  # --lock strict met drift: the plugin's problem, exit 1
                raise EnvironmentDrift(str(e)) from None
            except EnvError as e:
                raise EklError(str(e)) from None
            if warning:
                log.warning("%s", warning)
        return Choice(str(environment.python), environment.activation(base_env),
                      f"{manifest.path.name} virtualEnvType={kind}" if manifest.env_kind
                      else f"{LOCAL_ENV_DIR} built from the lock file beside {manifest.path.name}",
                      # base_env: conda runs an active env's deactivate.d hooks first
                      wrap=functools.partial(environment.wrap_command, base_env=base_env),
                      env_desc=f"{environment.kind} {environment.prefix}",
                      prefix=str(environment.prefix))
    return Choice(sys.executable, base_env, "the interpreter ekl runs on")


def resolve(manifest: Plugin, opts: Optional[LaunchOptions] = None,
            host_sdk: str = "missing", use_cache: bool = True) -> LaunchSpec:
    """Everything needed to start ``manifest``'s plugin.

    ``host_sdk``: ``"missing"`` puts ekl's SDK on PYTHONPATH only when the interpreter has
    none; ``"always"`` puts it in front of any installed one (``ekl-python`` needs ekl's SDK
    for its relay; the official SDK's API is the same, so the plugin does not notice).

    Python plugins are answered from the launch cache when its entry is still valid (see
    ``cache.py``); a miss resolves and stores. Go plugins and ``--conda-run`` cost nothing
    to resolve and are not cached.
    """
    opts = opts or LaunchOptions()
    if not use_cache or manifest.language == "go" or opts.conda_run or not cache_usable():
        return _resolve(manifest, opts, host_sdk, {})
    spec = cache_lookup(manifest, opts, host_sdk)
    if spec is not None:
        return spec
    seen: Dict[str, Optional[str]] = {}
    started = clock_ns()
    from .logcapture import LogCapture

    with LogCapture() as logs:
        spec = _resolve(manifest, opts, host_sdk, seen)
    if seen.get("built"):
        return spec  # the first start built the environment: the next one stores
    lock_file = None
    try:
        from ekl.envs.lock import find_lock_file

        found = find_lock_file(manifest.folder, manifest.ekl.lock)
        lock_file = str(found) if found else None
    except Exception:  # a bad lock reference was reported by resolution itself
        pass
    deps = dependencies(manifest, opts, spec, seen.get("prefix"), lock_file, seen.get("hosted"))
    return cache_store(manifest, opts, host_sdk, spec, deps, logs.records, started) or spec


def _resolve(manifest: Plugin, opts: LaunchOptions, host_sdk: str,
             seen: Dict[str, Optional[str]]) -> LaunchSpec:
    """``resolve`` without the cache; notes in ``seen`` what the cache must watch."""
    from ekl.envs.probe import ProbeError, clean_env, probe

    lazylog.load()  # ekl.envs logs through logging itself: the program's handler first

    conf_arg = protocol.encode_portable_config(opts.send_timeout_ms)
    cwd = str(manifest.executable.parent)
    if manifest.language == "go":
        base_env = clean_env()
        base_env.update(opts.extra_env)
        return LaunchSpec(manifest.name, (str(manifest.executable), conf_arg), cwd, base_env,
                          interpreter=None, environment=None, origin="go executable",
                          log_file=opts.log_file)
    if opts.conda_run:
        portable = read_kuiper_yaml(opts.ekuiper_conf) if opts.ekuiper_conf else {}
        python_bin = opts.python or os.environ.get(PYTHON_BIN_ENV) or str(
            portable.get("pythonBin") or "python")
        base_env = clean_env()
        base_env.update(opts.extra_env)
        return _conda_run(manifest, opts, python_bin, conf_arg, base_env, cwd)

    choice = choose_interpreter(manifest, opts, seen)
    seen["prefix"] = choice.prefix
    python, source, env_vars = choice.python, choice.source, choice.env
    try:
        info = probe(python, env_vars)
    except ProbeError as e:
        raise EklError(f"{e} (chosen by {source})") from None
    if info.version < MIN_PYTHON:
        raise EklError(f"interpreter {python} is Python {info.version_text} (chosen by {source}); "
                       f"eKuiper plugins need Python 3.8 or newer")
    hosted = False
    will_host = info.ekuiper is None or (host_sdk == "always" and info.sdk_flavour != "ekl")
    sdk_flavour = info.sdk_flavour
    vend, over_vendored = _vendored_choice(manifest, info.version)
    if vend is not None:
        will_host = over_vendored
        sdk_flavour = "ekl" if over_vendored else "vendored"
    if info.pynng is None and needs_pynng("ekl" if will_host or vend else sdk_flavour, env_vars):
        why = ("the official ekuiper SDK needs it" if not will_host and sdk_flavour ==
               "official" else f"{TRANSPORT_ENV}=pynng asks for it")
        raise EklError(f"interpreter {python} (chosen by {source}) cannot import pynng, and "
                       f"{why}; install it with: {_pip_command(python, choice.env_desc)}")
    if will_host and not vend and info.ekuiper is None and info.ekuiper_error and \
            "No module named 'ekuiper'" not in info.ekuiper_error:
        log.warning("interpreter %s has an ekuiper SDK that cannot be imported (%s); ekl's SDK "
                    "is used in front of it", python, info.ekuiper_error)
    if will_host:
        sdk = str(hosted_sdk_dir())
        seen["hosted"] = sdk
        env_vars = dict(env_vars)
        env_vars["PYTHONPATH"] = sdk
        if over_vendored:
            # the script's folder (and its older ekuiper/) would come first on sys.path:
            # PYTHONSAFEPATH (3.11+) leaves it out, and PYTHONPATH puts it after ours
            env_vars["PYTHONSAFEPATH"] = "1"
            env_vars["PYTHONPATH"] = os.pathsep.join([sdk, cwd])
        hosted = True
        log.info("hosting ekl's SDK for %s from %s", python, sdk)
    argv: List[str] = [python, "-u", str(manifest.executable), conf_arg]
    if choice.wrap is not None:
        argv = choice.wrap(argv)
    return LaunchSpec(manifest.name, tuple(argv), cwd, dict(env_vars), interpreter=python,
                      environment=choice.env_desc, origin=source,
                      sdk="hosted" if hosted else sdk_flavour, log_file=opts.log_file)


#: Python puts the script's folder first on sys.path unless PYTHONSAFEPATH is set (3.11+)
SAFE_PATH_PYTHON = (3, 11)


def _vendored_choice(manifest: Plugin, version: Any) -> Tuple[Optional[Vendored], bool]:
    """The plugin's vendored SDK, if any, and whether ekl's newer copy goes in front of it.

    Whichever copy is newer wins, and the log says which: a vendored copy at least as new
    as ekl's runs as it is (the script's folder comes first); an older one is put behind
    ekl's, which only Python 3.11+ allows (PYTHONSAFEPATH), so older interpreters keep it.
    """
    import ekuiper

    folder = vendored.find(manifest.executable.parent)
    if folder is None:
        return None, False
    vend = vendored.read(folder, manifest.folder, verify=False)
    ours = str(getattr(ekuiper, "__version__", "0"))
    name = manifest.name
    if vendored.version_key(vend.version) >= vendored.version_key(ours):
        log.info("%s: its vendored ekl SDK %s (%s) is used: ekl's own is %s, not newer",
                 name, vend.version, folder, ours)
        return vend, False
    if tuple(version) < SAFE_PATH_PYTHON:
        log.warning("%s: its vendored ekl SDK %s is older than ekl's %s, but Python %s always "
                    "imports the script folder's copy first, so %s is used; rebuild the zip "
                    "with `ekl package --vendor-sdk`", name, vend.version or "?", ours,
                    ".".join(map(str, tuple(version)[:2])), vend.version or "it")
        return vend, False
    log.info("%s: ekl's SDK %s is used in front of its older vendored copy %s (%s)", name,
             ours, vend.version or "?", folder)
    return vend, True


def _conda_run(manifest: Plugin, opts: LaunchOptions, python_bin: str, conf_arg: str,
               base_env: Dict[str, str], cwd: str) -> LaunchSpec:
    """eKuiper's own command, plus ``--no-capture-output`` so output is not buffered."""
    if manifest.env_kind != "conda" or not manifest.env:
        raise EklError(f"--conda-run: {manifest.path.name} has no \"virtualEnvType\": \"conda\" "
                       f"with an \"env\"; drop --conda-run or add them")
    from shutil import which

    conda = which("conda", path=base_env.get("PATH"))
    if conda is None:
        raise EklError("--conda-run needs a conda binary on PATH and none was found; drop "
                       "--conda-run (ekl activates the environment itself) or add conda to PATH")
    argv = [conda, "run", "--no-capture-output", "-n", manifest.env, python_bin,
            str(manifest.executable), conf_arg]
    return LaunchSpec(manifest.name, tuple(argv), cwd, base_env, interpreter=python_bin,
                      environment=f"conda run -n {manifest.env}", origin="--conda-run",
                      log_file=opts.log_file)
