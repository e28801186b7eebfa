"""The one start path: plugin -> interpreter and environment -> socket folders -> instance.

Every verb that starts a plugin (run, call, tail, feed, validate, the pytest plugin,
supervise, ``ekl-python``) goes through ``prepare``, and the unsupervised ones through
``open_plugin`` around it. This is the only place that decides the socket folders and the
environment variables the plugin gets; ``resolve`` decides the interpreter. A test in
tests/test_architecture.py fails if a second place builds a ``PluginInstance``.
"""

from __future__ import annotations

import contextlib
import signal
import sys
import threading
from types import MappingProxyType

from ekuiper import lazylog, protocol
from ekuiper.record import record, replace

from ..plugin import Plugin, load
from ..process import LaunchSpec
from ..process.lifeline import Lifeline, shared
from ..progress import Progress
from ..settings import HostSettings, LaunchOptions
from .resolve import resolve

TYPE_CHECKING = False  # typing is not loaded at run time on the start path (docs/architecture.md)
if TYPE_CHECKING:
    from typing import Iterator, Optional, Tuple

if TYPE_CHECKING:  # the host (and pynng) load when a plugin starts, not with the CLI
    from ..host.instance import PluginInstance

log = lazylog.getLogger("ekl")

#: The rule id ekl's own verbs use for the symbols they start.
RULE = "ekl"


class Interrupted(KeyboardInterrupt):
    """SIGTERM, turned into the same clean unwinding as Ctrl-C."""


@contextlib.contextmanager
def terminate_as_interrupt() -> Iterator[None]:
    """While active, SIGTERM unwinds the main thread like Ctrl-C does."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return

    def handler(signum: int, _frame: object) -> None:
        raise Interrupted(signal.Signals(signum).name)

    old = signal.signal(signal.SIGTERM, handler)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, old)


@record(frozen=True)
class SocketDirs:
    """Where the plugin's sockets live, and which of those folders ekl made (and removes)."""

    data: str
    control: str
    owned: Tuple[str, ...] = ()


def socket_dirs(spec: LaunchSpec, host: HostSettings, relay: bool,
                lifeline: Lifeline) -> SocketDirs:
    """The one decision of the socket folders.

    - ``relay`` (``ekl-python``): data sockets where eKuiper listens (``/tmp`` unless
      ``EKUIPER_IPC_DIR``), the control socket in a private folder the relay serves.
    - ``--ipc-dir``: that folder for everything.
    - ekl's SDK (installed or hosted): a fresh private 0700 folder, so runs never collide.
    - otherwise (the official SDK, Go, ``conda run``): ``/tmp``, as eKuiper uses.

    A folder made here is given to ``lifeline``'s watchdog before it exists.
    """
    from ..early import claim_dir
    from ..host.ipc import private_ipc_dir

    if relay:
        private = claim_dir() or private_ipc_dir(lifeline)
        return SocketDirs(protocol.ipc_dir(), private, (private,))
    if host.ipc_dir:
        return SocketDirs(host.ipc_dir, host.ipc_dir)
    if spec.ekl_sdk:
        private = claim_dir() or private_ipc_dir(lifeline)  # the early start's, if any
        return SocketDirs(private, private, (private,))
    return SocketDirs(protocol.DEFAULT_IPC_DIR, protocol.DEFAULT_IPC_DIR)


def prepare(plugin: Plugin, opts: Optional[LaunchOptions] = None,
            host: Optional[HostSettings] = None, *, host_sdk: str = "missing",
            relay: bool = False, spec: Optional[LaunchSpec] = None,
            lifeline: Optional[Lifeline] = None,
            progress: Optional[Progress] = None) -> PluginInstance:
    """A ``PluginInstance`` ready to start (``start_process``), every decision made.

    ``spec``: an already resolved interpreter (``ekl-python`` resolves before deciding
    whether to relay at all); otherwise it is resolved here.
    """
    from ..host.instance import PluginInstance

    host = host or HostSettings()
    progress = progress or Progress(quiet=True)
    if spec is None:
        with progress.step(f"resolving the environment of {plugin.name}", tty_only=True):
            spec = resolve(plugin, opts, host_sdk=host_sdk)
    lifeline = lifeline or shared()
    dirs = socket_dirs(spec, host, relay, lifeline)
    env = dict(spec.env)
    env[protocol.IPC_DIR_ENV] = dirs.data
    if dirs.control != dirs.data:
        env[protocol.CONTROL_URL_ENV] = protocol.control_url(plugin.name, dirs.control)
    spec = _with_env(spec, env)
    for d in dirs.owned:  # the early start's folder too (held already: nothing is written)
        lifeline.remove_on_death(d)
    return PluginInstance(spec, host, ipc_dir=dirs.data, control_dir=dirs.control,
                          owned_dirs=dirs.owned, lifeline=lifeline)


def _with_env(spec: LaunchSpec, env: dict) -> LaunchSpec:
    return replace(spec, env=MappingProxyType(env))


@contextlib.contextmanager
def open_plugin(target: str | Plugin, opts: Optional[LaunchOptions] = None,
                settings: Optional[HostSettings] = None,
                progress: Optional[Progress] = None) -> Iterator[PluginInstance]:
    """A started plugin; on exit every symbol, process, socket and private folder is gone."""
    plugin = target if isinstance(target, Plugin) else load(target)
    progress = progress or Progress(quiet=True)
    inst = prepare(plugin, opts, settings, progress=progress)
    try:
        with progress.step(f"starting plugin {plugin.name} on "
                           f"{inst.spec.interpreter or 'its executable'}"):
            inst.start_process()
        yield inst
    finally:
        # Ctrl-C or SIGTERM (Interrupted is a KeyboardInterrupt): back to the shell fast
        survivors = inst.close(interrupted=isinstance(sys.exc_info()[1], KeyboardInterrupt))
        if survivors:
            log.error("plugin %s: processes %s survived the stop", plugin.name, survivors)


__all__ = ["prepare", "open_plugin", "socket_dirs", "SocketDirs", "RULE", "Interrupted",
           "terminate_as_interrupt"]
