"""Activation equals ``conda shell.posix activate``, variable for variable.

conda cannot run here, so the reference outputs below were derived by hand from conda's
source, ``conda/activate.py`` (``_Activator._build_activate_stack``, ``build_reactivate``,
``_yield_commands``, ``_add_prefix_to_path``, ``_replace_prefix_in_path``,
``_prompt_modifier``, ``_get_environment_env_vars``, ``PosixActivator`` templates) and
``conda/base/context.py`` (``conda_exe_vars_dict``), both at conda commit
0f64223fb8da4328457a69fe6483959dbb783152 (2026-08-21), for the stand-in layouts of
conftest.py. Each reference is the exact text conda prints (with ``{R}`` for the conda root
and ``{P}`` for the env prefix); the test runs it in ``/bin/sh`` as ``eval "$(conda shell.posix
activate ...)"`` would, then compares the environment a child sees there with the one ekl
gives it.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Dict, Mapping

import pytest

from ekl.envs import EnvError, Environment, find_environment
from ekl.envs.activate import conda_activation, env_vars_of

from .envs_testlib import make_conda_prefix, make_venv

# `conda shell.posix activate myenv` from a shell with no env active (CONDA_SHLVL unset),
# PATH=/usr/local/bin:/usr/bin:/bin, conda installed at {R}.
REF_FRESH = """export _CE_M=''
export _CE_CONDA=''
PS1='(myenv) '
export PATH='{P}/bin:{R}/condabin:/usr/local/bin:/usr/bin:/bin'
export CONDA_PREFIX='{P}'
export CONDA_SHLVL='1'
export CONDA_DEFAULT_ENV='myenv'
export CONDA_PROMPT_MODIFIER='(myenv) '
export EKL_DATA_DIR='/opt/ekl-data'
export EKL_SHARED='from-state'
export EKL_MODE='test'
export EKL_LOWER='upper-cased'
export CONDA_EXE='{R}/bin/conda'
export _CONDA_EXE='{R}/bin/conda'
export CONDA_PYTHON_EXE='{R}/bin/python'
export _CONDA_ROOT='{R}'
. "{P}/etc/conda/activate.d/ekl-data.sh"
"""

# The same from a shell where `base` is active (CONDA_SHLVL=1) and EKL_MODE=prod is already
# exported: conda replaces base's bin in PATH, saves the clobbered EKL_MODE, records
# CONDA_PREFIX_1, fixes the exported PS1, and runs base's deactivate.d hooks first.
REF_NESTED = """. "{R}/etc/conda/deactivate.d/root.sh"
export _CE_M=''
export _CE_CONDA=''
PS1='(myenv) $ '
export PATH='{P}/bin:{R}/condabin:/usr/bin:/bin'
export CONDA_PREFIX='{P}'
export CONDA_SHLVL='2'
export CONDA_DEFAULT_ENV='myenv'
export CONDA_PROMPT_MODIFIER='(myenv) '
export EKL_DATA_DIR='/opt/ekl-data'
export EKL_SHARED='from-state'
export EKL_MODE='test'
export EKL_LOWER='upper-cased'
export __CONDA_SHLVL_1_EKL_MODE='prod'
export CONDA_PREFIX_1='{R}'
export CONDA_EXE='{R}/bin/conda'
export _CONDA_EXE='{R}/bin/conda'
export CONDA_PYTHON_EXE='{R}/bin/python'
export _CONDA_ROOT='{R}'
. "{P}/etc/conda/activate.d/ekl-data.sh"
"""

# `conda shell.posix activate myenv` when myenv is already the active env: a reactivation
# (build_reactivate, conda 25.9): the env's deactivate.d hooks first, in the still-active
# state, then PATH and the prompt (not the env_vars: they are already set), then activate.d.
REF_REACTIVATE = """. "{P}/etc/conda/deactivate.d/myenv-off.sh"
export _CE_M=''
export _CE_CONDA=''
PS1='(myenv) '
export PATH='{P}/bin:{R}/condabin:/usr/bin'
export CONDA_SHLVL='1'
export CONDA_PROMPT_MODIFIER='(myenv) '
export CONDA_EXE='{R}/bin/conda'
export _CONDA_EXE='{R}/bin/conda'
export CONDA_PYTHON_EXE='{R}/bin/python'
export _CONDA_ROOT='{R}'
. "{P}/etc/conda/activate.d/ekl-data.sh"
"""

# `conda shell.posix activate {P}` for a prefix outside any envs/ folder: the env's name is
# its full path, in CONDA_DEFAULT_ENV and in the prompt. This env has no hooks or env_vars.
REF_BY_PATH = """export _CE_M=''
export _CE_CONDA=''
PS1='({P}) '
export PATH='{P}/bin:{R}/condabin:/usr/local/bin:/usr/bin:/bin'
export CONDA_PREFIX='{P}'
export CONDA_SHLVL='1'
export CONDA_DEFAULT_ENV='{P}'
export CONDA_PROMPT_MODIFIER='({P}) '
export CONDA_EXE='{R}/bin/conda'
export _CONDA_EXE='{R}/bin/conda'
export CONDA_PYTHON_EXE='{R}/bin/python'
export _CONDA_ROOT='{R}'
"""

DUMP = "import json, os, sys; json.dump(dict(os.environ), open(sys.argv[1], 'w'))"
SHELL_NOISE = {"PWD", "OLDPWD", "SHLVL", "_"}


def _base(home: Path, **extra: str) -> Dict[str, str]:
    env = {"HOME": str(home), "PATH": "/usr/local/bin:/usr/bin:/bin", "LANG": "C.UTF-8"}
    env.update(extra)
    return env


def _dump_reference(ref: str, base: Mapping[str, str], python: Path, out: Path,
                    **fmt: str) -> Dict[str, str]:
    script = ref.format(**fmt) + f'exec "{python}" -c "$EKL_DUMP" "{out}"\n'
    env = dict(base, EKL_DUMP=DUMP)
    subprocess.run(["/bin/sh", "-c", script], env=env, check=True, capture_output=True)
    got = json.loads(out.read_text())
    got.pop("EKL_DUMP")
    return {k: v for k, v in got.items() if k not in SHELL_NOISE}


def _dump_ekl(env: Environment, base: Mapping[str, str], out: Path,
              wrap_base: bool = False) -> Dict[str, str]:
    child_env = env.activation(base)
    argv = env.wrap_command([str(env.python), "-c", DUMP, str(out)],
                            base_env=base if wrap_base else None)
    cp = subprocess.run(argv, env=child_env, capture_output=True, text=True, check=True)
    assert cp.stdout == "", "hook output must not reach the plugin's stdout"
    got = json.loads(out.read_text())
    return {k: v for k, v in got.items() if k not in SHELL_NOISE}


def test_fresh_activation_equals_conda(myenv: Path, conda_root: Path, home: Path,
                                       tmp_path: Path) -> None:
    env = find_environment("conda", "myenv")
    assert env.prefix == myenv and env.kind == "conda" and env.name == "myenv"
    base = _base(home)
    ref = _dump_reference(REF_FRESH, base, env.python, tmp_path / "ref.json",
                          P=str(myenv), R=str(conda_root))
    ours = _dump_ekl(env, base, tmp_path / "ours.json")
    assert ours == ref
    # the activate.d hook ran, in the activated env
    assert ours["EKL_DATA_HOOK"] == f"hooked:{myenv}"
    assert "EKL_GONE" not in ours


def test_nested_activation_equals_conda(myenv: Path, conda_root: Path, home: Path,
                                        tmp_path: Path) -> None:
    d = conda_root / "etc" / "conda" / "deactivate.d"
    d.mkdir(parents=True)
    # conda runs this in the outgoing env, before the new exports
    (d / "root.sh").write_text('export EKL_ROOT_DEACTIVATED="was:$CONDA_PREFIX:$EKL_MODE"\n')
    r = str(conda_root)
    base = _base(home, PATH=f"{r}/bin:{r}/condabin:/usr/bin:/bin", CONDA_SHLVL="1",
                 CONDA_PREFIX=r, CONDA_DEFAULT_ENV="base", CONDA_PROMPT_MODIFIER="(base) ",
                 PS1="(base) $ ", EKL_MODE="prod", CONDA_EXE=f"{r}/bin/conda",
                 _CE_M="", _CE_CONDA="", CONDA_PYTHON_EXE=f"{r}/bin/python")
    env = find_environment("conda", "myenv")
    ref = _dump_reference(REF_NESTED, base, env.python, tmp_path / "ref.json",
                          P=str(myenv), R=r)
    ours = _dump_ekl(env, base, tmp_path / "ours.json", wrap_base=True)
    assert ours == ref
    assert ours["EKL_ROOT_DEACTIVATED"] == f"was:{r}:prod"
    assert ours["PS1"] == "(myenv) $ "


def test_reactivation_equals_conda(myenv: Path, conda_root: Path, home: Path,
                                   tmp_path: Path) -> None:
    p, r = str(myenv), str(conda_root)
    d = myenv / "etc" / "conda" / "deactivate.d"
    d.mkdir(parents=True)
    (d / "myenv-off.sh").write_text('export EKL_OFF="off:$CONDA_PREFIX:$EKL_GONE"\n')
    base = _base(home, PATH=f"{p}/bin:{r}/condabin:/usr/bin", CONDA_SHLVL="1",
                 CONDA_PREFIX=p, CONDA_DEFAULT_ENV="myenv", CONDA_PROMPT_MODIFIER="(myenv) ",
                 EKL_MODE="test", EKL_GONE="still-here")
    env = find_environment("conda", "myenv")
    ref = _dump_reference(REF_REACTIVATE, base, env.python, tmp_path / "ref.json", P=p, R=r)
    ours = _dump_ekl(env, base, tmp_path / "ours.json", wrap_base=True)
    assert ours == ref
    # issue 13 item 8: the deactivate.d hook ran before activate.d, in the active state
    assert ours["EKL_OFF"] == f"off:{p}:still-here" and ours["EKL_GONE"] == "still-here"


def test_by_path_outside_envs_equals_conda(conda_root: Path, home: Path, channel,
                                           tmp_path: Path) -> None:
    prefix = make_conda_prefix(home / "srv" / "appenv", channel,
                               versions={"ekl-hello": "1.0"}, cache=tmp_path / "rc")
    env = find_environment("conda", str(prefix))
    assert env.name is None and env.kind == "conda"
    base = _base(home)
    ref = _dump_reference(REF_BY_PATH, base, env.python, tmp_path / "ref.json",
                          P=str(prefix), R=str(conda_root))
    assert env.wrap_command(["x"]) == ["x"], "no hooks: the argv is left alone"
    assert _dump_ekl(env, base, tmp_path / "ours.json") == ref


def test_without_conda_installation_no_conda_exe_vars(home: Path, channel,
                                                      tmp_path: Path) -> None:
    """An unpacked conda-pack env on an edge machine: no conda, so no CONDA_EXE/condabin."""
    prefix = make_conda_prefix(home / "opt" / "envs" / "edge", channel, cache=tmp_path / "rc")
    env = find_environment(None, str(prefix))
    assert env.kind == "conda" and env.conda_root is None
    act = env.activation(_base(home))
    assert act["PATH"] == f"{prefix}/bin:/usr/local/bin:/usr/bin:/bin"
    assert act["CONDA_DEFAULT_ENV"] == "edge"  # folder under an envs/ folder
    for k in ("CONDA_EXE", "_CONDA_EXE", "_CONDA_ROOT", "CONDA_PYTHON_EXE", "_CE_M"):
        assert k not in act


def test_leaky_python_vars_dropped(myenv: Path, home: Path) -> None:
    env = find_environment("conda", "myenv")
    act = env.activation(_base(home, PYTHONHOME="/leak", PYTHONPATH="/leak"))
    assert "PYTHONHOME" not in act and "PYTHONPATH" not in act
    v = find_environment("venv", str(myenv))  # the stand-in is also a venv
    assert "PYTHONPATH" not in v.activation(_base(home, PYTHONPATH="/leak"))


def test_env_vars_rules(home: Path, tmp_path: Path) -> None:
    p = tmp_path / "p"
    (p / "etc/conda/env_vars.d").mkdir(parents=True)
    (p / "conda-meta").mkdir()
    (p / "etc/conda/env_vars.d/b.json").write_text('{"B": "2", "A": "from-b"}')
    (p / "etc/conda/env_vars.d/a.json").write_text('{"A": "1"}')
    (p / "conda-meta/state").write_text(
        json.dumps({"env_vars": {"x": "lower", "PATH": "/evil", "path": "/evil", "U": "***unset***"}}))
    raw, warnings = env_vars_of(str(p))
    assert raw == {"A": "from-b", "B": "2", "x": "lower", "U": "***unset***"}
    assert any("PATH" in w for w in warnings)
    act = conda_activation(str(p), {"PATH": "/bin", "U": "kept"})
    assert act["PATH"] == f"{p}/bin:/bin"
    assert act["X"] == "lower" and "x" not in act
    assert act["U"] == "kept"  # ***unset*** means "do not set", as in conda
    assert act["CONDA_DEFAULT_ENV"] == str(p)


def test_venv_activation(home: Path, tmp_path: Path) -> None:
    v = tmp_path / "plugin" / ".venv"
    make_venv(v)
    env = find_environment("venv", ".venv", plugin_dir=tmp_path / "plugin")
    assert env.kind == "venv" and env.prefix == v
    act = env.activation(_base(home))
    assert act["VIRTUAL_ENV"] == str(v)
    assert act["PATH"] == f"{v}/bin:/usr/local/bin:/usr/bin:/bin"
    assert env.wrap_command(["a", "b"]) == ["a", "b"]
    out = subprocess.run([str(env.python), "-c", "import sys; print(sys.prefix)"], env=act,
                         capture_output=True, text=True, check=True).stdout.strip()
    assert out == str(v)


def test_hook_cannot_eat_argv_and_exec_keeps_pid(myenv: Path, home: Path, tmp_path: Path) -> None:
    hooks = myenv / "etc/conda/activate.d"
    (hooks / "zz-nasty.sh").write_text('set -- gone; shift; echo "nasty on stdout"\n')
    env = find_environment("conda", "myenv")
    code = "import os, sys; print(os.getpid(), sys.argv[1:], os.environ['EKL_DATA_HOOK'])"
    argv = env.wrap_command([str(env.python), "-c", code, "a b", "--x"])
    assert argv[0] == (shutil.which("bash") or "/bin/sh")  # conda run uses bash
    p = subprocess.Popen(argv, env=env.activation(_base(home)), stdout=subprocess.PIPE,
                         stderr=subprocess.PIPE, text=True)
    try:
        out, err = p.communicate(timeout=30)
    finally:
        if p.poll() is None:
            p.kill()
            p.wait()
    pid, rest = out.split(" ", 1)
    assert int(pid) == p.pid, "the interpreter must replace the shell (exec)"
    assert rest.strip() == f"['a b', '--x'] hooked:{myenv}"
    assert "ekl-data activate hook ran" in err and "nasty on stdout" in err


def test_wrap_command_rejects_empty(myenv: Path) -> None:
    env = find_environment("conda", "myenv")
    with pytest.raises(ValueError):
        env.wrap_command([])


def test_no_python_is_an_error(conda_root: Path, channel, tmp_path: Path) -> None:
    make_conda_prefix(conda_root / "envs" / "nopy", channel, python=False, cache=tmp_path / "rc")
    with pytest.raises(EnvError) as e:
        find_environment("conda", "nopy")
    assert "has no bin/python" in str(e.value) and "\n" not in str(e.value)


def test_running_python_sees_prefix(myenv: Path, home: Path) -> None:
    env = find_environment("conda", "myenv")
    out = subprocess.run(env.wrap_command([str(env.python), "-c",
                                           "import sys; print(sys.prefix)"]),
                         env=env.activation(_base(home)), capture_output=True, text=True,
                         check=True)
    assert out.stdout.strip() == str(myenv)
    assert sys.prefix != str(myenv)
    assert os.path.isabs(env.python)
