"""``ekl env ...``: list, doctor, check, create, install and pack plugin environments.

:func:`register` adds the ``env`` verb to the launcher's argparse tree; the work is done by
``ekl.envs``, a library without a CLI. Every error is one line on stderr: exit 2 for bad
input, 1 for a failed check, drift or a failed build, never a traceback. ``doctor`` adds the
launcher's own verdict (``start.resolve``) to the facts ``ekl.envs.doctor`` reports.
"""

from __future__ import annotations

import argparse
import json
import logging
import sys

from ..errors import EklError, ManifestError

TYPE_CHECKING = False  # typing is not loaded at run time on the start path (docs/architecture.md)
if TYPE_CHECKING:
    from typing import Any, Callable, List, Optional

if TYPE_CHECKING:  # ekl.envs loads when an env verb runs, not with every ekl command
    from ekl.envs.model import PluginEnv


def _fail(msg: str, code: int) -> int:
    print(f"ekl: error: {msg}", file=sys.stderr)
    return code


def _guard(fn: Callable[[argparse.Namespace], int]) -> Callable[[argparse.Namespace], int]:
    def run(args: argparse.Namespace) -> int:
        from ekl.envs.model import EnvError, EnvFailed

        try:
            rc = fn(args)
        except EnvFailed as e:
            rc = _fail(str(e), 1)
        except EnvError as e:
            rc = _fail(str(e), 2)
        except ManifestError as e:  # the plugin reader's findings, one line each
            for line in e.problems:
                print(f"ekl: error: {line}", file=sys.stderr)
            rc = 2
        except EklError as e:
            rc = _fail(str(e), e.exit_code)
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
    from ekl.envs.model import EnvError
    from ekl.envs.probe import ProbeError, probe

    rows = []
    for env in list_environments():
        version: Optional[str] = None
        if env.python.is_file():
            try:
                version = probe(env.python, env=env.activation({})).version_text
            except (ProbeError, EnvError):
                version = None  # one broken env must not hide the others
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


#: Run in the plugin's interpreter through the exact argv a start uses, in place of the
#: plugin's script: it imports what the plugin's first line would (the SDK the launcher
#: lends or finds, and pynng when the transport needs it) and says so.
_START_PROBE = (
    "import os, sys\n"
    "import ekuiper\n"
    "t = (os.environ.get('EKUIPER_TRANSPORT') or '').strip().lower()\n"
    "official = not getattr(ekuiper, 'EKL_SDK', False)\n"
    "if official or t == 'pynng':\n"
    "    import pynng\n"
    "print('ekl-start-ok', 'official' if official else 'ekl', ekuiper.__file__)\n")
START_PROBE_TIMEOUT_S = 60.0


def launcher_verdict(plugin: PluginEnv) -> List[Any]:
    """What ``ekl run``/``call`` will do with this plugin, asked of the launcher itself
    (``start.resolve``): the interpreter, the SDK it hosts or finds, the transport, and
    a real start of that argv (hooks, exec, imports) up to the plugin's own first line."""
    from ekl.envs.doctor import Check
    from ekl.envs.model import EnvError
    from ekl.envs.probe import run_bounded
    from ekuiper.transport import DEFAULT_TRANSPORT, TRANSPORT_ENV

    from ..errors import EklError
    from ..plugin import load
    from ..settings import LaunchOptions
    from ..start.resolve import needs_pynng, resolve

    quiet = logging.getLogger("ekl")
    level = quiet.level
    quiet.setLevel(logging.ERROR)  # doctor shows the env's warnings itself
    try:
        manifest = load(str(plugin.json_path))
        if manifest.language != "python":
            return [Check("launcher", "skip", f"a {manifest.language} plugin: no interpreter "
                          f"to judge")]
        spec = resolve(manifest, LaunchOptions(lock_policy="off"), host_sdk="missing")
    except EklError as e:
        first = str(e).strip().splitlines() or [type(e).__name__]
        return [Check("launcher", "fail", f"`ekl run` would stop: {first[0]}")]
    except EnvError as e:
        return [Check("launcher", "fail", f"`ekl run` would stop: {e}")]
    finally:
        quiet.setLevel(level)
    checks = [Check("launcher", "ok", f"`ekl run` uses {spec.interpreter} "
                    f"(chosen by {spec.origin})")]
    flavour = "ekl" if spec.sdk == "hosted" else spec.sdk
    if spec.sdk == "hosted":
        checks.append(Check("sdk", "ok", "ekl lends the plugin its own ekuiper SDK "
                            "(PYTHONPATH); nothing to install"))
    else:
        checks.append(Check("sdk", "ok", f"the env's {flavour} ekuiper SDK"))
    env = dict(spec.env)
    transport = (env.get(TRANSPORT_ENV) or DEFAULT_TRANSPORT).strip().lower()
    need = needs_pynng(flavour, env)
    checks.append(Check("transport", "ok", f"{transport}" + (", with pynng" if need else
                                                             ", pynng not needed")))
    argv = list(spec.argv)
    if len(argv) >= 4 and argv[-3] == "-u":
        argv = argv[:-2] + ["-c", _START_PROBE]
        import subprocess  # here: every ekl command loads this module

        try:
            cp = run_bounded(argv, env, START_PROBE_TIMEOUT_S, cwd=spec.cwd)
            ok = "ekl-start-ok" in cp.stdout
            last = (cp.stderr.strip().splitlines() or [f"exit {cp.returncode}"])[-1]
        except subprocess.TimeoutExpired:
            ok, last = False, f"no answer within {START_PROBE_TIMEOUT_S:.0f} s"
        except OSError as e:
            ok, last = False, f"cannot run {argv[0]}: {e.strerror}"
        checks.append(Check("start", "ok" if ok else "fail",
                            "the start argv (hooks, exec, SDK import) runs" if ok else
                            f"the start argv fails before the plugin's code: {last[:300]}"))
    return checks


def launcher_python(plugin: PluginEnv) -> Optional[str]:
    """The interpreter the launcher picks for a plugin that names no env (its precedence:
    ``$EKL_PYTHON_BIN``, else the interpreter ekl runs on), or None when it cannot say."""
    from ekl.envs.model import EnvError

    from ..errors import EklError
    from ..plugin import load
    from ..settings import LaunchOptions
    from ..start.resolve import choose_interpreter

    quiet = logging.getLogger("ekl")
    level = quiet.level
    quiet.setLevel(logging.ERROR)
    try:
        return choose_interpreter(load(str(plugin.json_path)),
                                  LaunchOptions(lock_policy="off")).python
    except (EklError, EnvError):
        return None
    finally:
        quiet.setLevel(level)


def _cmd_doctor(args: argparse.Namespace) -> int:
    from ekl.envs.doctor import checks_to_json, doctor

    plugin = _plugin_env(args.plugin)
    checks = doctor(plugin, default_python=lambda: launcher_python(plugin))
    if any(c.name == "interpreter" and c.ok for c in checks):
        checks += launcher_verdict(plugin)
    if args.json:
        print(json.dumps(checks_to_json(checks), indent=2))
    else:
        for c in checks:
            print(f"[{c.status:>4}] {c.name}: {c.detail}")
            if c.fix and (not c.ok or c.status == "warn"):
                print(f"       fix: {c.fix}")
    return 0 if all(c.ok for c in checks) else 1


def _cmd_check(args: argparse.Namespace) -> int:
    from ekl.envs.locate import plugin_environment
    from ekl.envs.lock import check_environment, lock_candidates
    from ekl.envs.model import EnvError

    plugin = _plugin_env(args.plugin)
    env = plugin_environment(plugin, quiet=True)
    if env is None:
        raise EnvError(f"{plugin.json_path} names no env to check (and has no lock file "
                       f"beside it for a plugin-local env)")
    drift = check_environment(plugin.folder, plugin.lock, env)
    if drift is None:
        names = ", ".join(p.name for p in lock_candidates(plugin.folder))
        raise EnvError(f"no lock file for {plugin.folder} (looked for {names}, or "
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
    from ekl.envs.build import create

    prefix = create(_plugin_env(args.plugin), tool=args.tool)
    print(prefix)
    return 0


def _cmd_install(args: argparse.Namespace) -> int:
    """pip into the plugin's environment, found and activated as the launcher does; the
    generated install.sh calls this when ekl is on PATH (it never runs install.sh itself,
    which would call it again)."""
    from pathlib import Path

    from ekl.envs.build import Progress, pip_install
    from ekl.envs.locate import plugin_environment
    from ekl.envs.model import EnvError

    plugin = _plugin_env(args.plugin)
    env = plugin_environment(plugin)
    if env is None:
        raise EnvError(f"{plugin.json_path} names no environment (\"virtualEnvType\" and "
                       f"\"env\"), so there is nowhere to install into; set them, or run "
                       f"pip with the interpreter the plugin runs on")
    req = Path(args.requirements) if args.requirements else plugin.folder / "requirements.txt"
    pip_install(env, req, Progress())
    return 0


def _cmd_pack(args: argparse.Namespace) -> int:
    from ekl.envs.build import pack

    print(pack(_plugin_env(args.plugin), args.output))
    return 0


def _plugin_env(target: str) -> Any:
    """The plugin, read by the one plugin reader, as ``ekl.envs`` takes it."""
    from ..plugin import load

    return load(target).env_request()


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

    s = sub.add_parser("install", help="pip install the plugin's requirements.txt into its "
                                       "environment (activated, no conda run)")
    s.add_argument("plugin", help=plugin_help)
    s.add_argument("-r", "--requirements", metavar="FILE",
                   help="requirements file (default: requirements.txt beside the JSON)")
    s.set_defaults(func=_guard(_cmd_install))

    s = sub.add_parser("pack", help="conda-pack the env for machines without conda")
    s.add_argument("plugin", help=plugin_help)
    s.add_argument("-o", "--output", required=True, metavar="FILE.tar.gz")
    s.set_defaults(func=_guard(_cmd_pack))
