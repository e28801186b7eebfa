"""``ekl supervise`` and ``ekl status``: many plugins under one launcher, and their status."""

from __future__ import annotations

import argparse
import json
import sys
import time
from typing import Any, Dict, List

from ..settings import RESTART_POLICIES, SupervisorSettings
from ..supervise.status import collect_status_dir, read_status_file, status_dir
from .common import add_launch_options, launch_options
from .run import _host, add_call_timeout


def cmd_supervise(args: argparse.Namespace) -> int:
    from ..supervise.arbiter import Arbiter

    host = _host(args)
    sup = SupervisorSettings(restart=args.restart, health_interval_s=args.health_interval,
                             max_rss_mb=args.max_rss, probe_timeout_s=args.probe_timeout,
                             start_limit=args.start_limit,
                             start_limit_window_s=args.start_limit_window,
                             call_timeout_s=host.function_timeout_s)
    arbiter = Arbiter(args.plugins, launch_options(args), host, sup,
                      status_file=args.status_file)
    return arbiter.run()


def _fmt_uptime(s: float) -> str:
    s = int(s)
    return f"{s // 3600}h{s % 3600 // 60:02d}m" if s >= 3600 else f"{s // 60}m{s % 60:02d}s"


def render_table(status: Dict[str, Any]) -> str:
    rows: List[List[str]] = [["NAME", "STATE", "PID", "UPTIME", "RESTARTS", "RSS", "CPU%",
                              "SYMBOLS", "LAST"]]
    for p in status.get("plugins", []):
        last = ""
        if p.get("fatal_reason"):
            last = p["fatal_reason"]
        elif p.get("last_restarts"):
            last = p["last_restarts"][-1]["reason"]
        rows.append([p["name"], p["state"], str(p["pid"] or "-"), _fmt_uptime(p["uptime"]),
                     str(p["restarts"]), f"{p['rss'] / 1048576:.0f}M", f"{p['cpu_percent']:.1f}",
                     str(len(p["symbols"])), last[:60]])
    widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]))]
    lines = ["  ".join(c.ljust(w) for c, w in zip(r, widths)).rstrip() for r in rows]
    age = time.time() - status.get("written_at", time.time())
    lines.append(f"(status written {age:.0f} s ago by pid {status.get('launcher_pid')})")
    return "\n".join(lines)


def cmd_status(args: argparse.Namespace) -> int:
    if args.status_file:
        status = read_status_file(args.status_file)
    else:
        status = collect_status_dir(status_dir())
    if args.json:
        json.dump(status, sys.stdout, indent=2)
        sys.stdout.write("\n")
    else:
        print(render_table(status))
    return 0


def register(sub: Any) -> None:
    s = sub.add_parser("supervise",
                       help="run plugins under supervision until SIGTERM, SIGHUP or Ctrl-C",
                       description="Start every PLUGIN, restart it when it dies, hangs or "
                       "outgrows --max-rss, or a function call or sink record of it stays busy "
                       "longer than --call-timeout (with back-off and a start limit), and "
                       "write their status to --status-file at every health check. SIGTERM, "
                       "SIGHUP and Ctrl-C stop every plugin; the status file then says "
                       "STOPPED.")
    s.add_argument("plugins", nargs="+", metavar="PLUGIN")
    s.add_argument("--status-file", metavar="F", help="write JSON status here (atomically)")
    s.add_argument("--health-interval", type=float, default=SupervisorSettings.health_interval_s,
                   metavar="S", help="seconds between health checks (default: 2)")
    s.add_argument("--probe-timeout", type=float, default=SupervisorSettings.probe_timeout_s,
                   metavar="S", help="a ping unanswered this long means hung (default: 3)")
    s.add_argument("--max-rss", type=float, default=None, metavar="MB",
                   help="restart a plugin whose tree stays above MB of resident memory")
    s.add_argument("--restart", choices=RESTART_POLICIES, default="on-failure",
                   help="restart policy (default: on-failure)")
    s.add_argument("--start-limit", type=int, default=SupervisorSettings.start_limit, metavar="N",
                   help="more than N starts within --start-limit-window makes a plugin FATAL")
    s.add_argument("--start-limit-window", type=float,
                   default=SupervisorSettings.start_limit_window_s, metavar="S")
    add_call_timeout(s)
    add_launch_options(s)
    s.set_defaults(func=cmd_supervise)

    st = sub.add_parser("status", help="show plugin status (ekl supervise, or ekl-python)",
                        description="With --status-file, the status `ekl supervise` writes; "
                        "without it, every plugin eKuiper runs through ekl-python (one file "
                        "per plugin in $EKL_STATUS_DIR, default /tmp/ekl-status).")
    st.add_argument("--status-file", metavar="F")
    st.add_argument("--json", action="store_true", help="print the JSON as written")
    st.set_defaults(func=cmd_status)
