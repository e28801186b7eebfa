"""The ``ekl`` command. Every verb reports bad input as one line on stderr, never a traceback.

Exit codes: 0 success; 1 the plugin failed (error reply, crash, ack error, drift);
2 bad input (manifest, option, environment); 130 interrupted (Ctrl-C or SIGTERM).
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
from typing import Any, Dict, List, Optional

from ekuiper import protocol
from ekuiper.protocol import FuncMeta, Meta

from . import __version__
from .errors import EklError, FunctionError, HostTimeout, ManifestError
from .manifest import PluginManifest, load
from .progress import Progress
from .resolve import LaunchOptions
from .session import RULE, Interrupted, open_plugin, terminate_as_interrupt
from .settings import HostSettings

log = logging.getLogger("ekl")
EXIT_OK, EXIT_FAILED, EXIT_USAGE, EXIT_INTERRUPTED = 0, 1, 2, 130


# --- shared options ----------------------------------------------------------------------


def _json_arg(text: str, what: str) -> Any:
    try:
        return json.loads(text)
    except ValueError as e:
        raise EklError(f"{what} {text!r} is not JSON ({e}); quote strings, e.g. '\"abc\"'") from None


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


def _pick(manifest: PluginManifest, kind: str, given: Optional[str], required: bool) -> Optional[str]:
    names: List[str] = getattr(manifest, kind)
    if given is not None:
        if given not in names:
            raise EklError(f"{manifest.path.name} lists no {kind[:-1]} {given!r}; it has: "
                           f"{', '.join(names) or 'none'}")
        return given
    if not names and required:
        raise EklError(f"{manifest.path.name} lists no {kind}; give a plugin that has one")
    return names[0] if names else None


def _source_config(manifest: PluginManifest, source: str, args: argparse.Namespace) -> Dict[str, Any]:
    conf = manifest.source_config(source, args.conf_key)
    conf.update(_json_object(args.config, "--config"))
    return conf


def _emit(obj: Any) -> None:
    sys.stdout.write(json.dumps(obj, ensure_ascii=False) + "\n")
    sys.stdout.flush()


# --- verbs -------------------------------------------------------------------------------

def cmd_run(args: argparse.Namespace) -> int:
    from .pipeline import Pipeline

    manifest = load(args.plugin)
    source = _pick(manifest, "sources", args.source, required=True)
    function = _pick(manifest, "functions", args.function, required=False)
    sink = _pick(manifest, "sinks", args.sink, required=False)
    assert source is not None
    config = _source_config(manifest, source, args)
    sink_config = _json_object(args.sink_config, "--sink-config")
    pipe = Pipeline(manifest, source=source, datasource=args.datasource or "", config=config,
                    function=function, field=args.field, sink=sink, sink_config=sink_config,
                    count=args.count, out=_emit)
    return pipe.run(launch_options(args), host_settings(args), supervise=not args.no_restart,
                    progress=Progress(quiet=args.quiet))


def cmd_call(args: argparse.Namespace) -> int:
    manifest = load(args.plugin)
    _pick(manifest, "functions", args.function, required=True)
    values = [_json_arg(a, f"argument {i + 1}") for i, a in enumerate(args.args)]
    with open_plugin(args.plugin, launch_options(args), host_settings(args), manifest,
                     Progress(quiet=args.quiet)) as inst:
        fn = inst.start_function(args.function)
        if args.validate:
            err = fn.validate(values)
            if err is not None:
                print(f"ekl: function {args.function}: Validate: {err}", file=sys.stderr)
                return EXIT_FAILED
        try:
            result = fn.exec(values, FuncMeta(RULE, "call", 0, 0))
        except FunctionError as e:
            print(f"ekl: {e}", file=sys.stderr)
            return EXIT_FAILED
        _emit(result)
    return EXIT_OK


def cmd_tail(args: argparse.Namespace) -> int:
    manifest = load(args.plugin)
    source = _pick(manifest, "sources", args.source, required=True)
    assert source is not None
    config = _source_config(manifest, source, args)
    errors = 0
    with open_plugin(args.plugin, launch_options(args), host_settings(args), manifest,
                     Progress(quiet=args.quiet)) as inst:
        meta = Meta(RULE, f"tail_{source}", 0)
        stream = inst.start_source(source, meta, args.datasource or "", config)
        n = 0
        while args.n is None or n < args.n:
            try:
                msg = stream.recv(args.timeout)
            except HostTimeout as e:
                print(f"ekl: {e}", file=sys.stderr)
                return EXIT_FAILED
            if msg.error is not None:
                errors += 1
                print(f"ekl: source {source}: error: {msg.error}", file=sys.stderr)
                continue
            _emit({"message": msg.message, "meta": msg.meta} if args.meta else msg.message)
            n += 1
        inst.stop_source(source, meta)
    return EXIT_OK


def cmd_feed(args: argparse.Namespace) -> int:
    manifest = load(args.plugin)
    sink = _pick(manifest, "sinks", args.sink, required=True)
    assert sink is not None
    config = _json_object(args.config, "--config")
    if args.require_ack:
        config["requireAck"] = True
    failures = 0
    with open_plugin(args.plugin, launch_options(args), host_settings(args), manifest,
                     Progress(quiet=args.quiet)) as inst:
        meta = Meta(RULE, f"feed_{sink}", 0)
        writer = inst.start_sink(sink, meta, config)
        for lineno, line in enumerate(sys.stdin, 1):
            if not line.strip():
                continue
            try:
                json.loads(line)
            except ValueError as e:
                failures += 1
                print(f"ekl: stdin line {lineno}: not JSON ({e}); skipped", file=sys.stderr)
                continue
            try:
                writer.write(line.strip().encode("utf-8"))
            except EklError as e:
                failures += 1
                print(f"ekl: stdin line {lineno}: {e}", file=sys.stderr)
        # stop while our end is still open: the SDK drains what it already received first
        inst.stop_sink(sink, meta)
        print(f"ekl: fed {writer.written} record(s) to sink {sink}"
              + (f", {failures} failed" if failures else ""), file=sys.stderr)
    return EXIT_FAILED if failures else EXIT_OK


# --- parser ------------------------------------------------------------------------------


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="ekl", description="Run, call, test and supervise eKuiper Python plugins.",
        epilog="Exit codes: 0 ok, 1 the plugin failed, 2 bad input, 130 interrupted.")
    p.add_argument("--version", action="version", version=f"ekl {__version__}")
    p.add_argument("-v", "--verbose", action="count", default=0, help="more log output")
    p.add_argument("-q", "--quiet", action="store_true", help="hide the plugin's own output")
    sub = p.add_subparsers(dest="verb", metavar="VERB")
    sub.required = True

    r = sub.add_parser("run", help="run source -> function -> sink and print each record",
                       description="Start the plugin, start a source, pass each message's "
                       "FIELD through a function (adding its result under the function's "
                       "name), hand the record to a sink (requireAck) and print it as a "
                       "JSON line. Defaults: the plugin's first source, function and sink, "
                       "and the message's first field.")
    r.add_argument("plugin", metavar="PLUGIN", help="plugin folder, NAME.json or zip")
    r.add_argument("--source", metavar="S")
    r.add_argument("--datasource", metavar="D", help="the stream's data source")
    r.add_argument("--conf-key", default="default", metavar="K",
                   help="section of sources/S.yaml to use (default: default)")
    r.add_argument("--config", metavar="JSON", help="source config, merged over the yaml's")
    r.add_argument("--function", metavar="F")
    r.add_argument("--field", metavar="K", help="message field passed to the function")
    r.add_argument("--sink", metavar="K")
    r.add_argument("--sink-config", metavar="JSON", help="sink properties")
    r.add_argument("--count", type=int, metavar="N", help="stop after N records")
    r.add_argument("--no-restart", action="store_true",
                   help="do not restart the plugin if it dies mid-run")
    add_launch_options(r)
    r.set_defaults(func=cmd_run)

    c = sub.add_parser("call", help="call a function once and print its result as JSON")
    c.add_argument("plugin", metavar="PLUGIN")
    c.add_argument("function", metavar="FUNCTION")
    c.add_argument("args", nargs="*", metavar="ARG_JSON", help="arguments, each a JSON value")
    c.add_argument("--validate", action="store_true", help="call Validate first")
    add_launch_options(c)
    c.set_defaults(func=cmd_call)

    t = sub.add_parser("tail", help="print a source's messages as JSON lines")
    t.add_argument("plugin", metavar="PLUGIN")
    t.add_argument("source", metavar="SOURCE", nargs="?")
    t.add_argument("--datasource", metavar="D")
    t.add_argument("--conf-key", default="default", metavar="K")
    t.add_argument("--config", metavar="JSON")
    t.add_argument("-n", type=int, metavar="N", help="stop after N messages")
    t.add_argument("--meta", action="store_true", help="print {message, meta} objects")
    t.add_argument("--timeout", type=float, default=None, metavar="S",
                   help="fail if no message comes for S seconds")
    add_launch_options(t)
    t.set_defaults(func=cmd_tail)

    f = sub.add_parser("feed", help="send JSON lines from stdin to a sink")
    f.add_argument("plugin", metavar="PLUGIN")
    f.add_argument("sink", metavar="SINK", nargs="?")
    f.add_argument("--config", metavar="JSON", help="sink properties")
    f.add_argument("--require-ack", action="store_true",
                   help="set requireAck and report every ack error")
    add_launch_options(f)
    f.set_defaults(func=cmd_feed)

    _register_optional(sub)
    return p


def _register_optional(sub: Any) -> None:
    """Verbs living in other modules register themselves here."""
    from . import cli_authoring, cli_supervise

    cli_supervise.register(sub)
    cli_authoring.register(sub)
    try:
        from ekl.envs.cli import register as register_env
    except ImportError:
        return
    register_env(sub)


def setup_logging(verbose: int, quiet: bool) -> None:
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(logging.Formatter("%(message)s"))
    root = logging.getLogger("ekl")
    root.handlers[:] = [handler]
    root.propagate = False
    root.setLevel(logging.DEBUG if verbose > 1 else logging.INFO)
    logging.getLogger("ekl.plugin").setLevel(logging.WARNING if quiet else logging.INFO)


def main(argv: Optional[List[str]] = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    setup_logging(args.verbose, args.quiet)
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
    except (KeyboardInterrupt, Interrupted):
        print("ekl: interrupted; plugin stopped", file=sys.stderr)
        return EXIT_INTERRUPTED
    except BrokenPipeError:
        return EXIT_OK  # `ekl tail ... | head` closed our stdout


def entry() -> None:
    sys.exit(main())


if __name__ == "__main__":
    entry()
