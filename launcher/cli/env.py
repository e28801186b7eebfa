"""``ekl env ...``: list, doctor, check, create, install and pack plugin environments.

:func:`register` adds the ``env`` verb to the launcher's argparse tree; the work is done by
``ekl.envs``, a library without a CLI. Every error is one line on stderr: exit 2 for bad
input, 1 for a failed check or a failed build, never a traceback.
"""

from __future__ import annotations

import argparse
import json
import sys
from typing import Any, Callable, Optional


def _fail(msg: str, code: int) -> int:
    print(f"ekl: error: {msg}", file=sys.stderr)
    return code


def _guard(fn: Callable[[argparse.Namespace], int]) -> Callable[[argparse.Namespace], int]:
    def run(args: argparse.Namespace) -> int:
        from ekl.envs.model import EnvError, EnvFailed  # only when an env verb runs

        try:
            rc = fn(args)
        except EnvFailed as e:
            rc = _fail(str(e), 1)
        except EnvError as e:
            rc = _fail(str(e), 2)
        except KeyboardInterrupt:
            rc = _fail("interrupted", 130)
        except Exception as e:  # one line, never a traceback
            text = str(e).strip().splitlines()
            rc = _fail(f"{type(e).__name__}: {text[0] if text else ''}", 1)
        return rc

    run.__name__ = fn.__name__
    run.__doc__ = fn.__doc__
    return run


def _cmd_list(args: argparse.Namespace) -> int:
    from ekl.envs.locate import list_environments
    from ekl.envs.probe import ProbeError, probe

    rows = []
    for env in list_environments():
        version: Optional[str] = None
        if env.python.is_file():
            try:
                version = probe(env.python, env=env.activation({})).version_text
            except ProbeError:
                version = None
        rows.append(dict(env.to_dict(), version=version))
    if args.json:
        print(json.dumps(rows, indent=2))
        return 0
    if not rows:
        print("no environments found")
        return 0
    w = max(len(r["name"] or "-") for r in rows)
    k = max(len(r["kind"]) for r in rows)
    for r in rows:
        print(f"{(r['name'] or '-'):<{w}}  {r['kind']:<{k}}  {r['version'] or '-':<8}  "
              f"{r['prefix']}")
    return 0


def _cmd_doctor(args: argparse.Namespace) -> int:
    from ekl.envs._manifest import load_plugin
    from ekl.envs.doctor import checks_to_json, doctor

    plugin = load_plugin(args.plugin)
    checks = doctor(plugin)
    if args.json:
        print(json.dumps(checks_to_json(checks), indent=2))
    else:
        for c in checks:
            print(f"[{c.status:>4}] {c.name}: {c.detail}")
            if c.fix and (not c.ok or c.status == "warn"):
                print(f"       fix: {c.fix}")
    return 0 if all(c.ok for c in checks) else 1


def _cmd_check(args: argparse.Namespace) -> int:
    from ekl.envs._manifest import load_plugin
    from ekl.envs.locate import find_environment
    from ekl.envs.lock import check_environment, lock_candidates
    from ekl.envs.model import EnvError

    plugin = load_plugin(args.plugin)
    if not plugin.env_name and plugin.env_kind != "pixi":
        raise EnvError(f"{plugin.json_path} names no env to check")
    env = find_environment(plugin.env_kind, plugin.env_name or "", plugin_dir=plugin.dir)
    drift = check_environment(plugin.dir, plugin.manifest, env)
    if drift is None:
        names = ", ".join(p.name for p in lock_candidates(plugin.dir))
        raise EnvError(f"no lock file for {plugin.dir} (looked for {names}, or "
                       f"\"ekl\": {{\"lock\": PATH}} in {plugin.json_path.name})")
    if args.json:
        print(json.dumps(drift.to_dict(), indent=2))
    elif drift.clean:
        print(f"{env.prefix} matches {drift.lock}")
    else:
        print(f"{env.prefix} drifted from {drift.lock}: {drift.counts()}")
        for line in drift.lines():
            print("  " + line)
    return 0 if drift.clean else 1


def _cmd_create(args: argparse.Namespace) -> int:
    from ekl.envs._manifest import load_plugin
    from ekl.envs.build import create

    prefix = create(load_plugin(args.plugin), tool=args.tool)
    print(prefix)
    return 0


def _cmd_install(args: argparse.Namespace) -> int:
    from ekl.envs._manifest import load_plugin
    from ekl.envs.build import run_install_script

    run_install_script(load_plugin(args.plugin))
    return 0


def _cmd_pack(args: argparse.Namespace) -> int:
    from ekl.envs._manifest import load_plugin
    from ekl.envs.build import pack

    print(pack(load_plugin(args.plugin), args.output))
    return 0


def register(subparsers: Any) -> None:
    """Add ``env`` and its subcommands to the launcher's sub-parsers."""
    p = subparsers.add_parser("env", help="find, check, create and pack plugin environments",
                              description="List, doctor, check, create, install and pack "
                                          "plugin environments (see docs/environments.md).")
    sub = p.add_subparsers(dest="env_command", metavar="COMMAND")
    sub.required = True
    plugin_help = "plugin folder or its NAME.json"

    s = sub.add_parser("list", help="every environment found, with kind, prefix and python")
    s.add_argument("--json", action="store_true", help="print JSON")
    s.set_defaults(func=_guard(_cmd_list))

    s = sub.add_parser("doctor", help="can the plugin's environment run it? (exit 1 if not)")
    s.add_argument("plugin", help=plugin_help)
    s.add_argument("--json", action="store_true", help="print JSON")
    s.set_defaults(func=_guard(_cmd_doctor))

    s = sub.add_parser("check", help="compare the env with the plugin's lock (exit 1 on drift)")
    s.add_argument("plugin", help=plugin_help)
    s.add_argument("--json", action="store_true", help="print JSON")
    s.set_defaults(func=_guard(_cmd_check))

    s = sub.add_parser("create", help="build the env from its lock, environment.yml or "
                                      "requirements.txt")
    s.add_argument("plugin", help=plugin_help)
    s.add_argument("--tool", default="auto",
                   choices=["auto", "conda-lock", "micromamba", "mamba", "conda", "rattler",
                            "venv"],
                   help="installer to use (default: the first on PATH, else py-rattler)")
    s.set_defaults(func=_guard(_cmd_create))

    s = sub.add_parser("install", help="run the plugin's install.sh inside its environment")
    s.add_argument("plugin", help=plugin_help)
    s.set_defaults(func=_guard(_cmd_install))

    s = sub.add_parser("pack", help="conda-pack the env for machines without conda")
    s.add_argument("plugin", help=plugin_help)
    s.add_argument("-o", "--output", required=True, metavar="FILE.tar.gz")
    s.set_defaults(func=_guard(_cmd_pack))
