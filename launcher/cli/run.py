"""``ekl run``, ``call``, ``tail`` and ``feed``: a plugin's symbols driven from the shell."""

from __future__ import annotations

import argparse
import json
import sys

from ekuiper.protocol import FuncMeta, Meta
from ekuiper.record import replace

from ..errors import EklError, FunctionError, HostTimeout
from ..plugin import load
from ..process import check_writable_file
from ..progress import Progress
from ..settings import DEFAULT_CALL_TIMEOUT_S, HostSettings
from ..start import RULE, open_plugin
from .common import (
    EXIT_FAILED,
    EXIT_OK,
    _emit,
    _json_arg,
    _json_object,
    _pick,
    _source_config,
    add_launch_options,
    host_settings,
    launch_options,
)

TYPE_CHECKING = False  # typing is not loaded at run time on the start path (docs/architecture.md)
if TYPE_CHECKING:
    from typing import Any


def add_call_timeout(p: argparse.ArgumentParser) -> None:
    p.add_argument("--call-timeout", type=float, default=DEFAULT_CALL_TIMEOUT_S, metavar="S",
                   help="a function call or sink write unanswered this long is a hang "
                        "(eKuiper's recvTimeout; default: 5)")


def _host(args: argparse.Namespace) -> HostSettings:
    """The host settings of a verb, with its --call-timeout and checked --log-file."""
    if args.log_file:
        check_writable_file(args.log_file, "--log-file")
    h = host_settings(args)
    t = getattr(args, "call_timeout", None)
    if t is not None:
        if not t > 0:
            raise EklError(f"--call-timeout {t}: give a number of seconds above 0, e.g. 5")
        h = replace(h, function_timeout_s=t, ack_timeout_s=t)
    return h


#: ``ekl tail`` asks the plugin whether its source failed after this much silence.
TAIL_CHECK_S = 1.0


def cmd_run(args: argparse.Namespace) -> int:
    from ..supervise.pipeline import Pipeline

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
    return pipe.run(launch_options(args), _host(args), supervise=not args.no_restart,
                    progress=Progress(quiet=args.quiet))


def cmd_call(args: argparse.Namespace) -> int:
    manifest = load(args.plugin)
    _pick(manifest, "functions", args.function, required=True)
    values = [_json_arg(a, f"argument {i + 1}") for i, a in enumerate(args.args)]
    host = _host(args)
    with open_plugin(manifest, launch_options(args), host,
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
        except HostTimeout:
            if not inst.alive():
                raise
            from ..supervise.pipeline import hung_message

            print(f"ekl: {hung_message(f'function {args.function}', host.function_timeout_s)}",
                  file=sys.stderr)
            return EXIT_FAILED
        _emit(result)
    return EXIT_OK


def cmd_tail(args: argparse.Namespace) -> int:
    manifest = load(args.plugin)
    source = _pick(manifest, "sources", args.source, required=True)
    assert source is not None
    config = _source_config(manifest, source, args)
    errors = 0
    with open_plugin(manifest, launch_options(args), _host(args),
                     Progress(quiet=args.quiet)) as inst:
        meta = Meta(RULE, f"tail_{source}", 0)
        stream = inst.start_source(source, meta, args.datasource or "", config)
        n = 0
        silent = 0.0
        while args.n is None or n < args.n:
            # wait in short steps: a source whose open() raised is reported, not waited on
            step = TAIL_CHECK_S if args.timeout is None else min(TAIL_CHECK_S,
                                                                 args.timeout - silent)
            try:
                msg = stream.recv(max(step, 0.001))
            except HostTimeout:
                silent += step
                failed = inst.source_failure(source)
                if failed:
                    print(f"ekl: source {source} stopped: {failed}", file=sys.stderr)
                    return EXIT_FAILED
                proc = inst.process
                if proc is not None and not proc.alive():
                    print(f"ekl: plugin {inst.name} {proc.exit_description()}: {proc.tail()}",
                          file=sys.stderr)
                    return EXIT_FAILED
                if args.timeout is not None and silent >= args.timeout:
                    print(f"ekl: source {source}: no data within {args.timeout:.1f} s",
                          file=sys.stderr)
                    return EXIT_FAILED
                continue
            silent = 0.0
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
    with open_plugin(manifest, launch_options(args), _host(args),
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



def register(sub: Any) -> None:
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
                   help="do not restart the plugin if it dies or hangs mid-run; exit 1")
    add_call_timeout(r)
    add_launch_options(r)
    r.set_defaults(func=cmd_run, early_payload=lambda a: ())

    c = sub.add_parser("call", help="call a function once and print its result as JSON")
    c.add_argument("plugin", metavar="PLUGIN")
    c.add_argument("function", metavar="FUNCTION")
    c.add_argument("args", nargs="*", metavar="ARG_JSON", help="arguments, each a JSON value")
    c.add_argument("--validate", action="store_true", help="call Validate first")
    add_call_timeout(c)
    add_launch_options(c)
    c.set_defaults(func=cmd_call, early_payload=lambda a: [a.function, *a.args])

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
    t.set_defaults(func=cmd_tail, early_payload=lambda a: [a.source] if a.source else [])

    f = sub.add_parser("feed", help="send JSON lines from stdin to a sink")
    f.add_argument("plugin", metavar="PLUGIN")
    f.add_argument("sink", metavar="SINK", nargs="?")
    f.add_argument("--config", metavar="JSON", help="sink properties")
    f.add_argument("--require-ack", action="store_true",
                   help="set requireAck and report every ack error")
    add_call_timeout(f)
    add_launch_options(f)
    f.set_defaults(func=cmd_feed, early_payload=lambda a: [a.sink] if a.sink else [])
