"""The command-line face of the ops package, for the ``ekl`` parser to take in.

``register(sub)`` adds ``ekl metrics``; ``add_supervise_options`` adds ``--config``,
``--log-format`` and ``--log-dir`` to ``ekl supervise``. (``ekl status`` and the control
verbs live in ``cli/operate.py``, the control socket in ``supervise/control.py``.) Each
verb's function takes the parsed arguments and returns the exit code, raising EklError for bad
input, as every ``ekl`` verb does. Only argparse and this package are imported, so the
``ekl`` parser can live wherever the CLI ends up.
"""

from __future__ import annotations

import argparse

from .logfmt import LOG_FORMATS

TYPE_CHECKING = False  # typing is not loaded at run time on the start path (docs/architecture.md)
if TYPE_CHECKING:
    from typing import Any, List, Optional


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
                        "$EKL_STATUS_DIR, else $XDG_RUNTIME_DIR/ekl and /tmp/ekl-status-<uid>)")


def cmd_metrics(args: argparse.Namespace) -> int:
    from .metrics import main

    return main(listen=args.listen, textfile=args.textfile, status_sources=_sources(args),
                interval=args.interval)


def register(sub: Any) -> None:
    """Add ``metrics`` to the ``ekl`` sub-parsers."""
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


def add_supervise_options(p: argparse.ArgumentParser) -> None:
    """``ekl supervise``: --config, --log-format, --log-dir (PLUGIN... becomes optional)."""
    p.add_argument("--config", metavar="FILE.toml",
                   help="plugins, settings and pipelines from a TOML file (SIGHUP reloads it)")
    p.add_argument("--log-format", choices=LOG_FORMATS, default=None,
                   help="text (timestamped lines, the default) or json (one object per line)")
    p.add_argument("--log-dir", metavar="DIR",
                   help="also write each plugin's lines to DIR/NAME.log (rotated at 10 MB)")
