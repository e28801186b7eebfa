"""The command-line face of the ops package, for the ``ekl`` parser to take in.

``register(sub)`` adds the new verbs (``metrics``, ``restart``, ``stop``, ``start``,
``reset``); ``add_supervise_options`` and ``add_status_options`` add the new flags of the
existing ``supervise`` and ``status`` verbs. Each verb's function takes the parsed
arguments and returns the exit code, raising :class:`~ekl.launcher.errors.EklError` for bad
input, as every ``ekl`` verb does. Only argparse and this package are imported, so the
``ekl`` parser can live wherever the CLI ends up.
"""

from __future__ import annotations

import argparse
from typing import Any, List, Optional

from .control import DEFAULT_TIMEOUT_S, OPS
from .logfmt import LOG_FORMATS

CONTROL_HELP = {
    "restart": "restart plugins of a running launcher and wait until they are RUNNING",
    "stop": "stop plugins of a running launcher and wait until they are STOPPED",
    "start": "start stopped plugins of a running launcher and wait until they are RUNNING",
    "reset": "clear FATAL and the start limit of plugins, and start them again",
}


def _sources(args: argparse.Namespace) -> Optional[List[str]]:
    """--status-file/--status-dir (repeatable), else None: the default status folder."""
    files = getattr(args, "status_file", None)
    files = [files] if isinstance(files, str) else list(files or [])
    return (files + list(getattr(args, "status_dir", None) or [])) or None


def _add_sources(p: argparse.ArgumentParser) -> None:
    p.add_argument("--status-file", action="append", metavar="F",
                   help="a status file `ekl supervise --status-file` writes (repeatable)")
    p.add_argument("--status-dir", action="append", metavar="D",
                   help="a folder of status files, as ekl-python writes (repeatable; default: "
                        "$EKL_STATUS_DIR or /tmp/ekl-status)")


def cmd_metrics(args: argparse.Namespace) -> int:
    from .metrics import main

    return main(listen=args.listen, textfile=args.textfile, status_sources=_sources(args),
                interval=args.interval)


def cmd_control(args: argparse.Namespace) -> int:
    from .control import main

    return main(args.op, args.plugins, all_plugins=args.all, status_sources=_sources(args),
                timeout=args.timeout)


def cmd_status_check(args: argparse.Namespace) -> int:
    """For the ``status`` verb: call this when ``args.check`` is set."""
    from .health import main_check

    return main_check(args.check, _sources(args))


def register(sub: Any) -> None:
    """Add ``metrics`` and the control verbs to the ``ekl`` sub-parsers."""
    m = sub.add_parser("metrics", help="Prometheus metrics of every plugin (serve or textfile)",
                       description="Read the status files at every scrape and serve them as "
                       "Prometheus metrics on --listen (/metrics), or write them to --textfile "
                       "for node_exporter's textfile collector (once, or every --interval "
                       "seconds). Needs the metrics extra (prometheus_client).")
    m.add_argument("--listen", metavar="HOST:PORT",
                   help="serve /metrics here, e.g. 127.0.0.1:9464, [::1]:9464 or :9464 (every "
                        "interface)")
    m.add_argument("--textfile", metavar="PATH", help="write the metrics to PATH atomically "
                   "(a .prom file in node_exporter's textfile directory)")
    m.add_argument("--interval", type=float, metavar="S",
                   help="rewrite --textfile every S seconds (default with --listen: 15; "
                        "without: write once and exit)")
    _add_sources(m)
    m.set_defaults(func=cmd_metrics)

    for op in OPS:
        c = sub.add_parser(op, help=CONTROL_HELP[op],
                           description=f"{CONTROL_HELP[op].capitalize()}. The launcher is found "
                           "through its status file; exit 0 when every plugin reached the state, "
                           "1 when one did not.")
        c.add_argument("plugins", nargs="*", metavar="NAME")
        c.add_argument("--all", action="store_true", help="every plugin of every running launcher")
        c.add_argument("--timeout", type=float, default=DEFAULT_TIMEOUT_S, metavar="S",
                       help=f"wait this long for the state (default: {DEFAULT_TIMEOUT_S:g})")
        _add_sources(c)
        c.set_defaults(func=cmd_control, op=op)


def add_supervise_options(p: argparse.ArgumentParser) -> None:
    """``ekl supervise``: --config, --log-format, --log-dir (PLUGIN... becomes optional)."""
    p.add_argument("--config", metavar="FILE.toml",
                   help="plugins, settings and pipelines from a TOML file (SIGHUP reloads it)")
    p.add_argument("--log-format", choices=LOG_FORMATS, default=None,
                   help="text (timestamped lines, the default) or json (one object per line)")
    p.add_argument("--log-dir", metavar="DIR",
                   help="also write each plugin's lines to DIR/NAME.log (rotated at 10 MB)")


def add_status_options(p: argparse.ArgumentParser) -> None:
    """``ekl status``: --check NAME... (silent; exit 0 RUNNING, 3 not, 4 no status)."""
    p.add_argument("--check", nargs="+", metavar="NAME",
                   help="print nothing and exit 0 if these plugins are RUNNING, else 3 (4: no "
                        "status); for probes")
