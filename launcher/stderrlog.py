"""ekl's own log lines, as plain messages on stderr: the one setup of the ``ekl`` commands
and of ``ekl-python`` (whose stderr eKuiper writes to its log as it is).

It imports logging, which costs ``ekl-python`` about 12 ms at start: ``ekl-python`` runs it
through ``lazylog.when_loaded`` (when something first logs), the CLI once its arguments
are parsed.
"""

from __future__ import annotations

INFO = 20  # logging.INFO, named without loading logging


def log_to_stderr(level: int = INFO, plugin_level: int = INFO) -> None:
    """Send the ``ekl`` loggers' records, ``level`` and above, to stderr as bare messages;
    the plugin output lines (``ekl.plugin.NAME``) from ``plugin_level`` up."""
    import logging
    import sys

    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(logging.Formatter("%(message)s"))
    root = logging.getLogger("ekl")
    root.handlers[:] = [handler]
    root.propagate = False
    root.setLevel(level)
    logging.getLogger("ekl.plugin").setLevel(plugin_level)
