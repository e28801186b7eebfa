"""Open a plugin for one CLI verb or test: load, resolve, start; and always clean up."""

from __future__ import annotations

import contextlib
import logging
import signal
import threading
from typing import Iterator, Optional

from .instance import PluginInstance
from .manifest import PluginManifest, load
from .process import Lifeline
from .progress import Progress
from .resolve import LaunchOptions, Resolution, resolve
from .settings import HostSettings

log = logging.getLogger("ekl")


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


@contextlib.contextmanager
def open_plugin(target: str, opts: Optional[LaunchOptions] = None,
                settings: Optional[HostSettings] = None,
                manifest: Optional[PluginManifest] = None,
                progress: Optional[Progress] = None) -> Iterator[PluginInstance]:
    """A started plugin; on exit every symbol, process, socket and private folder is gone."""
    manifest = manifest or load(target)
    progress = progress or Progress(quiet=True)
    with progress.step(f"resolving the environment of {manifest.name}", tty_only=True):
        res: Resolution = resolve(manifest, opts)
    lifeline = Lifeline()
    inst = PluginInstance(res.spec, settings, lifeline=lifeline, private_ipc=res.private_ipc)
    try:
        with progress.step(f"starting plugin {manifest.name} on {res.spec.interpreter or 'its executable'}"):
            inst.start_process()
        yield inst
    finally:
        survivors = inst.close()
        lifeline.close()
        if survivors:
            log.error("plugin %s: processes %s survived the stop", manifest.name, survivors)
