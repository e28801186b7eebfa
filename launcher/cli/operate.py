"""Operating running launchers: ``ekl status`` and ``ekl restart/stop/start/reset``.

Exit codes follow the LSB/systemctl convention operators script against:

* ``ekl status``: 0 every listed plugin is RUNNING, 3 one or more is not, 4 no status
  exists (no status file, or no plugin by that name).
* ``ekl restart|stop|start|reset``: 0 every plugin reached the state asked for, 1 one did
  not, 2 bad input (an unknown name), 4 no launcher found.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import textwrap
import time

from ..errors import EklError
from ..supervise.status import (
    NoStatus,
    collect_status_dirs,
    read_status,
    read_status_file,
    status_dir_candidates,
    status_entries,
)
from .common import EXIT_FAILED, EXIT_OK, EXIT_USAGE

TYPE_CHECKING = False  # typing is not loaded at run time on the start path (docs/architecture.md)
if TYPE_CHECKING:
    from typing import Any, Dict, List, Optional, Tuple

EXIT_NOT_RUNNING = 3


def _fmt_uptime(s: float) -> str:
    s = int(s)
    return f"{s // 3600}h{s % 3600 // 60:02d}m" if s >= 3600 else f"{s // 60}m{s % 60:02d}s"


def _last(p: Dict[str, Any]) -> str:
    if p.get("fatal_reason"):
        return str(p["fatal_reason"])
    if p.get("last_restarts"):
        return str(p["last_restarts"][-1].get("reason", ""))
    return str(p.get("last_exit") or "")


#: Narrower than this, the LAST column goes on lines of its own below the row.
MIN_LAST_WIDTH = 30


def _table(rows: List[List[str]], width: Optional[int]) -> List[str]:
    """Columns padded; the last column wraps (under itself, or below the row when the
    terminal is narrow) instead of being cut. ``width`` None: never wrap."""
    widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]) - 1)]
    indent = sum(widths) + 2 * len(widths)
    out = []
    for r in rows:
        head = "  ".join(c.ljust(w) for c, w in zip(r, widths)) + "  "
        last = r[-1]
        if width is None or indent + len(last) <= width:
            out.append((head + last).rstrip())
            continue
        if width - indent >= MIN_LAST_WIDTH:
            parts = textwrap.wrap(last, width - indent, break_on_hyphens=False)
            out.append((head + parts[0]).rstrip())
            out.extend(" " * indent + part for part in parts[1:])
        else:
            out.append(head.rstrip()[:width])
            out.extend("    " + part for part in
                       textwrap.wrap(last, max(10, width - 4), break_on_hyphens=False))
    return out


def render_table(status: Dict[str, Any], width: Optional[int] = None,
                 symbols: bool = False) -> str:
    """The status table; ``width`` None: never wrap (``--wide``)."""
    rows: List[List[str]] = [["NAME", "STATE", "PID", "UPTIME", "RESTARTS", "RSS", "CPU%",
                              "SYMBOLS", "CONTAINMENT", "LAST"]]
    for p in status.get("plugins", []):
        rows.append([str(p.get("name")), str(p.get("state")), str(p.get("pid") or "-"),
                     _fmt_uptime(p.get("uptime") or 0), str(p.get("restarts", 0)),
                     f"{(p.get('rss') or 0) / 1048576:.0f}M",
                     f"{p.get('cpu_percent') or 0:.1f}", str(len(p.get("symbols") or [])),
                     str(p.get("containment") or "-"), _last(p)])
        if symbols:
            stats = {(s.get("symbol"), s.get("rule")): s for s in p.get("symbol_stats") or []}
            for s in p.get("symbols") or []:
                rule = (s.get("meta") or {}).get("ruleId", "")
                st = stats.get((s.get("symbol"), rule), {})
                counts = ", ".join(f"{k} {st[k]}" for k in ("messages", "records", "acks",
                                                            "calls", "errors") if st.get(k))
                err = f"; last error: {st['last_error']}" if st.get("last_error") else ""
                rows.append([f"  {s.get('type')}:{s.get('symbol')}", "", "", "", "", "", "",
                             "", "", f"rule {rule or '-'}{'; ' + counts if counts else ''}{err}"])
    lines = _table(rows, width)
    age = time.time() - (status.get("written_at") or time.time())
    modes = sorted({str(p["containment"]) for p in status.get("plugins", [])
                    if p.get("containment")})
    contained = f"; containment: {', '.join(modes)}" if modes else ""
    lines.append(f"(status written {age:.0f} s ago by pid {status.get('launcher_pid')}"
                 f"{contained})")
    return "\n".join(lines)


def load_status(status_file: Optional[str]) -> Dict[str, Any]:
    if status_file:
        return read_status_file(status_file)  # NoStatus (exit 4) when there is none
    return collect_status_dirs(status_dir_candidates())


def _select(status: Dict[str, Any], names: List[str], where: str) -> List[Dict[str, Any]]:
    plugins = status.get("plugins") or []
    if not names:
        if not plugins:
            raise NoStatus(f"no plugin status found ({where}); is `ekl supervise` or eKuiper "
                           f"with ekl-python running?")
        return plugins
    by_name = {p.get("name"): p for p in plugins}
    missing = [n for n in names if n not in by_name]
    if missing:
        raise NoStatus(f"no status for plugin {', '.join(missing)} ({where}); known: "
                       f"{', '.join(map(str, by_name)) or 'none'}")
    return [by_name[n] for n in names]


def _where(args: argparse.Namespace) -> str:
    return f"--status-file {args.status_file}" if args.status_file else \
        f"status folders {', '.join(status_dir_candidates())}"


def cmd_status(args: argparse.Namespace) -> int:
    status = load_status(args.status_file)
    names = list(args.check or args.names or [])
    selected = _select(status, names, _where(args))
    down = [p for p in selected if p.get("state") != "RUNNING"]
    if args.check is not None:  # a probe: silent on success
        for p in down:
            print(f"ekl: plugin {p.get('name')} is {p.get('state')}"
                  + (f": {_last(p)}" if _last(p) else ""), file=sys.stderr)
        return EXIT_NOT_RUNNING if down else EXIT_OK
    shown = dict(status, plugins=selected)
    if args.json:
        json.dump(shown, sys.stdout, indent=2)
        sys.stdout.write("\n")
    else:
        from shutil import get_terminal_size  # here: shutil loads bz2 and lzma

        width = None if args.wide or not sys.stdout.isatty() else \
            get_terminal_size((120, 24)).columns
        print(render_table(shown, width, symbols=args.symbols))
    return EXIT_NOT_RUNNING if down else EXIT_OK


# --- control verbs -------------------------------------------------------------------------


def _launchers(args: argparse.Namespace) -> List[Tuple[str, Dict[str, Any]]]:
    """(control socket, status document) of every launcher the status files name."""
    if args.status_file:
        docs = [load_status(args.status_file)]
    else:  # the one folder walk (bounded, links in folders not followed)
        found = [read_status(f, follow) for f, follow in status_entries(
            [d for d in status_dir_candidates() if os.path.isdir(d)])]
        docs = [d for d in found if "error" not in d]
    out = []
    for doc in docs:
        path = doc.get("control")
        if isinstance(path, str) and path:
            out.append((path, doc))
    return out


def cmd_control(args: argparse.Namespace) -> int:
    from ..supervise.control import request

    op = args.verb
    if not args.all and not args.names:
        raise EklError(f"ekl {op}: name the plugins, or give --all")
    launchers = _launchers(args)
    if not launchers:
        raise NoStatus(f"no running launcher found ({_where(args)}); is `ekl supervise` or "
                       f"eKuiper with ekl-python running?")
    wanted = set(args.names or [])
    found: set = set()
    failed = False
    for path, doc in launchers:
        here = [str(p.get("name")) for p in doc.get("plugins") or []]
        names = here if args.all else [n for n in here if n in wanted]
        if not names:
            continue
        found.update(names)
        reply = request(path, op, names, timeout_s=args.timeout)
        if reply.get("error") and not reply.get("results"):
            print(f"ekl: {op}: {reply['error']}", file=sys.stderr)
            failed = True
            continue
        for r in reply.get("results") or []:
            if r.get("ok"):
                print(f"{r.get('name')}: {r.get('state')}")
            else:
                failed = True
                print(f"ekl: {op} {r.get('name')}: {r.get('error') or r.get('state')}",
                      file=sys.stderr)
    missing = sorted(wanted - found)
    if missing:
        print(f"ekl: {op}: no plugin {', '.join(missing)} in any running launcher "
              f"({_where(args)})", file=sys.stderr)
        return EXIT_USAGE
    return EXIT_FAILED if failed else EXIT_OK


def register(sub: Any) -> None:
    st = sub.add_parser("status", help="show plugin status (ekl supervise, or ekl-python)",
                        description="With --status-file, the status `ekl supervise` writes; "
                        "without it, every plugin eKuiper runs through ekl-python (one file "
                        "per plugin in $EKL_STATUS_DIR, default $XDG_RUNTIME_DIR/ekl, else "
                        "/tmp/ekl-status-<uid>; both defaults are read). Exit 0 when every "
                        "listed plugin is RUNNING, 3 when one is not, 4 when no status "
                        "exists (LSB/systemctl convention).")
    st.add_argument("names", nargs="*", metavar="NAME", help="only these plugins")
    st.add_argument("--status-file", metavar="F")
    st.add_argument("--json", action="store_true", help="print the JSON as written")
    st.add_argument("--wide", action="store_true", help="never wrap the LAST column")
    st.add_argument("-s", "--symbols", action="store_true",
                    help="a row per running symbol, with its counters")
    st.add_argument("--check", nargs="+", metavar="NAME",
                    help="probe: print nothing and exit 0 when every NAME is RUNNING, else "
                         "one line per plugin that is not and exit 3 (4: unknown)")
    st.set_defaults(func=cmd_status)

    for op, text in (("restart", "restart plugins (journal replayed; transparent to eKuiper)"),
                     ("stop", "stop plugins and keep them stopped (until `ekl start`)"),
                     ("start", "start stopped, exited or FATAL plugins"),
                     ("reset", "clear FATAL and the start limit, and start the plugin")):
        c = sub.add_parser(op, help=text, description=f"{text[0].upper()}{text[1:]}. Waits "
                           f"for the resulting state; exit 0 when every plugin reached it, 1 "
                           f"when one did not, 2 for an unknown name, 4 when no launcher runs.")
        c.add_argument("names", nargs="*", metavar="NAME")
        c.add_argument("--all", action="store_true", help="every plugin")
        c.add_argument("--status-file", metavar="F",
                       help="the launcher `ekl supervise --status-file F` runs (default: every "
                            "ekl-python's status folder)")
        c.add_argument("--timeout", type=float, default=60.0, metavar="S",
                       help="wait at most S seconds for the resulting state (default: 60)")
        c.set_defaults(func=cmd_control)
