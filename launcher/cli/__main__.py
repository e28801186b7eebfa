"""``python -m ekl.launcher.cli``: the ``ekl`` command (ekl-python builds envs through it)."""

from . import entry

entry()
