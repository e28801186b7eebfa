"""Activation without ``conda run``: the exact variables ``conda activate`` sets, computed here.

The rules follow conda's POSIX activator (``conda/activate.py``, ``_build_activate_stack``,
``build_reactivate``, ``_add_prefix_to_path``, ``_replace_prefix_in_path``, ``_default_env``,
``_get_environment_env_vars`` and ``Context.conda_exe_vars_dict``), re-derived, not copied, so
that a plugin sees what it would see after ``conda activate ENV`` in a shell, without paying for
a conda process (about 2 s) on every start. Defaults of conda's configuration are assumed:
``changeps1: true``, ``env_prompt: "({default_env}) "``, ``auto_stack: 0`` and
``envvars_force_uppercase: true``.

One deliberate difference: conda drops only a variable named exactly ``PATH`` from
``env_vars`` and then upper-cases the rest, so a variable named ``path`` would replace the whole
``PATH``; ekl drops every spelling of ``PATH``.
"""

from __future__ import annotations

import json
import os
import shlex
from pathlib import Path
from typing import TYPE_CHECKING, Dict, List, Mapping, Optional, Tuple

if TYPE_CHECKING:
    from .model import Environment

#: Value in ``env_vars`` that means "do not set this variable" (conda's CONDA_ENV_VARS_UNSET_VAR).
UNSET_MARKER = "***unset***"
#: Variables of the launcher's interpreter that must not reach another interpreter.
LEAKY = ("PYTHONHOME", "PYTHONPATH")
PROMPT_TEMPLATE = "({default_env}) "
_DEFAULT_PATH = "/usr/bin"


def _abspath(p: str) -> str:
    return os.path.abspath(p)


def default_env_name(prefix: str, root_prefix: Optional[str]) -> str:
    """``CONDA_DEFAULT_ENV``: ``base`` for the root, the folder name under an ``envs`` folder,
    otherwise the full prefix (conda's naming rule)."""
    if root_prefix and _abspath(prefix) == _abspath(root_prefix):
        return "base"
    p = Path(prefix)
    return p.name if p.parent.name == "envs" else prefix


def env_vars_of(prefix: str) -> Tuple[Dict[str, str], List[str]]:
    """Variables a prefix asks for: ``etc/conda/env_vars.d/*.json`` (sorted by path), then the
    ``env_vars`` of ``conda-meta/state``, which win. Returns them and any warnings.

    Values equal to ``***unset***`` are kept here (the caller decides); ``PATH`` in any case is
    removed because activation owns ``PATH``.
    """
    out: Dict[str, str] = {}
    warnings: List[str] = []
    d = os.path.join(prefix, "etc", "conda", "env_vars.d")
    try:
        names = sorted(e.path for e in os.scandir(d))
    except OSError:
        names = []
    for path in names:
        try:
            with open(path, encoding="utf-8") as f:
                data = json.load(f)
        except (OSError, ValueError) as e:
            warnings.append(f"ignored {path}: {e}")
            continue
        if isinstance(data, dict):
            out.update({str(k): str(v) for k, v in data.items()})
        else:
            warnings.append(f"ignored {path}: not a JSON object")
    state = os.path.join(prefix, "conda-meta", "state")
    if os.path.exists(state):
        try:
            with open(state, encoding="utf-8") as f:
                data = json.load(f)
            ev = data.get("env_vars", {}) if isinstance(data, dict) else {}
            if isinstance(ev, dict):
                out.update({str(k): str(v) for k, v in ev.items()})
        except (OSError, ValueError) as e:
            warnings.append(f"ignored {state}: {e}")
    for k in [k for k in out if k.upper() == "PATH"]:
        del out[k]
        warnings.append(f"ignored PATH in the env_vars of {prefix}: activation sets PATH")
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


def conda_activation(prefix: str, base_env: Mapping[str, str], *,
                     root_prefix: Optional[str] = None,
                     conda_root: Optional[Path] = None) -> Dict[str, str]:
    """The environment after ``conda activate PREFIX`` in a POSIX shell whose env is base_env.

    Exposed separately from :class:`Environment` so tests can compare it with reference
    outputs of ``conda shell.posix activate``.
    """
    base = {k: v for k, v in base_env.items() if k not in LEAKY}
    old_shlvl = _shlvl(base)
    old_prefix = base.get("CONDA_PREFIX")
    path_list = base.get("PATH", _DEFAULT_PATH).split(":")
    meta = _conda_meta_vars(conda_root)

    exports: Dict[str, Optional[str]] = {}
    if old_prefix == prefix and old_shlvl > 0:
        # Already active: conda "reactivates", refreshing PATH and the prompt only.
        default_env = base.get("CONDA_DEFAULT_ENV", default_env_name(prefix, root_prefix))
        modifier = PROMPT_TEMPLATE.format(default_env=default_env)
        exports["PATH"] = ":".join(_replace_in_path(path_list, prefix, prefix))
        exports["CONDA_SHLVL"] = str(old_shlvl)
        exports["CONDA_PROMPT_MODIFIER"] = modifier
    else:
        default_env = default_env_name(prefix, root_prefix)
        modifier = PROMPT_TEMPLATE.format(default_env=default_env)
        raw, _ = env_vars_of(prefix)
        env_vars: Dict[str, Optional[str]] = {
            k: v for k, v in raw.items() if v != UNSET_MARKER}
        # A variable the env sets over one already in the environment is saved first, so
        # that `conda deactivate` can restore it.
        for name in [n for n in env_vars if n in base]:
            env_vars[f"__CONDA_SHLVL_{old_shlvl}_{name}"] = base[name]
        if old_shlvl == 0:
            new_path = list(path_list)
            if conda_root is not None and not any(p.endswith("condabin") for p in new_path):
                new_path.insert(0, os.path.join(str(conda_root), "condabin"))
            new_path.insert(0, os.path.join(prefix, "bin"))
            extra: Dict[str, Optional[str]] = {}
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
    if ps1 is not None and "POWERLINE_COMMAND" not in ps1:
        current = base.get("CONDA_PROMPT_MODIFIER")
        if current:
            ps1 = ps1.replace(current, "")
        result["PS1"] = modifier + ps1
    for name, value in exports.items():
        # conda exports a variable it "unsets" as empty (`export NAME=''`)
        result[name.upper()] = "" if value is None else value
    return result


def venv_activation(prefix: str, base_env: Mapping[str, str]) -> Dict[str, str]:
    """What a venv's ``bin/activate`` exports: ``VIRTUAL_ENV`` and ``PATH`` (no PYTHONHOME)."""
    result = {k: v for k, v in base_env.items() if k not in LEAKY}
    result["VIRTUAL_ENV"] = prefix
    result["PATH"] = os.path.join(prefix, "bin") + ":" + base_env.get("PATH", _DEFAULT_PATH)
    return result


def activation_env(env: Environment, base_env: Mapping[str, str]) -> Dict[str, str]:
    prefix = str(env.prefix)
    if env.kind == "venv":
        return venv_activation(prefix, base_env)
    return conda_activation(
        prefix, base_env,
        root_prefix=str(env.root_prefix) if env.root_prefix else None,
        conda_root=env.conda_root if env.kind == "conda" else None)


#: Sources the hooks inside a function so a hook's `shift`/`set --` cannot eat the argv, sends
#: their stdout to stderr (the plugin's stdout stays clean), then replaces the shell.
_WRAPPER = "__ekl_hooks() {{\n{body}\n}}\n__ekl_hooks 1>&2\nexec \"$@\"\n"


def _exports(old: Mapping[str, str], new: Mapping[str, str]) -> List[str]:
    lines = [f"  unset {k}" for k in old if k not in new]
    lines += [f"  export {k}={shlex.quote(v)}" for k, v in new.items() if old.get(k) != v]
    return lines


def wrap_command(env: Environment, argv: List[str],
                 base_env: Optional[Mapping[str, str]] = None) -> List[str]:
    if not argv:
        raise ValueError("wrap_command needs a command to run")
    if env.kind == "venv":
        return list(argv)
    prefix = str(env.prefix)
    body: List[str] = []
    if base_env is not None:
        old = base_env.get("CONDA_PREFIX")
        if old and old != prefix and _shlvl(base_env) > 0 and deactivate_scripts(old):
            # conda runs the outgoing env's deactivate.d hooks in the outgoing env, before it
            # exports the new variables: undo the activation, run them, then redo it.
            before = {k: v for k, v in base_env.items() if k not in LEAKY}
            after = activation_env(env, base_env)
            body += _exports(after, before)
            body += [f"  . {shlex.quote(s)}" for s in deactivate_scripts(old)]
            body += _exports(before, after)
    body += [f"  . {shlex.quote(s)}" for s in activate_scripts(prefix)]
    if not body:
        return list(argv)
    return ["/bin/sh", "-c", _WRAPPER.format(body="\n".join(body)), "ekl-activate", *argv]
