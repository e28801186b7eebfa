"""Activation without ``conda run``: the exact variables ``conda activate`` sets, computed here.

The rules follow conda's POSIX activator (``conda/activate.py``, ``_build_activate_stack``,
``build_reactivate``, ``_add_prefix_to_path``, ``_replace_prefix_in_path``, ``_default_env``,
``_prompt_modifier``, ``_update_prompt``, ``_get_environment_env_vars`` and
``Context.conda_exe_vars_dict``), re-derived, not copied, so that a plugin sees what it would
see after ``conda activate ENV`` in a shell, without paying for a conda process (about 2 s)
on every start. ``changeps1``, ``env_prompt`` and ``auto_stack`` come from the ``.condarc``
files (and ``CONDA_CHANGEPS1``/``CONDA_ENV_PROMPT``/``CONDA_AUTO_STACK``), as conda reads them.

micromamba (and mamba 2) port the same activator: the same variables, plus the
``MAMBA_ROOT_PREFIX``/``MAMBA_EXE`` their shell hook exports, and no conda installation
variables. pixi's ``shell-hook`` sets its own documented set (``PIXI_PROJECT_*``,
``PIXI_ENVIRONMENT_*``, ``PIXI_PROMPT``, ``CONDA_PREFIX``, ``CONDA_DEFAULT_ENV``).

Deliberate difference: conda drops only a variable named exactly ``PATH`` from ``env_vars``
and then upper-cases the rest, so a variable named ``path`` would replace the whole ``PATH``;
ekl drops every spelling of ``PATH`` (and says so in a warning).
"""

from __future__ import annotations

import functools
import json
import logging
import os
import shlex
import shutil
from pathlib import Path
from typing import TYPE_CHECKING, Dict, List, Mapping, Optional, Tuple

from .model import CondaSettings, EnvError

if TYPE_CHECKING:
    from .model import Environment

log = logging.getLogger("ekl.envs")

#: Value in ``env_vars`` that means "do not set this variable" (conda's CONDA_ENV_VARS_UNSET_VAR).
UNSET_MARKER = "***unset***"
#: Variables of the launcher's interpreter that must not reach another interpreter.
LEAKY = ("PYTHONHOME", "PYTHONPATH")
PROMPT_TEMPLATE = "({default_env}) "
_DEFAULT_PATH = "/usr/bin"
#: An env_vars file larger than this is refused (real ones hold a few variables).
MAX_ENV_VARS_BYTES = 1 << 20
_DEFAULTS = CondaSettings()


def _abspath(p: str) -> str:
    return os.path.abspath(p)


def default_env_name(prefix: str, root_prefix: Optional[str]) -> str:
    """``CONDA_DEFAULT_ENV``: ``base`` for the root, the folder name under an ``envs`` folder,
    otherwise the full prefix (conda's naming rule)."""
    if root_prefix and _abspath(prefix) == _abspath(root_prefix):
        return "base"
    p = Path(prefix)
    return p.name if p.parent.name == "envs" else prefix


def _env_value(v: object) -> str:
    # conda writes the value into `export NAME='value'`: JSON null becomes the empty string
    if v is None:
        return ""
    if isinstance(v, bool):
        return str(v)
    return v if isinstance(v, str) else json.dumps(v) if isinstance(v, (list, dict)) else str(v)


def _load_json(path: str, what: str) -> object:
    """A JSON file, or an EnvError naming the file (and line): conda's activation fails on
    such a file too (``json.loads`` raises), so a plugin must not start without a word."""
    try:
        with open(path, "rb") as f:
            raw = f.read(MAX_ENV_VARS_BYTES + 1)
    except OSError as e:
        raise EnvError(f"cannot read {path} ({e.strerror}); `conda activate` fails on it "
                       f"too: fix its permissions or remove it") from None
    if len(raw) > MAX_ENV_VARS_BYTES:
        raise EnvError(f"{path} is larger than {MAX_ENV_VARS_BYTES >> 20} MB, which no {what} "
                       f"is; remove it")
    try:
        return json.loads(raw.decode("utf-8"))
    except UnicodeDecodeError:
        raise EnvError(f"{path}:1: not UTF-8 text; `conda activate` fails on it too: fix or "
                       f"remove it") from None
    except json.JSONDecodeError as e:
        raise EnvError(f"{path}:{e.lineno}: not valid JSON ({e.msg}); `conda activate` fails "
                       f"on it too: fix or remove it") from None


def env_vars_of(prefix: str) -> Tuple[Dict[str, str], List[str]]:
    """Variables a prefix asks for: every file in ``etc/conda/env_vars.d`` (sorted by path,
    as conda reads them), then the ``env_vars`` of ``conda-meta/state``, which win. Returns
    them and the warnings worth showing; a file conda's activation would fail on raises
    :class:`EnvError` naming it.

    Values equal to ``***unset***`` are kept here (the caller decides); ``PATH`` in any case is
    removed because activation owns ``PATH``.
    """
    out: Dict[str, str] = {}
    warnings: List[str] = []
    d = os.path.join(prefix, "etc", "conda", "env_vars.d")
    try:
        names = sorted(e.path for e in os.scandir(d))
    except FileNotFoundError:
        names = []
    except OSError as e:
        raise EnvError(f"cannot read {d} ({e.strerror}); `conda activate` fails on it too: "
                       f"fix its permissions") from None
    for path in names:
        data = _load_json(path, "env_vars.d file")
        if not isinstance(data, dict):
            raise EnvError(f"{path}:1: holds a JSON {type(data).__name__}, not an object of "
                           f"NAME: value; `conda activate` fails on it too: fix or remove it")
        out.update({str(k): _env_value(v) for k, v in data.items()})
    state = os.path.join(prefix, "conda-meta", "state")
    if os.path.exists(state):
        data = _load_json(state, "conda-meta/state")
        ev = data.get("env_vars", {}) if isinstance(data, dict) else None
        if not isinstance(ev, dict):
            raise EnvError(f"{state}:1: \"env_vars\" is not an object; fix it with `conda env "
                           f"config vars set` or remove the file")
        for k in ev:
            if k in out:
                warnings.append(f"{state}: env var {k} is also set by a package in "
                                f"etc/conda/env_vars.d; the environment's value wins (as in "
                                f"conda)")
        out.update({str(k): _env_value(v) for k, v in ev.items()})
    for k in [k for k in out if k.upper() == "PATH"]:
        del out[k]
        warnings.append(f"ignored {k} in the env_vars of {prefix}: activation sets PATH")
    return out, warnings


def _scripts(prefix: str, which: str, reverse: bool = False) -> List[str]:
    d = os.path.join(prefix, "etc", "conda", which)
    try:
        paths = [e.path for e in os.scandir(d) if e.name.endswith(".sh")]
    except OSError:
        return []
    return sorted(paths, reverse=reverse)


def activate_scripts(prefix: str) -> List[str]:
    return _scripts(prefix, "activate.d")


def deactivate_scripts(prefix: str) -> List[str]:
    # conda runs deactivate.d in reverse order
    return _scripts(prefix, "deactivate.d", reverse=True)


def _shlvl(base: Mapping[str, str]) -> int:
    try:
        return int((base.get("CONDA_SHLVL") or "").strip() or 0)
    except ValueError:
        return 0


def _conda_meta_vars(conda_root: Optional[Path]) -> Dict[str, Optional[str]]:
    """What conda exports about itself on every activation (None: exported empty)."""
    if conda_root is None:
        return {}
    root = str(conda_root)
    exe = os.path.join(root, "bin", "conda")
    return {"CONDA_EXE": exe, "_CONDA_EXE": exe, "_CE_M": None, "_CE_CONDA": None,
            "CONDA_PYTHON_EXE": os.path.join(root, "bin", "python"), "_CONDA_ROOT": root}


def _replace_in_path(path_list: List[str], old_prefix: Optional[str],
                     new_prefix: str) -> List[str]:
    """Put ``new_prefix/bin`` where ``old_prefix/bin`` was, or first when it was not there."""
    out = list(path_list)
    idx = 0
    if old_prefix is not None:
        old_bin = _abspath(os.path.join(old_prefix, "bin"))
        for i, p in enumerate(out):
            if p and _abspath(p) == old_bin:
                idx = i
                del out[i]
                break
    out.insert(idx, os.path.join(new_prefix, "bin"))
    return out


def will_stack(base_env: Mapping[str, str], settings: CondaSettings = _DEFAULTS) -> bool:
    """conda's ``activate``: ``stack = auto_stack and shlvl <= auto_stack``."""
    lvl = _shlvl(base_env)
    return bool(settings.auto_stack) and 0 < lvl <= settings.auto_stack


def is_reactivation(prefix: str, base_env: Mapping[str, str]) -> bool:
    return base_env.get("CONDA_PREFIX") == prefix and _shlvl(base_env) > 0


def _prompt_modifier(prefix: str, default_env: str, base: Mapping[str, str],
                     root_prefix: Optional[str], settings: CondaSettings, command: str,
                     stack: bool) -> str:
    """conda's ``_prompt_modifier``: ``env_prompt`` with ``{default_env}``, ``{prefix}``,
    ``{name}`` and ``{stacked_env}`` (the prompt stack built from CONDA_PREFIX_<i>)."""
    if not settings.changeps1:
        return ""
    old = _shlvl(base)
    prompt_stack: List[str] = []
    for i in range(1, old + 1):
        p = base.get("CONDA_PREFIX", "") if i == old else base.get(f"CONDA_PREFIX_{i}", "")
        env_i = default_env_name(p.rstrip(), root_prefix)
        if not base.get(f"CONDA_STACKED_{i}", "").rstrip():
            prompt_stack = prompt_stack[:-1]
        prompt_stack.append(env_i)
    if command != "reactivate":
        if not stack:
            prompt_stack = prompt_stack[:-1]
        prompt_stack.append(default_env)
    try:
        return settings.env_prompt.format(default_env=default_env, prefix=prefix,
                                          name=os.path.basename(prefix),
                                          stacked_env=",".join(prompt_stack[::-1]))
    except (KeyError, IndexError, ValueError):
        raise EnvError(f"env_prompt {settings.env_prompt!r} in .condarc is not a valid "
                       f"template (use {{default_env}}, {{prefix}}, {{name}}, "
                       f"{{stacked_env}})") from None


def conda_activation(prefix: str, base_env: Mapping[str, str], *,
                     root_prefix: Optional[str] = None,
                     conda_root: Optional[Path] = None,
                     settings: CondaSettings = _DEFAULTS) -> Dict[str, str]:
    """The environment after ``conda activate PREFIX`` in a POSIX shell whose env is base_env.

    Exposed separately from :class:`Environment` so tests can compare it with reference
    outputs of ``conda shell.posix activate``.
    """
    base = {k: v for k, v in base_env.items() if k not in LEAKY}
    old_shlvl = _shlvl(base)
    old_prefix = base.get("CONDA_PREFIX")
    path_list = base.get("PATH", _DEFAULT_PATH).split(":")
    meta = _conda_meta_vars(conda_root)
    raw, _ = env_vars_of(prefix)

    exports: Dict[str, Optional[str]] = {}
    if is_reactivation(prefix, base):
        # Already active: conda "reactivates" (build_reactivate): PATH and the prompt only
        # (its hooks run again: see hook_body), the env_vars are already there.
        default_env = base.get("CONDA_DEFAULT_ENV", default_env_name(prefix, root_prefix))
        modifier = _prompt_modifier(prefix, default_env, base, root_prefix, settings,
                                    "reactivate", False)
        exports["PATH"] = ":".join(_replace_in_path(path_list, prefix, prefix))
        exports["CONDA_SHLVL"] = str(old_shlvl)
        exports["CONDA_PROMPT_MODIFIER"] = modifier
    else:
        stack = will_stack(base, settings)
        default_env = default_env_name(prefix, root_prefix)
        modifier = _prompt_modifier(prefix, default_env, base, root_prefix, settings,
                                    "activate", stack)
        env_vars: Dict[str, Optional[str]] = {
            k: v for k, v in raw.items() if v != UNSET_MARKER}
        # A variable the env sets over one already in the environment is saved first, so
        # that `conda deactivate` can restore it.
        for name in [n for n in env_vars if n in base]:
            env_vars[f"__CONDA_SHLVL_{old_shlvl}_{name}"] = base[name]
        extra: Dict[str, Optional[str]] = {}
        if old_shlvl == 0:
            new_path = list(path_list)
            if conda_root is not None and not any(p.endswith("condabin") for p in new_path):
                new_path.insert(0, os.path.join(str(conda_root), "condabin"))
            new_path.insert(0, os.path.join(prefix, "bin"))
        elif stack:
            new_path = [os.path.join(prefix, "bin"), *path_list]
            extra = {f"CONDA_PREFIX_{old_shlvl}": old_prefix,
                     f"CONDA_STACKED_{old_shlvl + 1}": "true"}
        else:
            new_path = _replace_in_path(path_list, old_prefix, prefix)
            extra = {f"CONDA_PREFIX_{old_shlvl}": old_prefix}
        exports["PATH"] = ":".join(new_path)
        exports["CONDA_PREFIX"] = prefix
        exports["CONDA_SHLVL"] = str(old_shlvl + 1)
        exports["CONDA_DEFAULT_ENV"] = default_env
        exports["CONDA_PROMPT_MODIFIER"] = modifier
        exports.update(env_vars)
        exports.update(extra)
    exports.update(meta)

    result = dict(base)
    ps1 = base.get("PS1")
    if settings.changeps1 and ps1 is not None and "POWERLINE_COMMAND" not in ps1:
        current = base.get("CONDA_PROMPT_MODIFIER")
        if current:
            ps1 = ps1.replace(current, "")
        result["PS1"] = modifier + ps1
    for name, value in exports.items():
        # conda exports a variable it "unsets" as empty (`export NAME=''`)
        result[name.upper()] = "" if value is None else value
    return result


def mamba_activation(env: Environment, base_env: Mapping[str, str]) -> Dict[str, str]:
    """micromamba / mamba: conda's rules (libmamba ports the activator), plus the variables
    their shell hook exports (``MAMBA_ROOT_PREFIX``, ``MAMBA_EXE``) when they are known."""
    result = conda_activation(
        str(env.prefix), base_env,
        root_prefix=str(env.root_prefix) if env.root_prefix else None,
        conda_root=env.conda_root if env.kind == "mamba" else None, settings=env.settings)
    if env.root_prefix is not None and "MAMBA_ROOT_PREFIX" not in base_env:
        result["MAMBA_ROOT_PREFIX"] = str(env.root_prefix)
    if env.mamba_exe and "MAMBA_EXE" not in base_env:
        result["MAMBA_EXE"] = env.mamba_exe
    return result


def pixi_activation(env: Environment, base_env: Mapping[str, str]) -> Dict[str, str]:
    """What ``pixi shell-hook`` exports (pixi's documented list): ``PATH`` with the env's
    ``bin`` first, ``CONDA_PREFIX``, ``CONDA_DEFAULT_ENV``, ``PIXI_PROJECT_ROOT/NAME/
    MANIFEST/VERSION``, ``PIXI_PROMPT``, ``PIXI_ENVIRONMENT_NAME/PLATFORMS``, then the env's
    env_vars (rattler's activation reads the same files as conda's)."""
    prefix = str(env.prefix)
    result = {k: v for k, v in base_env.items() if k not in LEAKY}
    result["PATH"] = os.path.join(prefix, "bin") + ":" + base_env.get("PATH", _DEFAULT_PATH)
    result["CONDA_PREFIX"] = prefix
    pv = dict(env.pixi_vars)
    result.update(pv)
    if "CONDA_DEFAULT_ENV" not in pv:
        result["CONDA_DEFAULT_ENV"] = env.name or os.path.basename(prefix)
    raw, _ = env_vars_of(prefix)
    for k, v in raw.items():
        if v == UNSET_MARKER:
            result.pop(k, None)
        else:
            result[k] = v
    return result


def venv_activation(prefix: str, base_env: Mapping[str, str]) -> Dict[str, str]:
    """What a venv's ``bin/activate`` exports: ``VIRTUAL_ENV`` and ``PATH`` (no PYTHONHOME)."""
    result = {k: v for k, v in base_env.items() if k not in LEAKY}
    result["VIRTUAL_ENV"] = prefix
    result["PATH"] = os.path.join(prefix, "bin") + ":" + base_env.get("PATH", _DEFAULT_PATH)
    return result


def activation_env(env: Environment, base_env: Mapping[str, str]) -> Dict[str, str]:
    from .model import KINDS

    how = KINDS[env.kind].activation if env.kind in KINDS else "conda"
    prefix = str(env.prefix)
    if how == "venv":
        return venv_activation(prefix, base_env)
    if how == "pixi":
        return pixi_activation(env, base_env)
    if how == "micromamba" or env.kind == "mamba":
        return mamba_activation(env, base_env)
    return conda_activation(
        prefix, base_env,
        root_prefix=str(env.root_prefix) if env.root_prefix else None,
        conda_root=env.conda_root, settings=env.settings)


@functools.lru_cache(maxsize=16)
def _which_bash(path: str) -> Optional[str]:
    return shutil.which("bash", path=path)


def hook_shell(base_env: Optional[Mapping[str, str]] = None) -> str:
    """The shell that sources activate.d hooks: ``bash`` from the launcher's PATH when there
    is one (``conda run`` runs its activation script with bash), else ``/bin/sh``.

    On Debian ``/bin/sh`` is dash, where a hook written for bash (``[[ ]]``, ``function f``,
    ``source``) silently misbehaves or kills the start; bash is what such hooks were tested
    with. The PATH is the caller's, never the env's (an env may ship its own bash).
    """
    path = (base_env if base_env is not None else os.environ).get("PATH", "")
    return _which_bash(path) or "/bin/sh"


#: Sources the hooks inside a function so a hook's `shift`/`set --` cannot eat the argv, sends
#: their stdout to stderr (the plugin's stdout stays clean), then replaces the shell.
_WRAPPER = "__ekl_hooks() {{\n{body}\n}}\n__ekl_hooks 1>&2\nexec \"$@\"\n"


def _exports(old: Mapping[str, str], new: Mapping[str, str]) -> List[str]:
    lines = [f"  unset {k}" for k in old if k not in new]
    lines += [f"  export {k}={shlex.quote(v)}" for k, v in new.items() if old.get(k) != v]
    return lines


def hook_body(env: Environment, base_env: Optional[Mapping[str, str]] = None) -> List[str]:
    """The shell lines a start runs before ``exec``: the outgoing (or, on re-activation, the
    same) env's ``deactivate.d`` hooks in the outgoing state, then ``activate.d`` hooks."""
    from .model import KINDS

    if env.kind in KINDS and not KINDS[env.kind].conda_style:
        return []
    prefix = str(env.prefix)
    body: List[str] = []
    if base_env is not None and env.kind != "pixi":
        old = base_env.get("CONDA_PREFIX")
        leaving = bool(old) and _shlvl(base_env) > 0 and not (
            old != prefix and will_stack(base_env, env.settings))
        if leaving and old and deactivate_scripts(old):
            # conda runs the outgoing env's deactivate.d hooks in the outgoing env, before it
            # exports the new variables (for a re-activation: the env's own, then activate.d):
            # undo the activation, run them, then redo it.
            before = {k: v for k, v in base_env.items() if k not in LEAKY}
            after = activation_env(env, base_env)
            body += _exports(after, before)
            body += [f"  . {shlex.quote(s)}" for s in deactivate_scripts(old)]
            body += _exports(before, after)
    body += [f"  . {shlex.quote(s)}" for s in activate_scripts(prefix)]
    return body


def wrap_command(env: Environment, argv: List[str],
                 base_env: Optional[Mapping[str, str]] = None) -> List[str]:
    if not argv:
        raise ValueError("wrap_command needs a command to run")
    body = hook_body(env, base_env)
    if not body:
        return list(argv)
    return [hook_shell(base_env), "-c", _WRAPPER.format(body="\n".join(body)), "ekl-activate",
            *argv]


def log_warnings(env: Environment) -> None:
    """Show what ekl noticed about the env (the start path calls this once)."""
    for w in env.warnings:
        log.warning("%s", w)
