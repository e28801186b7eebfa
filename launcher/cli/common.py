"""What every verb shares: exit codes, launch options, JSON arguments, symbol picking."""

from __future__ import annotations

import argparse
import json
import sys

from ekuiper import protocol

from ..errors import EklError
from ..plugin import Plugin
from ..settings import HostSettings, LaunchOptions

TYPE_CHECKING = False  # typing is not loaded at run time on the start path (docs/architecture.md)
if TYPE_CHECKING:
    from typing import Any, Dict, List, Optional

EXIT_OK, EXIT_FAILED, EXIT_USAGE, EXIT_INTERRUPTED = 0, 1, 2, 130
#: 128 + SIGTERM, the shell's convention for a process ended by SIGTERM
EXIT_TERMINATED = 143


def _json_arg(text: str, what: str) -> Any:
    """A JSON value from the command line, by the wire's rules (``protocol.loads_strict``:
    finite numbers, nesting no deeper than the SDK accepts), so a value the plugin would
    refuse is a one-line error before anything starts."""
    shown = text if len(text) <= 60 else text[:57] + "..."
    try:
        return protocol.loads_strict(text)
    except protocol.ProtocolError as e:
        if str(e).startswith("not JSON ("):
            raise EklError(f"{what} {shown!r} is {e}; quote strings, e.g. '\"abc\"'") from None
        raise EklError(f"{what} {shown!r} is {e}; give a value eKuiper could send") from None


def _json_object(text: Optional[str], what: str) -> Dict[str, Any]:
    if not text:
        return {}
    v = _json_arg(text, what)
    if not isinstance(v, dict):
        raise EklError(f"{what} must be a JSON object like '{{\"interval\": 0.1}}', got {text!r}")
    return v


def add_launch_options(p: argparse.ArgumentParser) -> None:
    g = p.add_argument_group("launch")
    g.add_argument("--python", metavar="PATH", help="interpreter to run the plugin with "
                   "(overrides $EKL_PYTHON_BIN, --ekuiper-conf and the plugin's env)")
    g.add_argument("--ekuiper-conf", metavar="KUIPER_YAML",
                   help="read portable.pythonBin (and check the settings) from eKuiper's kuiper.yaml")
    g.add_argument("--conda-run", action="store_true",
                   help="start through `conda run --no-capture-output -n ENV` as eKuiper does")
    g.add_argument("--lock", choices=("strict", "warn", "off"), default="warn",
                   help="what to do when the environment drifted from its lock file (default: warn)")
    g.add_argument("--init-timeout", type=float, default=HostSettings.init_timeout_s,
                   metavar="S", help="seconds to wait for the plugin's handshake (default: 5)")
    g.add_argument("--send-timeout", type=int, default=protocol.DEFAULT_SEND_TIMEOUT_MS,
                   metavar="MS", help="sendTimeout handed to the plugin in argv[1] (default: 1000)")
    g.add_argument("--ipc-dir", metavar="DIR", help="socket folder (default: a private one "
                   "when the plugin's SDK supports it, else /tmp as eKuiper uses)")
    g.add_argument("--log-file", metavar="FILE", help="also write the plugin's output to FILE "
                   "(rotated at 10 MB)")


def launch_options(args: argparse.Namespace) -> LaunchOptions:
    return LaunchOptions(python=args.python, ekuiper_conf=args.ekuiper_conf,
                         conda_run=args.conda_run, send_timeout_ms=args.send_timeout,
                         lock_policy=args.lock, log_file=args.log_file)


def host_settings(args: argparse.Namespace) -> HostSettings:
    return HostSettings(init_timeout_s=args.init_timeout, ipc_dir=args.ipc_dir,
                        plugin_send_timeout_ms=args.send_timeout)


def _pick(manifest: Plugin, kind: str, given: Optional[str], required: bool) -> Optional[str]:
    names: List[str] = getattr(manifest, kind)
    if given is not None:
        if given not in names:
            raise EklError(f"{manifest.path.name} lists no {kind[:-1]} {given!r}; it has: "
                           f"{', '.join(names) or 'none'}")
        return given
    if not names and required:
        raise EklError(f"{manifest.path.name} lists no {kind}; give a plugin that has one")
    return names[0] if names else None


def _source_config(manifest: Plugin, source: str, args: argparse.Namespace) -> Dict[str, Any]:
    conf = manifest.source_config(source, args.conf_key)
    conf.update(_json_object(args.config, "--config"))
    return conf


def _emit(obj: Any) -> None:
    sys.stdout.write(json.dumps(obj, ensure_ascii=False) + "\n")
    sys.stdout.flush()
