"""``ekl env doctor``: the facts about a plugin's environment, and what mends each problem.

This module reports what it finds (the env, its warnings, each activate.d hook run under the
shell a start uses, the interpreter started through the same wrapper, pynng, the installed
SDK, the lock); it does not decide how the plugin is hosted. That verdict belongs to the
launcher (which SDK it lends, which transport it uses), so the ``doctor`` command adds the
launcher's own answer on top of these facts instead of guessing it here.
"""

from __future__ import annotations

import os
import re
import shlex
import shutil
import subprocess
from typing import Callable, Dict, List, Mapping, Optional

from ekuiper.record import asdict, record

from .activate import activate_scripts, hook_shell
from .locate import plugin_environment
from .lock import check_environment, lock_candidates, read_records
from .model import EnvError, Environment, PluginEnv
from .probe import ProbeError, clean_env, probe, run_bounded

MIN_PYTHON = (3, 8)
HOOK_TIMEOUT_S = 30.0
#: What a shell prints when a hook uses syntax it does not have (dash running bash code).
_SHELL_TROUBLE = re.compile(r"not found|syntax error|bad substitution|unexpected|"
                            r"Syntax error|command not found|bad variable name")


@record
class Check:
    name: str
    status: str  # "ok" | "fail" | "warn" | "skip" | "info"
    detail: str
    fix: Optional[str] = None

    @property
    def ok(self) -> bool:
        return self.status != "fail"


def _q(p: object) -> str:
    return shlex.quote(str(p))


def _last(text: str) -> str:
    lines = [ln for ln in text.strip().splitlines() if ln.strip()]
    return lines[-1].strip()[:300] if lines else "no output"


def check_hooks(env: Environment, run_env: Mapping[str, str],
                base_env: Optional[Mapping[str, str]] = None) -> List[Check]:
    """Source each activate.d hook, alone, in the shell a start uses and the activated env,
    and see whether the start would go on past it (a marker after the hook is printed).

    ``bash -n`` is not enough: dash parses ``function f {}`` as a syntax error only when it
    runs it, and a ``[[ ]]`` test fails at run time; a hook's plain non-zero status does not
    stop a start (conda ignores it too), so only "the shell died" is a failure.
    """
    shell = hook_shell(base_env)
    out: List[Check] = []
    for hook in activate_scripts(str(env.prefix)):
        name = f"hook {os.path.basename(hook)}"
        script = '__ekl_hook() { . "$1"; }\n__ekl_hook "$1" 1>&2\necho ekl-hook-survived\n'
        try:
            cp = run_bounded([shell, "-c", script, "ekl-hook", hook], run_env, HOOK_TIMEOUT_S)
        except subprocess.TimeoutExpired:
            out.append(Check(name, "fail", f"{hook} did not finish within "
                             f"{HOOK_TIMEOUT_S:.0f} s under {shell}; every start would hang "
                             f"there", f"fix or remove {_q(hook)}"))
            continue
        except OSError as e:
            out.append(Check(name, "fail", f"cannot run {shell}: {e.strerror}"))
            continue
        if "ekl-hook-survived" not in cp.stdout:
            out.append(Check(name, "fail", f"{hook} stops the start under {shell} (exit "
                             f"{cp.returncode}): {_last(cp.stderr)}",
                             f"fix {_q(hook)} so that `{shell} -c '. {hook}'` runs" +
                             ("; or install bash, which conda run uses"
                              if shell == "/bin/sh" else "")))
        elif _SHELL_TROUBLE.search(cp.stderr):
            out.append(Check(name, "warn", f"{hook} runs under {shell} but complains: "
                             f"{_last(cp.stderr)}", f"fix {_q(hook)}"))
        else:
            out.append(Check(name, "ok", f"runs under {shell}"))
    return out


def doctor(plugin: PluginEnv,
           default_python: Optional[Callable[[], Optional[str]]] = None) -> List[Check]:
    """The facts, in the order a start meets them; stops at the first one nothing follows.

    ``default_python`` says which interpreter runs a plugin that names no environment; that
    is the launcher's decision (``--python``, ``$EKL_PYTHON_BIN``, its own interpreter), so
    the ``doctor`` command asks the launcher. Without it, ``python3`` from PATH is checked
    (what eKuiper's default ``pythonBin`` would run).
    """
    ref = _q(plugin.folder)
    checks: List[Check] = []
    env: Optional[Environment] = None
    base = clean_env()
    try:
        env = plugin_environment(plugin, quiet=True)
    except EnvError as e:
        checks.append(Check("environment", "fail", str(e), f"ekl env create {ref}"))
        return checks
    wrap = None
    if env is not None:
        checks.append(Check("environment", "ok", f"{env.kind} {env.prefix}"
                            + (f" (found in {env.found_in})" if env.found_in else "")))
        for w in env.warnings:
            checks.append(Check("warning", "warn", w))
        python = str(env.python)
        try:
            run_env: Dict[str, str] = env.activation(base)
        except EnvError as e:
            checks.append(Check("activation", "fail", str(e)))
            return checks
        hooks = check_hooks(env, run_env, base)
        checks.extend(hooks)
        if any(not c.ok for c in hooks):
            return checks
        # the interpreter is asked through the same wrapper a start uses (hooks first)
        wrap = (lambda argv: env.wrap_command(argv, base_env=base)) if hooks else None
    else:
        chosen = default_python() if default_python else None
        python = chosen or shutil.which("python3") or shutil.which("python") or "python3"
        where = "the interpreter ekl would run it on" if chosen else "from PATH"
        checks.append(Check("environment", "skip",
                            f"the plugin's JSON names no env; checked {python} ({where})"))
        run_env = base
    try:
        info = probe(python, env=run_env, use_cache=wrap is None, wrap=wrap)
    except ProbeError as e:
        fix = f"ekl env create {ref}" if env else "install python3"
        checks.append(Check("interpreter", "fail", str(e), fix))
        return checks
    checks.append(Check("interpreter", "ok", f"{python} runs"
                        + (" after the activate.d hooks" if wrap else "")))
    vt = info.version_text
    if info.version[:2] < MIN_PYTHON:
        checks.append(Check("python version", "fail",
                            f"Python {vt}; plugins need {'.'.join(map(str, MIN_PYTHON))}+",
                            f"recreate the env with a newer python (ekl env create {ref})"))
    else:
        checks.append(Check("python version", "ok", f"Python {vt}"))
    # facts only: whether they matter is the launcher's verdict (see the doctor command)
    if info.pynng:
        checks.append(Check("pynng", "ok", f"pynng {info.pynng}"))
    else:
        checks.append(Check("pynng", "info", f"pynng not importable ({info.pynng_error})"))
    if info.ekuiper:
        checks.append(Check("ekuiper sdk", "ok", f"{info.sdk_flavour} ekuiper "
                            f"{info.ekuiper.get('version')} at {info.ekuiper.get('path')}"))
    else:
        checks.append(Check("ekuiper sdk", "info", f"no ekuiper package in the env "
                            f"({info.ekuiper_error})"))
    if env is None:
        return checks
    if env.kind != "venv":
        _, corrupt = read_records(env.prefix)
        if corrupt:
            checks.append(Check("records", "fail", f"{corrupt[0]}" + (
                f" (and {len(corrupt) - 1} more)" if len(corrupt) > 1 else ""),
                f"rm -r {_q(env.prefix)} && ekl env create {ref}"))
        else:
            checks.append(Check("records", "ok", "conda-meta records readable"))
    try:
        drift = check_environment(plugin.folder, plugin.lock, env)
    except EnvError as e:
        checks.append(Check("lock", "fail", str(e), "fix or regenerate the lock file"))
        return checks
    if drift is None:
        names = ", ".join(p.name for p in lock_candidates(plugin.folder))
        checks.append(Check("lock", "skip", f"no lock file ({names} or \"ekl\": "
                            f"{{\"lock\": ...}} in the JSON)"))
    elif drift.clean:
        checks.append(Check("lock", "ok", f"matches {os.path.basename(drift.lock)}"))
    else:
        checks.append(Check("lock", "fail", drift.summary(ref),
                            f"rm -r {_q(env.prefix)} && ekl env create {ref}"))
    return checks


def checks_to_json(checks: List[Check]) -> dict:
    return {"ok": all(c.ok for c in checks),
            "checks": [dict(asdict(c), ok=c.ok) for c in checks]}
