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

import os
import sys
from pathlib import Path

from ekuiper import lazylog, protocol

from ..errors import EklError, ManifestError
from ..plugin import Plugin, load, plugin_for_script
from ..settings import LaunchOptions
from ..start.resolve import choose_interpreter, resolve
from ..stderrlog import log_to_stderr
from .pyargv import parse

TYPE_CHECKING = False  # typing is not loaded at run time on the start path (docs/architecture.md)
if TYPE_CHECKING:
    from typing import Dict, List, NoReturn, Optional

log = lazylog.getLogger("ekl")
#: Linux prctl option: a signal for this process when its parent dies.
PR_SET_PDEATHSIG = 1


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


def run_plugin(manifest: Plugin, conf_arg: Optional[str]) -> int:
    from ..start import prepare

    die_with_parent()

    sec = manifest.ekl
    send_timeout = protocol.DEFAULT_SEND_TIMEOUT_MS
    if conf_arg:
        try:
            send_timeout = protocol.decode_portable_config(["", conf_arg])["sendTimeout"]
        except protocol.ProtocolError:
            log.warning("ekl-python: argv conf %r is not JSON; using defaults", conf_arg)
    opts = LaunchOptions(send_timeout_ms=send_timeout, lock_policy=sec.lock_policy or "warn",
                         create_env=True)
    if sec.sdk == "official":
        spec = resolve(manifest, opts)
        if spec.sdk == "official":
            log.info("ekl-python: %s keeps the official SDK; running it without a relay",
                     manifest.name)
            _exec(list(spec.argv), dict(spec.env))
    from ..early import arm
    from ..fsafe import STATUS_DIR_ENV, default_status_dir, ensure_private_dir

    arm()  # eKuiper's command line never changes: the next start may begin at once
    # the plugin's first lines wait for eKuiper's first answer (the relay loads logging then)
    lazylog.hold_until_loaded()

    # bad input stops us before anything starts
    status_folder = str(ensure_private_dir(default_status_dir(), "status folder",
                                           STATUS_DIR_ENV))
    instance = prepare(manifest, opts, host_sdk="always", relay=True)
    # eKuiper's first command waits for the plugin's own start: spawn it now, and load the
    # relay (watcher, status, control socket) while it boots; the watcher's first start
    # then only waits for the handshake.
    try:
        try:
            instance.spawn()
        except EklError:
            pass  # the watcher's first start tries again, and reports and backs off
        from .relay import Relay

        relay = Relay(manifest, instance, sec.supervisor_settings(), status_folder)
    except BaseException:
        instance.close(interrupted=True)
        raise
    return relay.run()


def main(argv: Optional[List[str]] = None) -> int:
    args = list(sys.argv[1:] if argv is None else argv)
    lazylog.when_loaded(log_to_stderr, lazylog.INFO)  # eKuiper logs our stderr
    py = parse(args)
    try:
        manifest = plugin_for_script(py.target) if py.mode == "script" and py.target else None
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
