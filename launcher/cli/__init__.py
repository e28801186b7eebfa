"""The ``ekl`` command. Every verb reports bad input as one line on stderr, never a traceback.

Exit codes: 0 success; 1 the plugin failed (error reply, crash, ack error, drift);
2 bad input (manifest, option, environment); 130 interrupted (Ctrl-C); 143 SIGTERM.
"""

from __future__ import annotations

import argparse
import logging
import os
import sys

from .. import __version__
from ..early import arm
from ..errors import EklError, ManifestError
from ..ops import cli as ops_cli
from ..start import Interrupted, terminate_as_interrupt
from ..stderrlog import log_to_stderr
from . import authoring, env, operate, run, supervise
from .common import EXIT_FAILED, EXIT_INTERRUPTED, EXIT_OK, EXIT_TERMINATED, EXIT_USAGE

TYPE_CHECKING = False  # typing is not loaded at run time on the start path (docs/architecture.md)
if TYPE_CHECKING:
    from typing import Any, List, Optional

log = logging.getLogger("ekl")


# --- parser ------------------------------------------------------------------------------


def terminal_columns() -> int:
    """``shutil.get_terminal_size().columns``, without shutil (see ``Formatter``)."""
    try:
        columns = int(os.environ.get("COLUMNS", "0"))
    except ValueError:
        columns = 0
    if columns <= 0:
        try:
            columns = os.get_terminal_size(sys.__stdout__.fileno()).columns
        except (AttributeError, ValueError, OSError):
            columns = 0
    return columns if columns > 0 else 80


class Formatter(argparse.HelpFormatter):
    """argparse's help formatter, measuring the terminal itself: argparse makes one for
    every ``add_argument``, and the stock one imports shutil (with bz2, lzma and zlib), 5 ms
    of every ``ekl`` command before it starts anything."""

    def __init__(self, prog: str, indent_increment: int = 2, max_help_position: int = 24,
                 width: Optional[int] = None) -> None:
        super().__init__(prog, indent_increment, max_help_position,
                         terminal_columns() - 2 if width is None else width)


class Parser(argparse.ArgumentParser):
    """An ArgumentParser whose help uses ``Formatter``; its sub-parsers are Parsers too
    (argparse makes them of the parent's class)."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        kwargs.setdefault("formatter_class", Formatter)
        super().__init__(*args, **kwargs)


def build_parser() -> argparse.ArgumentParser:
    p = Parser(
        prog="ekl", description="Run, call, test and supervise eKuiper Python plugins.",
        epilog="Exit codes: 0 ok, 1 the plugin failed, 2 bad input, 130 interrupted, "
               "143 terminated (SIGTERM).")
    p.add_argument("--version", action="version", version=f"ekl {__version__}")
    p.add_argument("-v", "--verbose", action="count", default=0, help="more log output")
    p.add_argument("-q", "--quiet", action="store_true", help="hide the plugin's own output")
    sub = p.add_subparsers(dest="verb", metavar="VERB")
    sub.required = True

    for verbs in (run, supervise, operate, authoring, env):  # each module registers its verbs
        verbs.register(sub)
    ops_cli.register(sub)  # ekl metrics
    return p


def setup_logging(verbose: int, quiet: bool) -> None:
    log_to_stderr(logging.DEBUG if verbose > 1 else logging.INFO,
                  logging.WARNING if quiet else logging.INFO)


def main(argv: Optional[List[str]] = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    setup_logging(args.verbose, args.quiet)
    payload = getattr(args, "early_payload", None)
    if payload is not None:  # a verb that starts one plugin: the early start may record it
        arm(payload(args))
    try:
        with terminate_as_interrupt():
            return int(args.func(args) or 0)
    except ManifestError as e:
        for line in e.problems:
            print(f"ekl: {line}", file=sys.stderr)
        return EXIT_USAGE
    except EklError as e:
        print(f"ekl: {e}", file=sys.stderr)
        return e.exit_code
    except (KeyboardInterrupt, Interrupted) as e:
        print("ekl: interrupted; plugin stopped", file=sys.stderr)
        return EXIT_TERMINATED if isinstance(e, Interrupted) else EXIT_INTERRUPTED
    except BrokenPipeError:
        return EXIT_OK  # `ekl tail ... | head` closed our stdout
    except Exception as e:  # noqa: BLE001 - a bug must still be one line, not a traceback
        log.debug("internal error", exc_info=True)
        text = " ".join(str(e).split())[:300]
        print(f"ekl: internal error: {type(e).__name__}: {text} (run with -vv for the "
              f"traceback, and please report it)", file=sys.stderr)
        return EXIT_FAILED


def entry() -> None:
    code = main()
    if code in (EXIT_INTERRUPTED, EXIT_TERMINATED):
        # Interrupted: the plugin is already stopped; run the exit handlers (the lifeline's
        # close) and skip the interpreter's module teardown, which alone can take 0.3 s, so
        # the shell is back within 0.5 s of Ctrl-C.
        import atexit
        import os

        atexit._run_exitfuncs()
        for stream in (sys.stdout, sys.stderr):
            try:
                stream.flush()
            except (OSError, ValueError):
                pass
        os._exit(code)
    sys.exit(code)


if __name__ == "__main__":
    entry()
