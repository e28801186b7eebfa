"""Issue 13: conda's behaviour in the corners, one regression test (or more) per item.

There is no conda binary or channel here (see envs_testlib.py): the prefixes are real
conda-style layouts (rattler-written ``conda-meta`` records, ``history``, ``env_vars.d``,
``activate.d``/``deactivate.d`` hooks, ``.condarc``, ``environments.txt``). Where a test says
"conda does X", X was derived from conda's source (conda/activate.py, conda/core/prefix_data.py,
conda/misc.py, conda/cli/main_create.py; conda 24-26), not observed.
"""

from __future__ import annotations

import json
import logging
import os
import random
import shutil
import subprocess
from pathlib import Path
from typing import Dict

import pytest

import ekl.envs.lock as lockmod
from ekl.envs import (
    KINDS,
    EnvError,
    EnvFailed,
    LockDrift,
    PluginEnv,
    check_lock_for_launch,
    find_environment,
)
from ekl.envs.activate import conda_activation, hook_shell
from ekl.envs.build import _read_env_yml, target_prefix
from ekl.envs.lock import compare, current_subdir, read_lock, read_records

from .envs_testlib import (
    make_conda_prefix,
    make_conda_root,
    make_pixi_project,
    make_venv,
    write_conda_lock,
    write_condarc,
    write_env_vars_d,
    write_environments_txt,
    write_hook,
    write_plugin,
)
from .test_env_cli import env_cli, one_line_error

SUB = current_subdir()


def _penv(d: Path, name: str = "demo", **kw: object) -> PluginEnv:
    return PluginEnv(folder=d, json_path=d / f"{name}.json", name=name, **kw)  # type: ignore[arg-type]


def _one_line(e: BaseException) -> str:
    s = str(e)
    assert "\n" not in s and "Traceback" not in s, s
    return s


def _base(home: Path, **extra: str) -> Dict[str, str]:
    env = {"HOME": str(home), "PATH": "/usr/local/bin:/usr/bin:/bin", "LANG": "C.UTF-8"}
    env.update(extra)
    return env


def _run(env, base: Dict[str, str], code: str, wrap_base: bool = True) -> subprocess.CompletedProcess:
    argv = env.wrap_command([str(env.python), "-c", code], base_env=base if wrap_base else None)
    return subprocess.run(argv, env=env.activation(base), capture_output=True, text=True,
                          timeout=60)


# -- 1. lock files of the wrong shape, binary locks ------------------------------------------

@pytest.mark.parametrize("text,where,what", [
    ("version: 1\npackage: 5\n", ":2:", "package is int 5, not a list"),
    ("version: 1\nmetadata: 7\npackage: []\n", ":2:", "metadata is int 7, not a mapping"),
    ("version: 1\nmetadata:\n  platforms: linux-64\npackage: []\n", ":3:",
     "metadata.platforms is not a list"),
    ("version: 1\npackage:\n- 3\n", ":3:", "package[0] is int 3, not a mapping"),
    ("version: 1\npackage:\n- name: a\n  version: '1'\n  platform: linux-64\n  hash: 5\n",
     ":6:", "package[0].hash is not a mapping"),
    ("version: 1\npackage:\n- name: a\n  version: '1'\n  platform: PLAT\n  url: not a url\n",
     ":6:", "package[0].url (a) is 'not a url', not a conda package file"),
])
def test_lock_of_wrong_shape_is_one_line_naming_file_and_line(tmp_path: Path, text: str,
                                                              where: str, what: str) -> None:
    p = tmp_path / "conda-lock.yml"
    p.write_text(text.replace("PLAT", SUB))
    with pytest.raises(EnvError) as e:
        read_lock(p)
    msg = _one_line(e.value)
    assert msg.startswith(f"{p}{where} {what}"), msg


def test_binary_and_non_utf8_locks(tmp_path: Path) -> None:
    p = tmp_path / "conda-lock.yml"
    p.write_bytes(b"version: 1\n\x00\x01\x02\xff")
    with pytest.raises(EnvError, match=r"conda-lock\.yml:2: lock file is binary"):
        read_lock(p)
    p.write_bytes(b"version: 1\npackage: []\n# caf\xe9\n")
    with pytest.raises(EnvError, match=r"conda-lock\.yml:3: lock file is not UTF-8"):
        read_lock(p)


def test_huge_lock_is_refused_unread(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(lockmod, "MAX_LOCK_BYTES", 1000)
    p = tmp_path / "conda-lock.yml"
    p.write_text("version: 1\npackage: []\n" + "#" * 2000)
    with pytest.raises(EnvError, match="larger than"):
        read_lock(p)


def test_bad_lock_at_start_warns_under_warn_and_fails_one_line_under_strict(
        myenv: Path, tmp_path: Path) -> None:
    d = write_plugin(tmp_path / "demo")
    (d / "conda-lock.yml").write_text("version: 1\npackage: 5\n")
    env = find_environment("conda", "myenv")
    w = check_lock_for_launch(d, None, env, "warn")
    assert w is not None and "conda-lock.yml:2: package is int 5" in w
    with pytest.raises(EnvError) as e:
        check_lock_for_launch(d, None, env, "strict")
    assert not isinstance(e.value, LockDrift)  # bad input (exit 2), not drift (exit 1)
    _one_line(e.value)


def test_doctor_and_check_on_binary_lock(myenv: Path, tmp_path: Path) -> None:
    d = write_plugin(tmp_path / "demo")
    (d / "conda-lock.yml").write_bytes(bytes(range(256)) * 4)
    cp = env_cli("doctor", str(d), "--json")
    assert "Traceback" not in cp.stderr and cp.returncode == 1, cp.stderr
    checks = {c["name"]: c for c in json.loads(cp.stdout)["checks"]}
    assert checks["lock"]["status"] == "fail" and "lock file is binary" in checks["lock"]["detail"]
    one_line_error(env_cli("check", str(d)), 2)


def test_random_lock_shapes_never_traceback(tmp_path: Path) -> None:
    """Seeded garbage of every YAML type in every slot: a Lock or an EnvError, nothing else."""
    import yaml

    rng = random.Random(13)
    atoms = [None, 0, 7, -1.5, True, "", "x", "linux-64", [], {}, [1, "a"], {"a": None}]

    def junk(depth: int = 0) -> object:
        if depth > 2 or rng.random() < 0.4:
            return rng.choice(atoms)
        if rng.random() < 0.5:
            return [junk(depth + 1) for _ in range(rng.randint(0, 3))]
        keys = ["name", "version", "platform", "url", "hash", "dependencies", "manager",
                "optional", "platforms", "channels", "md5", "sha256"]
        return {rng.choice(keys): junk(depth + 1) for _ in range(rng.randint(0, 4))}

    p = tmp_path / "conda-lock.yml"
    for _ in range(60):
        doc = {"version": 1, "metadata": junk(), "package": junk()}
        if rng.random() < 0.5:
            doc["package"] = [junk() for _ in range(rng.randint(0, 3))]
        p.write_text(yaml.safe_dump(doc))
        try:
            read_lock(p, SUB)
        except EnvError as e:
            _one_line(e)


# -- 2. no env named, a lock beside the JSON: the plugin-local .ekl-env -------------------

def test_local_env_is_used_by_check_doctor_pack(home: Path, channel, tmp_path: Path) -> None:
    d = write_plugin(tmp_path / "demo", env=None, kind=None)
    pkgs = [channel.get("ekl-hello", "1.0"), channel.get("ekl-data", "0.1")]
    write_conda_lock(d / "conda-lock.yml", pkgs, SUB)
    # not built yet: every verb says how to build it (bad input, exit 2)
    err = one_line_error(env_cli("check", str(d)), 2)
    assert ".ekl-env" in err and f"ekl env create {d}" in err
    make_conda_prefix(d / ".ekl-env", channel, cache=tmp_path / "rc")
    cp = env_cli("check", str(d))
    assert cp.returncode == 0 and f"{d / '.ekl-env'} matches" in cp.stdout, cp.stderr
    cp = env_cli("doctor", str(d), "--json")
    checks = {c["name"]: c for c in json.loads(cp.stdout)["checks"]}
    assert str(d / ".ekl-env") in checks["environment"]["detail"]
    assert checks["lock"]["status"] == "ok"
    # pack gets past "names no env" (conda-pack itself may be missing here)
    cp = env_cli("pack", str(d), "-o", str(tmp_path / "x.tar.gz"))
    assert "names no env" not in cp.stderr and "Traceback" not in cp.stderr
    # create: "already exists" points at a check that now works
    err = one_line_error(env_cli("create", str(d)), 2)
    assert "already exists" in err and f"ekl env check {d}" in err


# -- 3. "env": "base" is reserved ------------------------------------------------------------

@pytest.mark.parametrize("name", ["base", "root"])
def test_create_refuses_reserved_names(conda_root: Path, channel, tmp_path: Path,
                                       name: str) -> None:
    d = write_plugin(tmp_path / "demo", env=name)
    write_conda_lock(d / "conda-lock.yml", [channel.get("ekl-hello", "1.0")], SUB)
    err = one_line_error(env_cli("create", str(d)), 2)
    assert "reserved environment name" in err
    assert not (conda_root / "envs" / name).exists()
    with pytest.raises(EnvError, match="reserved"):
        target_prefix(_penv(d, env=name, kind="conda"))


# -- 4. a truncated conda-meta record ------------------------------------------------------

def _truncate_record(prefix: Path, name: str) -> Path:
    rec = next((prefix / "conda-meta").glob(f"{name}-*.json"))
    text = rec.read_text()
    rec.write_text(text[: len(text) // 2])
    return rec


def test_truncated_record_is_corruption_not_a_match(myenv: Path, channel,
                                                    tmp_path: Path) -> None:
    d = write_plugin(tmp_path / "demo")
    write_conda_lock(d / "conda-lock.yml",
                     [channel.get("ekl-hello", "1.0"), channel.get("ekl-data", "0.1")], SUB)
    env = find_environment("conda", "myenv")
    assert check_lock_for_launch(d, None, env, "strict") is None  # clean, and cached
    rec = _truncate_record(myenv, "ekl-hello")
    _, problems = read_records(myenv)
    assert len(problems) == 1 and problems[0].startswith(f"{rec}:") and "corrupt" in problems[0]
    with pytest.raises(LockDrift, match="corrupt record"):
        check_lock_for_launch(d, None, env, "strict")
    cp = env_cli("check", str(d))
    assert cp.returncode == 1 and "problem:" in cp.stdout and str(rec) in cp.stdout
    cp = env_cli("doctor", str(d), "--json")
    checks = {c["name"]: c for c in json.loads(cp.stdout)["checks"]}
    assert checks["records"]["status"] == "fail" and str(rec) in checks["records"]["detail"]
    rec.write_bytes(b"\xff\xfe garbage")
    assert "not UTF-8" in read_records(myenv)[1][0]


# -- 5./6. env_vars.d: null, unreadable, not JSON --------------------------------------------

def test_json_null_exports_empty_string(home: Path, tmp_path: Path) -> None:
    p = tmp_path / "p"
    (p / "conda-meta").mkdir(parents=True)
    write_env_vars_d(p, "a.json", '{"EKL_NULL": null, "EKL_NUM": 5, "EKL_T": true}')
    act = conda_activation(str(p), {"PATH": "/bin"})
    # conda: export EKL_NULL='' (never the text None); numbers as Python prints them
    assert act["EKL_NULL"] == "" and act["EKL_NUM"] == "5" and act["EKL_T"] == "True"


@pytest.mark.parametrize("breakage,expect", [
    ("dangling", "cannot read"),
    ("json", "a.json:2: not valid JSON"),
    ("list", "a.json:1: holds a JSON list"),
    ("dir", "cannot read"),
])
def test_broken_env_vars_file_fails_like_conda_activate(myenv: Path, breakage: str,
                                                        expect: str) -> None:
    d = myenv / "etc" / "conda" / "env_vars.d"
    if breakage == "dangling":
        (d / "a.json").symlink_to(d / "gone.json")
    elif breakage == "json":
        write_env_vars_d(myenv, "a.json", '{"A": "1",\n "B": }\n')
    elif breakage == "list":
        write_env_vars_d(myenv, "a.json", '["A", "B"]')
    else:
        (d / "a.json").mkdir()
    with pytest.raises(EnvError) as e:
        find_environment("conda", "myenv")
    msg = _one_line(e.value)
    assert expect in msg and str(d / "a.json") in msg and "conda activate" in msg


@pytest.mark.skipif(os.geteuid() == 0, reason="root reads a mode-000 file")
def test_unreadable_env_vars_file(myenv: Path) -> None:
    f = write_env_vars_d(myenv, "secret.json", '{"A": "1"}')
    f.chmod(0)
    try:
        with pytest.raises(EnvError, match="cannot read"):
            find_environment("conda", "myenv")
    finally:
        f.chmod(0o644)


def test_warnings_are_logged_at_start(myenv: Path, caplog: pytest.LogCaptureFixture) -> None:
    (myenv / "conda-meta" / "state").write_text(json.dumps(
        {"env_vars": {"path": "/evil", "EKL_SHARED": "x"}}))
    with caplog.at_level(logging.WARNING, logger="ekl"):
        env = find_environment("conda", "myenv")
    msgs = [r.getMessage() for r in caplog.records if r.name == "ekl.envs"]
    assert any("ignored path" in m for m in msgs) and any("EKL_SHARED" in m for m in msgs)
    assert len(env.warnings) == 2
    caplog.clear()
    find_environment("conda", "myenv", quiet=True)
    assert not caplog.records


# -- 7. hooks under bash, as conda run runs them ------------------------------------------

BASH_HOOK = """# a hook written for bash, as many are
function ekl_f { echo f; }
if [[ -n "$CONDA_PREFIX" ]]; then export EKL_BASHISM="ok:$(ekl_f)"; fi
"""


@pytest.mark.skipif(shutil.which("bash") is None, reason="needs bash")
def test_bash_hook_runs_under_bash(myenv: Path, home: Path) -> None:
    write_hook(myenv, "activate.d", "zz-bash.sh", BASH_HOOK)
    env = find_environment("conda", "myenv")
    base = _base(home)
    assert hook_shell(base) == shutil.which("bash", path=base["PATH"])
    cp = _run(env, base, "import os; print(os.environ.get('EKL_BASHISM'))")
    assert cp.returncode == 0 and cp.stdout.strip() == "ok:f", cp.stderr
    cp = env_cli("doctor", str(write_plugin(myenv.parent.parent.parent / "p")), "--json")
    checks = {c["name"]: c for c in json.loads(cp.stdout)["checks"]}
    assert checks["hook zz-bash.sh"]["status"] == "ok"


def test_without_bash_doctor_fails_the_hook_that_kills_sh(myenv: Path, tmp_path: Path) -> None:
    """No bash on PATH (a slim container): /bin/sh (dash here) dies on `function f {}`, so a
    start would die before its handshake; doctor runs the hook and says so."""
    write_hook(myenv, "activate.d", "zz-bash.sh", BASH_HOOK)
    nobash = tmp_path / "nobash"
    nobash.mkdir()
    for tool in ("sh", "echo", "cat"):
        real = shutil.which(tool)
        if real:
            (nobash / tool).symlink_to(real)
    assert hook_shell({"PATH": str(nobash)}) == "/bin/sh"
    d = write_plugin(tmp_path / "p")
    env = dict(os.environ, PATH=str(nobash))
    cp = subprocess.run([str(Path(os.sys.executable)), "-m", "ekl.launcher.cli", "env", "doctor",
                         str(d), "--json"], capture_output=True, text=True, env=env, cwd="/",
                        timeout=120)
    checks = {c["name"]: c for c in json.loads(cp.stdout)["checks"]}
    hook = checks["hook zz-bash.sh"]
    if os.path.realpath("/bin/sh").endswith("bash"):
        pytest.skip("/bin/sh is bash here")
    assert cp.returncode == 1 and hook["status"] == "fail", checks
    assert "zz-bash.sh" in hook["detail"] and "/bin/sh" in hook["detail"]
    assert "install bash" in hook["fix"]


def test_hook_that_exits_fails_doctor(myenv: Path, tmp_path: Path) -> None:
    write_hook(myenv, "activate.d", "zz-exit.sh", "echo 'no licence server' >&2\nexit 3\n")
    cp = env_cli("doctor", str(write_plugin(tmp_path / "p")), "--json")
    checks = {c["name"]: c for c in json.loads(cp.stdout)["checks"]}
    assert cp.returncode == 1 and checks["hook zz-exit.sh"]["status"] == "fail"
    assert "no licence server" in checks["hook zz-exit.sh"]["detail"]


# -- 8. re-activation runs deactivate.d (test_activate.test_reactivation_equals_conda) ----
#      and auto_stack from .condarc ---------------------------------------------------------

def test_auto_stack_and_stacked_prompt_from_condarc(myenv: Path, conda_root: Path,
                                                    home: Path) -> None:
    write_condarc(home / ".condarc", auto_stack=1, env_prompt="({stacked_env}) ")
    write_hook(conda_root, "deactivate.d", "root.sh", "export EKL_ROOT_OFF=1\n")
    r = str(conda_root)
    base = _base(home, PATH=f"{r}/bin:{r}/condabin:/usr/bin", CONDA_SHLVL="1", CONDA_PREFIX=r,
                 CONDA_DEFAULT_ENV="base", CONDA_PROMPT_MODIFIER="(base) ")
    env = find_environment("conda", "myenv")
    act = env.activation(base)
    # conda activate --stack (auto_stack: 1, shlvl 1): base's bin stays on PATH
    assert act["PATH"] == f"{myenv}/bin:{r}/bin:{r}/condabin:/usr/bin"
    assert act["CONDA_PREFIX_1"] == r and act["CONDA_STACKED_2"] == "true"
    assert act["CONDA_PROMPT_MODIFIER"] == "(myenv,base) "
    cp = _run(env, base, "import os; print(os.environ.get('EKL_ROOT_OFF'))")
    assert cp.stdout.strip() == "None", "stacking does not deactivate the outer env"


def test_changeps1_false_and_env_prompt(myenv: Path, home: Path) -> None:
    write_condarc(home / ".condarc", changeps1=False)
    act = find_environment("conda", "myenv").activation(_base(home, PS1="$ "))
    assert act["CONDA_PROMPT_MODIFIER"] == "" and act["PS1"] == "$ "
    write_condarc(home / ".condarc", env_prompt="[{name}|{default_env}] ")
    act = find_environment("conda", "myenv").activation(_base(home, PS1="$ "))
    assert act["CONDA_PROMPT_MODIFIER"] == "[myenv|myenv] " and act["PS1"] == "[myenv|myenv] $ "
    os.environ["CONDA_CHANGEPS1"] = "no"  # CONDA_<KEY> overrides every .condarc
    try:
        act = find_environment("conda", "myenv").activation(_base(home))
        assert act["CONDA_PROMPT_MODIFIER"] == ""
    finally:
        del os.environ["CONDA_CHANGEPS1"]
    write_condarc(home / ".condarc", auto_stack="lots")
    with pytest.raises(EnvError, match=r"\.condarc: auto_stack is 'lots', not a whole number"):
        find_environment("conda", "myenv")


# -- 9. nodefaults ---------------------------------------------------------------------------

def test_nodefaults_is_a_keyword_not_a_channel(tmp_path: Path) -> None:
    y = tmp_path / "environment.yml"
    y.write_text("name: x\nchannels:\n  - conda-forge\n  - nodefaults\ndependencies:\n"
                 "  - python=3.11\n  - pip:\n    - requests\n")
    channels, specs, pip = _read_env_yml(y)
    assert channels == ["conda-forge"] and specs == ["python=3.11"] and pip == ["requests"]
    y.write_text("channels: [nodefaults]\ndependencies: [python]\n")
    with pytest.raises(EnvError, match="lists no channels"):
        _read_env_yml(y)
    y.write_text("channels: 5\n")
    with pytest.raises(EnvError, match="not an environment.yml"):
        _read_env_yml(y)


# -- 10. exit codes: drift is 1 everywhere ---------------------------------------------------

def test_strict_drift_is_exit_1_class(myenv: Path, channel, tmp_path: Path) -> None:
    d = write_plugin(tmp_path / "demo")
    write_conda_lock(d / "conda-lock.yml", [channel.get("ekl-hello", "1.0")], SUB)
    env = find_environment("conda", "myenv")
    with pytest.raises(LockDrift) as e:
        check_lock_for_launch(d, None, env, "strict")
    assert isinstance(e.value, EnvFailed) and e.value.exit_code == 1
    assert env_cli("check", str(d)).returncode == 1


# -- 11. micromamba, mamba, pixi activation -------------------------------------------------

def test_kinds_table() -> None:
    assert list(KINDS) == ["conda", "mamba", "micromamba", "pixi", "venv"]
    assert [k for k, v in KINDS.items() if not v.conda_style] == ["venv"]


def test_micromamba_activation(home: Path, channel, tmp_path: Path,
                               monkeypatch: pytest.MonkeyPatch) -> None:
    root = home / "micromamba"
    monkeypatch.setenv("MAMBA_ROOT_PREFIX", str(root))
    monkeypatch.setenv("MAMBA_EXE", str(home / ".local" / "bin" / "micromamba"))
    p = make_conda_prefix(root / "envs" / "edge", channel, cache=tmp_path / "rc")
    env = find_environment("micromamba", "edge")
    assert env.kind == "micromamba" and env.conda_root is None
    base = _base(home)
    act = env.activation(base)
    # micromamba activate: conda's variables, no conda installation, its hook's two variables
    assert act["PATH"] == f"{p}/bin:/usr/local/bin:/usr/bin:/bin"
    assert (act["CONDA_PREFIX"], act["CONDA_SHLVL"], act["CONDA_DEFAULT_ENV"]) == (
        str(p), "1", "edge")
    assert act["CONDA_PROMPT_MODIFIER"] == "(edge) "
    assert act["MAMBA_ROOT_PREFIX"] == str(root)
    assert act["MAMBA_EXE"] == str(home / ".local" / "bin" / "micromamba")
    for k in ("CONDA_EXE", "_CE_M", "CONDA_PYTHON_EXE"):
        assert k not in act
    assert act["EKL_DATA_DIR"] == "/opt/ekl-data"
    cp = _run(env, base, "import os; print(os.environ['EKL_DATA_HOOK'])")
    assert cp.stdout.strip() == f"hooked:{p}"


def test_mamba_in_a_miniforge_root(conda_root: Path, channel, tmp_path: Path,
                                   home: Path) -> None:
    p = make_conda_prefix(conda_root / "envs" / "mm", channel, cache=tmp_path / "rc")
    env = find_environment("mamba", "mm")
    act = env.activation(_base(home))
    assert env.kind == "mamba" and act["CONDA_EXE"] == f"{conda_root}/bin/conda"
    assert act["MAMBA_ROOT_PREFIX"] == str(conda_root) and act["CONDA_PREFIX"] == str(p)


def test_pixi_activation(home: Path, channel, tmp_path: Path) -> None:
    proj = make_pixi_project(tmp_path / "proj", channel, envs=("default", "cuda"),
                             cache=tmp_path / "rc")
    plugin = write_plugin(proj / "plugins" / "demo", env=None, kind="pixi")
    base = _base(home)
    env = find_environment("pixi", "", plugin_dir=plugin)
    act = env.activation(base)
    p = proj / ".pixi" / "envs" / "default"
    assert act["PATH"] == f"{p}/bin:/usr/local/bin:/usr/bin:/bin"
    assert act["CONDA_PREFIX"] == str(p) and act["CONDA_DEFAULT_ENV"] == "demo-proj"
    assert act["PIXI_PROJECT_ROOT"] == str(proj)
    assert act["PIXI_PROJECT_NAME"] == "demo-proj"
    assert act["PIXI_PROJECT_MANIFEST"] == str(proj / "pixi.toml")
    assert act["PIXI_PROJECT_VERSION"] == "0.3.1"
    assert act["PIXI_ENVIRONMENT_NAME"] == "default"
    assert act["PIXI_ENVIRONMENT_PLATFORMS"] == "linux-64,linux-aarch64"
    assert act["PIXI_PROMPT"] == "(demo-proj) "
    assert "CONDA_SHLVL" not in act and "CONDA_EXE" not in act
    cuda = find_environment("pixi", "cuda", plugin_dir=plugin).activation(base)
    assert cuda["CONDA_DEFAULT_ENV"] == "demo-proj:cuda"
    assert cuda["PIXI_ENVIRONMENT_NAME"] == "cuda"
    cp = _run(env, base, "import os; print(os.environ['EKL_DATA_HOOK'])")
    assert cp.stdout.strip() == f"hooked:{p}", cp.stderr
    (proj / "pixi.toml").write_text("[workspace\nname = 1\n")
    with pytest.raises(EnvError, match=r"pixi\.toml:1: not valid TOML"):
        find_environment("pixi", "", plugin_dir=plugin)


# -- 12. @EXPLICIT lines that are not package URLs ------------------------------------------

@pytest.mark.parametrize("line", ["not a url", "foo-1.0-h0_0", "https://x/y/",
                                  "https://x/ekl-hello-1.0-h0_0.whl"])
def test_explicit_line_not_a_url(tmp_path: Path, line: str) -> None:
    p = tmp_path / f"conda-{SUB}.lock"
    p.write_text(f"# platform: {SUB}\n@EXPLICIT\n"
                 f"https://conda.anaconda.org/c/noarch/ekl-hello-1.0-h0_0.tar.bz2#"
                 f"{'0' * 32}\n{line}\n")
    with pytest.raises(EnvError) as e:
        read_lock(p)
    msg = _one_line(e.value)
    assert msg.startswith(f"{p}:4: ") and "is not a conda package URL" in msg


# -- 13. the launch verdict cache sees a record edited in place ------------------------------

def test_cache_key_sees_records_edited_in_place(myenv: Path, channel, tmp_path: Path) -> None:
    d = write_plugin(tmp_path / "demo")
    write_conda_lock(d / "conda-lock.yml",
                     [channel.get("ekl-hello", "1.0"), channel.get("ekl-data", "0.1")], SUB)
    env = find_environment("conda", "myenv")
    assert check_lock_for_launch(d, None, env, "strict") is None
    meta = myenv / "conda-meta"
    st = meta.stat()
    rec = next(meta.glob("ekl-hello-*.json"))
    data = json.loads(rec.read_text())
    data["version"] = "9.9"
    rec.write_text(json.dumps(data))  # in place: the folder's mtime does not change
    os.utime(meta, ns=(st.st_atime_ns, st.st_mtime_ns))
    assert meta.stat().st_mtime_ns == st.st_mtime_ns
    with pytest.raises(LockDrift, match=r"ekl-hello 1\.0 -> 9\.9"):
        check_lock_for_launch(d, None, env, "strict")
    assert not compare(read_lock(d / "conda-lock.yml"), myenv).clean


# -- 14. service environments: no CONDA_EXE, no conda on PATH -------------------------------

def test_service_env_finds_its_installation(home: Path, channel, tmp_path: Path) -> None:
    root = make_conda_root(tmp_path / "srv" / "conda")  # not a well-known location
    p = make_conda_prefix(root / "envs" / "svc", channel, cache=tmp_path / "rc")
    write_condarc(root / ".condarc", changeps1=False)  # the installation's own .condarc
    env = find_environment("conda", str(p))
    assert env.conda_root == root
    act = env.activation(_base(home))
    r = str(root)
    assert act["PATH"] == f"{p}/bin:{r}/condabin:/usr/local/bin:/usr/bin:/bin"
    assert act["CONDA_EXE"] == f"{r}/bin/conda" and act["CONDA_PYTHON_EXE"] == f"{r}/bin/python"
    assert act["_CE_M"] == "" and act["_CE_CONDA"] == ""
    assert act["CONDA_DEFAULT_ENV"] == "svc"
    assert act["CONDA_PROMPT_MODIFIER"] == ""  # changeps1: false from <root>/.condarc


def test_service_env_outside_root_from_environments_txt(home: Path, channel,
                                                        tmp_path: Path) -> None:
    root = make_conda_root(tmp_path / "srv" / "conda")
    p = make_conda_prefix(tmp_path / "apps" / "svcenv", channel, cache=tmp_path / "rc")
    assert find_environment("conda", str(p)).conda_root is None
    write_environments_txt(home, [root, p])
    env = find_environment("conda", str(p))
    assert env.conda_root == root
    assert env.activation(_base(home))["CONDA_EXE"] == f"{root}/bin/conda"


# -- 15. doctor judges what the launcher will do --------------------------------------------

def test_doctor_venv_without_pynng_is_ok_because_ekl_lends_its_sdk(home: Path,
                                                                    tmp_path: Path) -> None:
    d = write_plugin(tmp_path / "demo", env=".venv", kind="venv")
    make_venv(d / ".venv")
    cp = env_cli("doctor", str(d), "--json")
    checks = {c["name"]: c for c in json.loads(cp.stdout)["checks"]}
    assert cp.returncode == 0, cp.stdout
    assert checks["pynng"]["status"] == "info"
    assert "lends" in checks["sdk"]["detail"] and checks["start"]["status"] == "ok"
    # ask for pynng: the launcher would refuse to start, and doctor says it with its words
    env = dict(os.environ, EKUIPER_TRANSPORT="pynng")
    cp = subprocess.run([os.sys.executable, "-m", "ekl.launcher.cli", "env", "doctor", str(d),
                         "--json"], capture_output=True, text=True, env=env, cwd="/",
                        timeout=120)
    checks = {c["name"]: c for c in json.loads(cp.stdout)["checks"]}
    assert cp.returncode == 1 and checks["launcher"]["status"] == "fail"
    assert "pynng" in checks["launcher"]["detail"]


# -- attacks on the new code ----------------------------------------------------------------

def test_hanging_hook_with_a_background_child_is_killed(myenv: Path, tmp_path: Path,
                                                        monkeypatch: pytest.MonkeyPatch) -> None:
    """A hook that hangs and leaves a child holding its pipes: doctor gives up after the
    timeout, kills the whole group (nothing left behind) and fails that hook."""
    import ekl.envs.doctor as doctormod
    from ekl.launcher.plugin import load

    pidfile = tmp_path / "child.pid"
    write_hook(myenv, "activate.d", "zz-hang.sh",
               f"sleep 300 &\necho $! > {pidfile}\nsleep 300\n")
    monkeypatch.setattr(doctormod, "HOOK_TIMEOUT_S", 1.5)
    checks = {c.name: c for c in doctormod.doctor(load(str(write_plugin(tmp_path / "p"))).env_request())}
    assert checks["hook zz-hang.sh"].status == "fail"
    assert "did not finish" in checks["hook zz-hang.sh"].detail
    pid = int(pidfile.read_text())
    for _ in range(50):
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            break
        import time
        time.sleep(0.1)
    else:
        os.kill(pid, 9)
        pytest.fail("the hook's background child survived")


def test_billion_laughs_lock_is_one_short_line(tmp_path: Path) -> None:
    lines = ["version: 1", "a0: &a0 [x, x, x, x, x, x, x, x, x]"]
    for i in range(1, 9):
        prev = f"*a{i - 1}"
        lines.append(f"a{i}: &a{i} [{', '.join([prev] * 9)}]")
    lines.append("package: {bomb: *a8}")
    p = tmp_path / "conda-lock.yml"
    p.write_text("\n".join(lines) + "\n")
    with pytest.raises(EnvError) as e:
        read_lock(p)
    msg = _one_line(e.value)
    assert len(msg) < 400 and "package is dict" in msg


def test_bad_env_prompt_is_found_before_activation(myenv: Path, home: Path) -> None:
    write_condarc(home / ".condarc", env_prompt="({nope}) ")
    with pytest.raises(EnvError) as e:
        find_environment("conda", "myenv")
    assert _one_line(e.value).startswith(f"{home / '.condarc'}: env_prompt")


def test_list_survives_a_broken_env(myenv: Path, conda_root: Path, channel,
                                    tmp_path: Path) -> None:
    broken = make_conda_prefix(conda_root / "envs" / "broken", channel, cache=tmp_path / "rc")
    write_env_vars_d(broken, "bad.json", "{nope")
    cp = env_cli("list", "--json")
    assert cp.returncode == 0, cp.stderr
    rows = {r["prefix"]: r for r in json.loads(cp.stdout)}
    assert rows[str(broken)]["version"] is None and rows[str(myenv)]["version"]


def test_envs_is_a_library_that_never_imports_the_launcher() -> None:
    """Issue 10: no envs module imports ekl.launcher (its CLI lives in launcher/cli/env.py),
    and none reads plugin JSON but the temporary _manifest.py, used by that CLI only."""
    import ast

    root = Path(__file__).resolve().parents[2] / "envs"
    for path in sorted(root.glob("*.py")):
        tree = ast.parse(path.read_text())
        for node in ast.walk(tree):
            mods = []
            if isinstance(node, ast.Import):
                mods = [a.name for a in node.names]
            elif isinstance(node, ast.ImportFrom):
                mods = [node.module or ""]
            assert not any(m.startswith("ekl.launcher") for m in mods), (path.name, mods)
        if path.name != "_manifest.py":
            assert "_manifest" not in path.read_text(), path.name
def test_doctor_without_env_checks_the_interpreter_the_launcher_uses(home: Path,
                                                                      tmp_path: Path) -> None:
    import sys

    d = write_plugin(tmp_path / "demo", env=None, kind=None)
    cp = env_cli("doctor", str(d), "--json")
    checks = {c["name"]: c for c in json.loads(cp.stdout)["checks"]}
    assert cp.returncode == 0, cp.stdout
    assert sys.executable in checks["environment"]["detail"]
    assert sys.executable in checks["launcher"]["detail"]


def test_launcher_start_with_a_bad_lock(myenv: Path, tmp_path: Path,
                                        caplog: pytest.LogCaptureFixture) -> None:
    """Item 1 through the launcher's own resolver: --lock warn starts with a warning,
    --lock strict stops with one line (no traceback either way)."""
    from ekl.launcher.errors import EklError
    from ekl.launcher.plugin import load
    from ekl.launcher.settings import LaunchOptions
    from ekl.launcher.start.resolve import resolve

    d = write_plugin(tmp_path / "demo")
    (d / "conda-lock.yml").write_text("version: 1\npackage: 5\n")
    manifest = load(str(d))
    with caplog.at_level(logging.WARNING, logger="ekl"):
        spec = resolve(manifest, LaunchOptions(lock_policy="warn"))
    assert spec.interpreter == str(myenv / "bin" / "python")
    assert any("cannot check the lock" in r.getMessage() for r in caplog.records)
    with pytest.raises(EklError) as e:
        resolve(manifest, LaunchOptions(lock_policy="strict"))
    assert "conda-lock.yml:2: package is int 5" in _one_line(e.value)
