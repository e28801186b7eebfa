"""``ekl-python``: a drop-in ``portable.pythonBin`` for eKuiper.

eKuiper starts a Python plugin as ``{pythonBin} -u EXE CONF`` in the plugin's folder. Set
``pythonBin`` to ``ekl-python`` and each plugin start finds the plugin's JSON beside EXE,
resolves and checks its environment, hosts ekl's SDK, and runs the plugin under a relay
that restarts it transparently. Any other invocation (``-c``, ``-m``, ``--version``, a
plain script) runs the resolved python with the same arguments, so eKuiper and its tools
never notice the difference.

The plugin JSON may carry an ``ekl`` section (ignored by eKuiper)::

    "ekl": {"restart": "on-failure", "max_rss_mb": 512, "health_interval_s": 2,
            "lock_policy": "warn", "sdk": "ekl"}

Every ``SupervisorSettings`` field may appear there under its own name.

``sdk: "official"`` keeps an installed official SDK in charge; ekl-python then cannot
relay (the official SDK cannot be pointed at a private control socket) and simply execs
the plugin in its environment.
"""

from __future__ import annotations

import json
import logging
import os
import sys
from dataclasses import fields
from pathlib import Path
from typing import Any, Dict, List, NoReturn, Optional

from ekuiper import protocol

from .errors import EklError, ManifestError
from .manifest import PluginManifest, load
from .pyargv import parse
from .resolve import LaunchOptions, choose_interpreter, resolve
from .settings import RESTART_POLICIES, SupervisorSettings

log = logging.getLogger("ekl")
#: Supervisor settings by their SupervisorSettings names, plus the lock policy and the SDK.
SUPERVISOR_KEYS = {f.name for f in fields(SupervisorSettings)}
#: ``lock`` is the lock file's path (read by ekl.envs); ``lock_policy`` what drift means.
EKL_SECTION_KEYS = SUPERVISOR_KEYS | {"lock", "lock_policy", "sdk", "virtualEnvType", "env"}
#: Linux prctl option: a signal for this process when its parent dies.
PR_SET_PDEATHSIG = 1


def plugin_for(script: str) -> Optional[PluginManifest]:
    """The plugin whose JSON, beside ``script``, names it as its executable."""
    path = Path(script)
    if not path.is_file():
        return None
    real = path.resolve()
    for j in sorted(real.parent.glob("*.json")):
        try:
            raw = json.loads(j.read_text())
        except (OSError, ValueError):
            continue
        if isinstance(raw, dict) and isinstance(raw.get("executable"), str) and \
                (real.parent / raw["executable"]).resolve() == real:
            return load(j)
    return None


def ekl_section(manifest: PluginManifest) -> Dict[str, Any]:
    sec = manifest.raw.get("ekl") or {}
    name = manifest.path.name
    if not isinstance(sec, dict):
        raise ManifestError([f"{name}: field 'ekl' must be an object like "
                             f'{{"restart": "on-failure"}}'])
    problems = [f"{name}: field 'ekl.{k}' is not known; use one of "
                f"{', '.join(sorted(EKL_SECTION_KEYS))}" for k in sec if k not in EKL_SECTION_KEYS]
    if "restart" in sec and sec["restart"] not in RESTART_POLICIES:
        problems.append(f"{name}: field 'ekl.restart' is {sec['restart']!r}; use "
                        f"{', '.join(RESTART_POLICIES)}")
    if sec.get("lock_policy", "warn") not in ("strict", "warn", "off"):
        problems.append(f"{name}: field 'ekl.lock_policy' is {sec['lock_policy']!r}; use "
                        f"strict, warn or off")
    if sec.get("sdk", "ekl") not in ("ekl", "official"):
        problems.append(f"{name}: field 'ekl.sdk' is {sec['sdk']!r}; use ekl or official")
    for k in SUPERVISOR_KEYS - {"restart"}:
        v = sec.get(k)
        if k in sec and (isinstance(v, bool) or not isinstance(v, (int, float)) or v < 0):
            problems.append(f"{name}: field 'ekl.{k}' must be a number >= 0, not {v!r}")
    if problems:
        raise ManifestError(problems)
    return sec


def _exec(argv: List[str], env: Dict[str, str]) -> NoReturn:
    sys.stdout.flush()
    sys.stderr.flush()
    os.execve(argv[0], argv, env)


def passthrough(args: List[str]) -> NoReturn:
    """Behave as the resolved python: the plugin's env if cwd holds a plugin, else ekl's."""
    manifest = None
    try:
        here = [j for j in Path.cwd().glob("*.json") if j.stem == Path.cwd().name]
        manifest = load(here[0]) if here else None
    except (ManifestError, OSError):
        manifest = None
    choice = choose_interpreter(manifest, LaunchOptions(lock_policy="off"))
    argv = [choice.python, *args]
    if choice.wrap is not None:
        argv = choice.wrap(argv)
    if not os.path.isabs(argv[0]):
        from shutil import which
        argv[0] = which(argv[0]) or argv[0]
    _exec(argv, choice.env)


def die_with_parent() -> None:
    """Get SIGTERM when the parent dies, e.g. a ``conda run`` wrapper eKuiper SIGKILLs.

    eKuiper kills only the process it started; without this, ekl-python (and its plugin)
    would outlive a wrapper and a restarted plugin would find two relays on its socket.
    """
    import ctypes
    import signal

    parent = os.getppid()
    try:
        libc = ctypes.CDLL(None, use_errno=True)
        libc.prctl(PR_SET_PDEATHSIG, int(signal.SIGTERM), 0, 0, 0)
    except (OSError, AttributeError):
        return  # not Linux: the relay still exits when eKuiper's socket goes away
    if os.getppid() != parent:  # the parent died before prctl took effect
        os.kill(os.getpid(), signal.SIGTERM)


def run_plugin(manifest: PluginManifest, conf_arg: Optional[str]) -> int:
    from .relay import Relay

    die_with_parent()

    sec = ekl_section(manifest)
    send_timeout = protocol.DEFAULT_SEND_TIMEOUT_MS
    if conf_arg:
        try:
            send_timeout = protocol.decode_portable_config(["", conf_arg])["sendTimeout"]
        except protocol.ProtocolError:
            log.warning("ekl-python: argv conf %r is not JSON; using defaults", conf_arg)
    opts = LaunchOptions(send_timeout_ms=send_timeout, lock_policy=sec.get("lock_policy", "warn"),
                         create_env=True)
    if sec.get("sdk") == "official":
        res = resolve(manifest, opts)
        if res.info and res.info.sdk_flavour == "official":
            log.info("ekl-python: %s keeps the official SDK; running it without a relay",
                     manifest.name)
            _exec(res.spec.argv, res.spec.env)
    res = resolve(manifest, opts, host_sdk="always")
    sup = SupervisorSettings(**{k: v for k, v in sec.items() if k in SUPERVISOR_KEYS})
    return Relay(manifest, res, sup).run()


def main(argv: Optional[List[str]] = None) -> int:
    args = list(sys.argv[1:] if argv is None else argv)
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(logging.Formatter("%(message)s"))
    root = logging.getLogger("ekl")
    root.handlers[:] = [handler]
    root.propagate = False
    root.setLevel(logging.INFO)
    py = parse(args)
    try:
        manifest = plugin_for(py.target) if py.mode == "script" and py.target else None
        if manifest is None:
            passthrough(args)
        return run_plugin(manifest, py.args[0] if py.args else None)
    except ManifestError as e:
        for line in e.problems:
            print(f"ekl-python: {line}", file=sys.stderr)
        return 2
    except EklError as e:
        print(f"ekl-python: {e}", file=sys.stderr)
        return e.exit_code


def entry() -> None:
    sys.exit(main())


if __name__ == "__main__":
    entry()
