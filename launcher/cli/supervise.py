"""``ekl supervise``: many plugins under one launcher (``ekl status`` is in ``ops``)."""

from __future__ import annotations

import argparse
from typing import Any

from ..settings import RESTART_POLICIES, SupervisorSettings
from .common import add_launch_options, host_settings, launch_options


def cmd_supervise(args: argparse.Namespace) -> int:
    from ..supervise.arbiter import Arbiter

    sup = SupervisorSettings(restart=args.restart, health_interval_s=args.health_interval,
                             max_rss_mb=args.max_rss, probe_timeout_s=args.probe_timeout,
                             start_limit=args.start_limit,
                             start_limit_window_s=args.start_limit_window)
    arbiter = Arbiter(args.plugins, launch_options(args), host_settings(args), sup,
                      status_file=args.status_file)
    return arbiter.run()


def register(sub: Any) -> None:
    s = sub.add_parser("supervise", help="run plugins under supervision until SIGTERM/Ctrl-C",
                       description="Start every PLUGIN, restart it when it dies, hangs or "
                       "outgrows --max-rss (with back-off and a start limit), and write their "
                       "status to --status-file at every health check.")
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
    add_launch_options(s)
    s.set_defaults(func=cmd_supervise)
