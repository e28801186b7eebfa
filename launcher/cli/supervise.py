"""``ekl supervise``: many plugins under one launcher (``ekl status`` is in ``operate``)."""

from __future__ import annotations

import argparse

from ..errors import EklError
from ..ops.cli import add_supervise_options
from ..settings import RESTART_POLICIES, HostSettings, LaunchOptions, SupervisorSettings
from .common import add_launch_options, launch_options
from .run import _host, add_call_timeout

TYPE_CHECKING = False  # typing is not loaded at run time on the start path (docs/architecture.md)
if TYPE_CHECKING:
    from typing import Any, List, Optional, Tuple


def entries_from_config(cfg: Any) -> List[Any]:
    """The config file's plugins as PluginEntry values (its keys are the settings' names)."""
    from ..supervise.arbiter import PluginEntry

    out = []
    for pc in cfg.plugins:
        launch = dict(pc.launch)
        host = dict(pc.host)
        if "send_timeout_ms" in launch:
            host["plugin_send_timeout_ms"] = launch["send_timeout_ms"]
        if "extra_env" in launch:
            launch["extra_env"] = dict(launch["extra_env"])
        out.append(PluginEntry(pc.path, LaunchOptions(**launch), HostSettings(**host),
                               SupervisorSettings(**pc.supervisor), pc.ekl_section))
    return out


def cmd_supervise(args: argparse.Namespace) -> int:
    from ..ops import config as cfgmod
    from ..ops.sdnotify import Notifier
    from ..supervise.arbiter import Arbiter, PluginEntry

    reload = None
    status_file = args.status_file
    log_dir, log_format = args.log_dir, args.log_format
    if args.config:
        if args.plugins:
            raise EklError("give the plugins on the command line or in --config, not both")
        cfg = cfgmod.load(args.config)
        entries, flows = entries_from_config(cfg), list(cfg.pipelines)
        status_file = status_file or cfg.status_file
        log_dir, log_format = log_dir or cfg.log_dir, log_format or cfg.log_format

        def reload() -> Tuple[List[Any], List[Any]]:
            new = cfgmod.load(args.config)
            return entries_from_config(new), list(new.pipelines)
    else:
        if not args.plugins:
            raise EklError("ekl supervise: give PLUGIN... or --config FILE.toml")
        host = _host(args)
        sup = SupervisorSettings(restart=args.restart, health_interval_s=args.health_interval,
                                 max_rss_mb=args.max_rss, probe_timeout_s=args.probe_timeout,
                                 start_limit=args.start_limit,
                                 start_limit_window_s=args.start_limit_window,
                                 call_timeout_s=host.function_timeout_s)
        opts = launch_options(args)
        entries, flows = [PluginEntry(t, opts, host, sup) for t in args.plugins], []
    configure_logs(log_format, log_dir)
    arbiter = Arbiter(entries, status_file=status_file, reload=reload,
                      notifier=Notifier.from_environ(), flows=flows)
    return arbiter.run()


def configure_logs(log_format: Optional[str], log_dir: Optional[str]) -> None:
    """Timestamped supervisor lines (text or JSON) on stderr; per-plugin files in log_dir."""
    import logging

    from ..ops.logfmt import attach_log_dir, make_formatter

    fmt = log_format or "text"
    for h in logging.getLogger("ekl").handlers:
        h.setFormatter(make_formatter(fmt))
    if log_dir:
        attach_log_dir(log_dir, fmt)


def register(sub: Any) -> None:
    s = sub.add_parser("supervise", help="run plugins under supervision until SIGTERM/Ctrl-C",
                       description="Start every PLUGIN, restart it when it dies, hangs, "
                       "outgrows --max-rss, or a function call or sink record of it stays busy "
                       "longer than --call-timeout (with back-off and a start limit), and "
                       "write their status to --status-file at every health check.")
    s.add_argument("plugins", nargs="*", metavar="PLUGIN")
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
    add_supervise_options(s)
    add_launch_options(s)
    s.set_defaults(func=cmd_supervise)
