"""Plugin authors' verbs: ``init``, ``validate``, ``package``.

Data goes to stdout (one line per item, or one JSON document with ``--json``); progress
and summaries go to stderr, so ``ekl validate P --json | jq`` and
``ekl package P > files.txt`` work. Exit codes as for every verb: 0 ok, 1 the plugin has
problems, 2 bad input (no such plugin, bad option, existing folder), 130 interrupted.
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
from pathlib import Path

from ..errors import EklError
from .common import add_launch_options, host_settings, launch_options

TYPE_CHECKING = False  # typing is not loaded at run time on the start path (docs/architecture.md)
if TYPE_CHECKING:
    from typing import Any, Dict

EXIT_OK, EXIT_FAILED = 0, 1


def _print_json(obj: Dict[str, Any]) -> None:
    sys.stdout.write(json.dumps(obj, indent=2, ensure_ascii=False) + "\n")
    sys.stdout.flush()


def _err(text: str) -> None:
    print(f"ekl: {text}", file=sys.stderr)


# --- init --------------------------------------------------------------------------------


def cmd_init(args: argparse.Namespace) -> int:
    from ..authoring.scaffold import init_plugin, symbols_for

    written = init_plugin(args.name, args.dir, vendor_sdk=args.vendor_sdk)
    folder = Path(args.dir) if args.dir else Path(args.name)
    rel = [p.relative_to(folder).as_posix() for p in written]
    if args.json:
        _print_json({"name": args.name, "folder": str(folder.resolve()), "files": rel,
                     "symbols": symbols_for(args.name)})
        return EXIT_OK
    for r in rel:
        print(f"{folder}/{r}")
    _err(f"created plugin {args.name} in {folder}/; next: ekl run {folder} --count 3, "
         f"python -m pytest {folder}, ekl package {folder}")
    return EXIT_OK


# --- validate ----------------------------------------------------------------------------


def _progress(args: argparse.Namespace) -> Any:
    from ..progress import Progress

    return Progress(quiet=getattr(args, "quiet", False))


def _run_validation(args: argparse.Namespace) -> Any:
    from ..authoring.validate import validate

    if not args.verbose:
        logging.getLogger("ekl").setLevel(logging.WARNING)  # resolution chatter
    return validate(args.plugin, launch_options(args), host_settings(args),
                    run=not args.no_run, progress=_progress(args), echo=args.verbose > 0)


def cmd_validate(args: argparse.Namespace) -> int:
    from ..authoring.validate import format_report

    report = _run_validation(args)
    if args.json:
        _print_json(report.to_json())
        return EXIT_OK if report.ok else EXIT_FAILED
    lines, summary = format_report(report)
    for line in lines:
        print(line)
    if args.verbose:
        for c in report.checked:
            _err(f"checked: {c}")
    _err(summary)
    return EXIT_OK if report.ok else EXIT_FAILED


# --- package -----------------------------------------------------------------------------


def cmd_package(args: argparse.Namespace) -> int:
    from ..authoring.package import check_output, check_vendoring, default_output, write_zip
    from ..authoring.validate import format_report
    from ..plugin import load

    if Path(args.plugin).suffix == ".zip":
        raise EklError(f"{args.plugin} is already a zip; give the plugin folder (check a zip "
                       f"with `ekl validate {args.plugin}`)")
    manifest = load(args.plugin)
    out = Path(args.output) if args.output else default_output(manifest)
    check_output(manifest, out)  # refuse a bad -o before spending time on validation
    if args.vendor_sdk or manifest.ekl.vendor_sdk:
        check_vendoring(manifest)
    report = _run_validation(args)
    lines, summary = format_report(report)
    if not report.ok:
        if args.json:
            _print_json({"zip": None, "validation": report.to_json()})
        else:
            for line in lines:
                print(line, file=sys.stderr)
        _err(f"{summary}; no package written (fix them, or see docs/troubleshooting.md)")
        return EXIT_FAILED
    if not args.json:
        for line in lines:  # warnings and notes
            print(line, file=sys.stderr)
    result = write_zip(manifest, out, _progress(args), vendor_sdk=True if args.vendor_sdk else None)
    if args.json:
        doc = result.to_json()
        doc["validation"] = report.to_json()
        _print_json(doc)
        return EXIT_OK
    for e in result.entries:
        print(f"{e.mode:04o} {e.size:>9}  {e.path}")
    if args.verbose:
        for path, reason in result.skipped:
            _err(f"left out {path}: {reason}")
    for path, why in result.generated.items():
        _err(f"wrote {path}: {why}")
    _err(f"wrote {result.zip} ({len(result.entries)} files, {result.size} bytes, "
         f"sha256 {result.sha256[:16]}…; {len(result.skipped)} paths left out, -v lists them)")
    _err(f"install it: curl -X POST http://127.0.0.1:9081/plugins/portables -d "
         f"'{{\"name\":\"{result.name}\",\"file\":\"file://{result.zip}\"}}'")
    return EXIT_OK


# --- parser ------------------------------------------------------------------------------


def register(sub: Any) -> None:
    """Add the authoring verbs to the ``ekl`` parser."""

    i = sub.add_parser("init", help="create a plugin skeleton that runs and passes its tests",
                       description="Write a new plugin folder: NAME.json, the main program, one "
                       "source, sink and function, sources/S.yaml, eKuiper metadata JSON for "
                       "each symbol, requirements.txt, install.sh and a pytest file. Refuses an "
                       "existing non-empty folder.")
    i.add_argument("name", metavar="NAME", help="plugin name: letters, digits, underscores")
    i.add_argument("--dir", metavar="D", help="folder to create (default: ./NAME)")
    i.add_argument("--json", action="store_true", help="print the created files as JSON")
    i.add_argument("--vendor-sdk", action="store_true",
                   help="record \"ekl\": {\"vendor_sdk\": true} in the JSON, so every `ekl "
                   "package` puts ekl's SDK into the zip")
    i.set_defaults(func=cmd_init)

    v = sub.add_parser("validate", help="check a plugin as eKuiper would, at install and run time",
                       description="Check what eKuiper checks at install time (zip layout, "
                       "file names, JSON fields, required files, at least one symbol, "
                       "language) and what it finds only at run time: start the plugin, "
                       "start and stop every declared symbol, and find symbols the program "
                       "registers that the JSON does not list (needs ekl's SDK). Prints one "
                       "line per finding; exit 1 if any is an error.")
    v.add_argument("plugin", metavar="PLUGIN", help="plugin folder, NAME.json or zip")
    v.add_argument("--no-run", action="store_true", help="static checks only; do not start it")
    v.add_argument("--json", action="store_true", help="print the report as JSON")
    add_launch_options(v)
    v.set_defaults(func=cmd_validate)

    p = sub.add_parser("package", help="validate, then write the zip eKuiper installs",
                       description="Validate the plugin (as `ekl validate`), then write a zip "
                       "eKuiper installs: NAME.json at the root, no caches, virtual "
                       "environments, version control, editor files or tests, executables "
                       "keeping their mode, deterministic bytes. Prints mode, size and path of "
                       "every file that went in. Extra exclusions: glob patterns in .eklignore. "
                       "An install.sh ekl wrote is refreshed to the current one, and one is "
                       "added when there is requirements.txt and no install.sh.")
    p.add_argument("plugin", metavar="PLUGIN", help="plugin folder or its NAME.json")
    p.add_argument("-o", "--output", metavar="FILE.zip", help="where to write (default: ./NAME.zip)")
    p.add_argument("--no-run", action="store_true", help="skip the run-time checks")
    p.add_argument("--json", action="store_true", help="print what went in as JSON")
    p.add_argument("--vendor-sdk", action="store_true",
                   help="put ekl's SDK into the zip as ekuiper/ beside the main program, so a "
                   "stock eKuiper runs the plugin on it with nothing installed (default: the "
                   "JSON's ekl.vendor_sdk)")
    add_launch_options(p)
    p.set_defaults(func=cmd_package)
