"""The console scripts (``ekl``, ``ekl-python``): the early start first, then the command.

Kept apart from the commands themselves so that nothing but ``early.py`` (``os`` and
``sys``) loads before the early start has spawned the plugin; the command's own modules
load while the plugin boots.
"""

from __future__ import annotations

import sys

from .early import start

TYPE_CHECKING = False  # typing costs 3-5 ms to import, before the early start
if TYPE_CHECKING:
    from typing import Callable

#: 128 + SIGINT, as the commands exit on Ctrl-C (``cli.common.EXIT_INTERRUPTED``).
EXIT_INTERRUPTED = 130


def _run(program: str, load: Callable[[], Callable[[], None]]) -> None:
    """Ctrl-C before a command's own handling is in place (while it loads, with its
    plugin already booting) is a quiet exit 130 too; the plugin is killed on exit."""
    try:
        start(program, sys.argv[1:])
        entry = load()
        entry()
    except KeyboardInterrupt:
        sys.exit(EXIT_INTERRUPTED)


def _cli() -> Callable[[], None]:
    from .cli import entry

    return entry


def _pythonbin() -> Callable[[], None]:
    from .pythonbin import entry

    return entry


def ekl() -> None:
    """The ``ekl`` command."""
    _run("ekl", _cli)


def ekl_python() -> None:
    """The ``ekl-python`` command (eKuiper's ``pythonBin``)."""
    _run("ekl-python", _pythonbin)
