"""The console scripts (``ekl``, ``ekl-python``): the early start first, then the command.

Kept apart from the commands themselves so that nothing but ``early.py`` (``os`` and
``sys``) loads before the early start has spawned the plugin; the command's own modules
load while the plugin boots.
"""

import sys

from .early import start


def ekl() -> None:
    """The ``ekl`` command."""
    start("ekl", sys.argv[1:])
    from .cli import entry

    entry()


def ekl_python() -> None:
    """The ``ekl-python`` command (eKuiper's ``pythonBin``)."""
    start("ekl-python", sys.argv[1:])
    from .pythonbin import entry

    entry()
