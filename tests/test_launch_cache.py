"""The launch cache (launcher/start/cache.py): a hit is the resolution a fresh start would
make, and every input and file it depends on invalidates it.

The environment is a conda-style prefix built here without conda (none exists on this
machine): a ``venv --copies`` interpreter with ``conda-meta/history``, a package record,
``conda-meta/state`` env vars, an ``activate.d`` hook and an ``env_vars.d`` file, which is
what ekl's activation reads. Everything else is real: real files, interpreters, processes.
"""

from __future__ import annotations

import json
import logging
import os
import shutil
import stat
import subprocess
import sys
import textwrap
import time
from pathlib import Path
from typing import Optional

import pytest

from ekl.launcher.plugin import load
from ekl.launcher.process import LaunchSpec
from ekl.launcher.settings import LaunchOptions
from ekl.launcher.start import cache
from ekl.launcher.start.resolve import resolve

REPO = Path(__file__).resolve().parent.parent


@pytest.fixture(autouse=True)
def private_cache(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    d = tmp_path / "ekl-cache"
    monkeypatch.setenv("EKL_CACHE_DIR", str(d))
    return d


@pytest.fixture(scope="module")
def prefix(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A conda-style prefix (see the module docstring): built once, copied per test."""
    p = tmp_path_factory.mktemp("envs") / "tmpl"
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "VIRTUAL_ENV")}
    subprocess.run([sys.executable, "-m", "venv", "--copies", "--without-pip", str(p)],
                   check=True, env=env)
    meta = p / "conda-meta"
    meta.mkdir()
    (meta / "history").write_text("==> 2025-01-01 00:00:00 <==\n# cmd: conda create -p x\n")
    (meta / "ekl-data-0.1-0.json").write_text(json.dumps({
        "name": "ekl-data", "version": "0.1", "build": "0", "build_number": 0,
        "channel": "file:///channel", "files": [], "subdir": "noarch"}))
    (meta / "state").write_text(json.dumps({"env_vars": {"EKL_STATE_VAR": "from-state"}}))
    (p / "etc" / "conda" / "activate.d").mkdir(parents=True)
    (p / "etc" / "conda" / "activate.d" / "hook.sh").write_text("export EKL_HOOK=1\n")
    (p / "etc" / "conda" / "env_vars.d").mkdir(parents=True)
    (p / "etc" / "conda" / "env_vars.d" / "data.json").write_text(
        json.dumps({"EKL_DATA_DIR": "/opt/data"}))
    return p


def aged(path: Path) -> None:
    """Stamp a file (and the folder it is in) a minute ago, as files are between starts.

    Files written just before a resolution are "racy" (stamped in the same clock tick as
    the start of resolving) and deliberately not cached; real plugins are not written in
    the millisecond before they start.
    """
    t = time.time() - 60
    for p in (path, path.parent):
        os.utime(p, (t, t))


def age_tree(root: Path) -> None:
    t = time.time() - 60
    for dirpath, dirnames, filenames in os.walk(root):
        for n in filenames + dirnames:
            os.utime(os.path.join(dirpath, n), (t, t), follow_symlinks=False)
    os.utime(root, (t, t))


def conda_plugin(plugin_copy, prefix: Path, tmp_path: Path) -> Path:
    env_prefix = tmp_path / "envs" / "demo"
    env_prefix.parent.mkdir()
    shutil.copytree(prefix, env_prefix, symlinks=True)
    folder = plugin_copy("compat")
    j = next(folder.glob("*.json"))
    m = json.loads(j.read_text())
    m.update(virtualEnvType="conda", env=str(env_prefix))
    j.write_text(json.dumps(m))
    age_tree(tmp_path)
    return folder


def plain_plugin(plugin_copy, tmp_path: Path) -> Path:
    folder = plugin_copy("compat")
    age_tree(tmp_path)
    return folder


def same(a: LaunchSpec, b: LaunchSpec) -> None:
    assert (a.name, a.argv, a.cwd, a.interpreter, a.environment, a.origin, a.sdk,
            a.log_file) == (b.name, b.argv, b.cwd, b.interpreter, b.environment, b.origin,
                            b.sdk, b.log_file)
    assert dict(a.env) == dict(b.env)


def hit(folder: Path, opts: Optional[LaunchOptions] = None,
        host_sdk: str = "missing") -> Optional[LaunchSpec]:
    return cache.lookup(load(folder), opts or LaunchOptions(), host_sdk)


def stored(folder: Path, opts: Optional[LaunchOptions] = None,
           host_sdk: str = "missing") -> LaunchSpec:
    """Resolve (storing the entry) and check that the next lookup is a hit."""
    spec = resolve(load(folder), opts, host_sdk=host_sdk)
    again = hit(folder, opts, host_sdk)
    assert again is not None, "the entry was not stored"
    same(again, spec)
    return spec


# --- a hit is the fresh answer --------------------------------------------------------


def test_a_hit_is_what_a_fresh_resolution_gives_in_a_conda_prefix(plugin_copy, prefix,
                                                                   tmp_path):
    folder = conda_plugin(plugin_copy, prefix, tmp_path)
    first = stored(folder)
    fresh = resolve(load(folder), use_cache=False)
    same(first, fresh)
    assert fresh.env["EKL_STATE_VAR"] == "from-state"
    assert fresh.env["EKL_DATA_DIR"] == "/opt/data"
    assert fresh.env["CONDA_PREFIX"] == str(tmp_path / "envs" / "demo")
    assert any("hook.sh" in a for a in fresh.argv)  # the activate.d hook wraps the command
    assert fresh.sdk == "hosted"  # no ekuiper in the prefix: ekl lends its SDK


def test_a_hit_carries_the_current_value_of_volatile_variables(plugin_copy, tmp_path,
                                                               monkeypatch):
    folder = plain_plugin(plugin_copy, tmp_path)
    monkeypatch.setenv("PWD", "/first")
    stored(folder)
    monkeypatch.setenv("PWD", "/second")
    spec = hit(folder)
    assert spec is not None and spec.env["PWD"] == "/second"


def test_an_inherited_containment_token_does_not_miss(plugin_copy, tmp_path, monkeypatch):
    """An ``ekl-python`` that ekl started carries a new EKL_CONTAINMENT at every start;
    with it in the key, every one of its starts was a miss (found by bench_startup)."""
    folder = plain_plugin(plugin_copy, tmp_path)
    monkeypatch.setenv("EKL_CONTAINMENT", "a" * 32)
    stored(folder)
    monkeypatch.setenv("EKL_CONTAINMENT", "b" * 32)
    assert hit(folder) is not None


def test_a_cached_start_does_not_import_envs_or_probe(plugin_copy, tmp_path):
    folder = plain_plugin(plugin_copy, tmp_path)
    code = textwrap.dedent(f"""
        import sys
        from ekl.launcher.plugin import load
        from ekl.launcher.start.resolve import resolve
        spec = resolve(load({str(folder)!r}))
        print(sorted(m for m in sys.modules if m.startswith("ekl.envs")))
    """)
    env = dict(os.environ, EKL_CACHE_DIR=os.environ["EKL_CACHE_DIR"])
    first = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                           env=env, check=True)
    assert "ekl.envs.probe" in first.stdout  # the miss resolved
    second = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                            env=env, check=True)
    assert second.stdout.strip() == "[]", second.stdout


def test_ekl_call_twice_answers_the_same(plugin_copy, tmp_path):
    folder = plain_plugin(plugin_copy, tmp_path)
    ekl = str(Path(sys.executable).with_name("ekl"))
    outs = [subprocess.run([ekl, "-q", "call", str(folder), "echo", '"x"'], capture_output=True,
                           text=True, timeout=60) for _ in range(2)]
    assert [o.returncode for o in outs] == [0, 0], outs[-1].stderr
    assert outs[0].stdout == outs[1].stdout and outs[0].stdout.strip()
    assert len(list(Path(os.environ["EKL_CACHE_DIR"], "launch").glob("*.json"))) == 1


def test_logged_warnings_come_again_on_every_hit(plugin_copy, tmp_path, caplog):
    folder = plain_plugin(plugin_copy, tmp_path)
    kuiper = tmp_path / "kuiper.yaml"
    kuiper.write_text(f"portable:\n  pythonBin: {sys.executable}\n")
    aged(kuiper)
    opts = LaunchOptions(ekuiper_conf=str(kuiper))
    with caplog.at_level(logging.WARNING, logger="ekl"):
        stored(folder, opts)
        caplog.clear()
        assert hit(folder, opts) is not None
    assert "initTimeout is missing" in caplog.text


# --- every invalidation ---------------------------------------------------------------


def touch(p: Path, content: Optional[str] = None) -> None:
    if content is not None:
        p.write_text(content)
    else:
        os.utime(p, None)


def test_the_plugin_json_changing_invalidates(plugin_copy, tmp_path):
    folder = plain_plugin(plugin_copy, tmp_path)
    stored(folder)
    j = next(folder.glob("*.json"))
    touch(j)  # same content, new mtime
    assert hit(folder) is None
    stored(folder)
    m = json.loads(j.read_text())
    m["version"] = "v9.9.9"
    j.write_text(json.dumps(m))
    aged(j)  # an old mtime with a new size still counts
    assert hit(folder) is None


def test_a_lock_file_appearing_or_changing_invalidates(plugin_copy, tmp_path):
    folder = plain_plugin(plugin_copy, tmp_path)
    stored(folder)
    lock = folder / "conda-lock.yml"
    lock.write_text("version: 1\nmetadata: {}\npackage: []\n")
    assert hit(folder) is None  # the folder changed
    age_tree(folder)
    stored(folder, LaunchOptions(lock_policy="off"))
    touch(lock, "version: 1\nmetadata: {}\npackage: []\n# edited\n")
    assert hit(folder, LaunchOptions(lock_policy="off")) is None


def test_the_interpreter_changing_invalidates(plugin_copy, prefix, tmp_path):
    folder = conda_plugin(plugin_copy, prefix, tmp_path)
    stored(folder)
    py = tmp_path / "envs" / "demo" / "bin" / "python"
    real = py.resolve()
    tmp = real.with_name(real.name + ".new")
    shutil.copy2(real, tmp)
    os.replace(tmp, real)  # a reinstall: a new file (inode) at the same path
    assert hit(folder) is None


def test_a_package_installed_into_site_packages_invalidates(plugin_copy, prefix, tmp_path):
    folder = conda_plugin(plugin_copy, prefix, tmp_path)
    stored(folder)
    site = next((tmp_path / "envs" / "demo" / "lib").glob("python*/site-packages"))
    (site / "ekuiper").mkdir()
    (site / "ekuiper" / "__init__.py").write_text("")
    assert hit(folder) is None


@pytest.mark.parametrize("change", ["history", "record", "state", "hook", "env_vars"])
def test_the_environment_changing_invalidates(plugin_copy, prefix, tmp_path, change):
    folder = conda_plugin(plugin_copy, prefix, tmp_path)
    stored(folder)
    p = tmp_path / "envs" / "demo"
    if change == "history":  # every conda transaction appends here
        with open(p / "conda-meta" / "history", "a") as f:
            f.write("==> 2025-02-02 00:00:00 <==\n# cmd: conda install x\n")
    elif change == "record":
        (p / "conda-meta" / "x-1-0.json").write_text("{}")
    elif change == "state":  # conda env config vars set
        touch(p / "conda-meta" / "state",
              json.dumps({"env_vars": {"EKL_STATE_VAR": "changed!!!"}}))
    elif change == "hook":
        (p / "etc" / "conda" / "activate.d" / "zz.sh").write_text("export B=2\n")
    else:
        touch(p / "etc" / "conda" / "env_vars.d" / "data.json",
              json.dumps({"EKL_DATA_DIR": "/opt/other"}))
    assert hit(folder) is None
    if change == "state":
        assert resolve(load(folder)).env["EKL_STATE_VAR"] == "changed!!!"


def test_the_kuiper_yaml_changing_invalidates(plugin_copy, tmp_path):
    folder = plain_plugin(plugin_copy, tmp_path)
    kuiper = tmp_path / "kuiper.yaml"
    kuiper.write_text(f"portable:\n  pythonBin: {sys.executable}\n  initTimeout: 5000\n")
    aged(kuiper)
    opts = LaunchOptions(ekuiper_conf=str(kuiper))
    stored(folder, opts)
    touch(kuiper, "portable:\n  pythonBin: /usr/bin/python3\n  initTimeout: 5000\n")
    assert hit(folder, opts) is None


def test_the_ekl_version_is_part_of_the_key(plugin_copy, tmp_path, monkeypatch):
    folder = plain_plugin(plugin_copy, tmp_path)
    stored(folder)
    monkeypatch.setattr(cache, "__version__", "99.0")
    assert hit(folder) is None


@pytest.mark.parametrize("name,value", [("EKUIPER_TRANSPORT", "pynng"),
                                        ("EKL_PYTHON_BIN", "/usr/bin/python3"),
                                        ("PATH", "/nowhere:/usr/bin:/bin"),
                                        ("EKL_ANYTHING", "x")])
def test_the_callers_environment_is_part_of_the_key(plugin_copy, tmp_path, monkeypatch, name,
                                                    value):
    folder = plain_plugin(plugin_copy, tmp_path)
    stored(folder)
    monkeypatch.setenv(name, value)
    assert hit(folder) is None


def test_options_and_host_sdk_are_part_of_the_key(plugin_copy, tmp_path):
    folder = plain_plugin(plugin_copy, tmp_path)
    stored(folder)
    assert hit(folder, LaunchOptions(lock_policy="strict")) is None
    assert hit(folder, LaunchOptions(send_timeout_ms=7)) is None
    assert hit(folder, LaunchOptions(extra_env={"A": "1"})) is None
    assert hit(folder, host_sdk="always") is None
    assert hit(folder) is not None


def test_the_lent_sdk_disappearing_invalidates(plugin_copy, prefix, tmp_path):
    folder = conda_plugin(plugin_copy, prefix, tmp_path)
    spec = stored(folder)
    lent = Path(spec.env["PYTHONPATH"])
    shutil.rmtree(lent)
    assert hit(folder) is None
    spec = resolve(load(folder))
    assert (Path(spec.env["PYTHONPATH"]) / "ekuiper" / "__init__.py").is_file()


def test_a_file_changed_while_resolving_is_not_stored(plugin_copy, tmp_path):
    folder = plain_plugin(plugin_copy, tmp_path)
    m = load(folder)
    spec = resolve(m, use_cache=False)
    deps = cache.dependencies(m, LaunchOptions(), spec, None, None, None)
    assert cache.store(m, LaunchOptions(), "missing", spec, deps, [],
                       started_ns=cache.clock_ns()) is not None
    touch(m.path)
    # resolution started before the JSON's new stamp: its answer may predate the change
    assert cache.store(m, LaunchOptions(), "missing", spec, deps, [],
                       started_ns=cache.clock_ns() - 10_000_000_000) is None


# --- hostile or broken cache files -------------------------------------------------------


@pytest.mark.parametrize("content", [
    b"", b"\x00\xff garbage", b'{"format": 1', b"[]", b'{"format": 1, "key": "x"}',
    b"9" * 5000, b"[" * 100000,
])
def test_a_broken_entry_is_a_miss_and_gets_replaced(plugin_copy, tmp_path, content):
    folder = plain_plugin(plugin_copy, tmp_path)
    stored(folder)
    path = next(Path(os.environ["EKL_CACHE_DIR"], "launch").glob("*.json"))
    path.write_bytes(content)
    assert hit(folder) is None
    stored(folder)


@pytest.mark.parametrize("field,value", [
    ("argv", "python"), ("argv", []), ("argv", [1, 2]), ("env_set", {"A": 1}),
    ("env_unset", "PATH"), ("interpreter", 3), ("name", "other"), ("cwd", None),
])
def test_an_entry_with_wrong_types_is_a_miss(plugin_copy, tmp_path, field, value):
    folder = plain_plugin(plugin_copy, tmp_path)
    stored(folder)
    path = next(Path(os.environ["EKL_CACHE_DIR"], "launch").glob("*.json"))
    entry = json.loads(path.read_text())
    entry["spec"][field] = value
    path.write_text(json.dumps(entry))
    assert hit(folder) is None


def test_an_oversized_entry_is_not_read(plugin_copy, tmp_path, monkeypatch):
    folder = plain_plugin(plugin_copy, tmp_path)
    stored(folder)
    path = next(Path(os.environ["EKL_CACHE_DIR"], "launch").glob("*.json"))
    entry = json.loads(path.read_text())
    entry["pad"] = "x" * (cache.MAX_ENTRY_BYTES + 1)
    path.write_text(json.dumps(entry))
    assert hit(folder) is None


def test_a_folder_others_can_write_is_not_used(plugin_copy, tmp_path):
    folder = plain_plugin(plugin_copy, tmp_path)
    stored(folder)
    launch = Path(os.environ["EKL_CACHE_DIR"], "launch")
    launch.chmod(0o777)
    assert hit(folder) is None
    m = load(folder)
    spec = resolve(m)
    assert cache.store(m, LaunchOptions(), "missing", spec, [], [], cache.clock_ns()) is None
    assert stat.S_IMODE(launch.stat().st_mode) == 0o777


def test_an_unusable_cache_folder_only_costs_the_cache(plugin_copy, tmp_path, monkeypatch):
    folder = plain_plugin(plugin_copy, tmp_path)
    monkeypatch.setenv("EKL_CACHE_DIR", "/dev/null/ekl")
    spec = resolve(load(folder), LaunchOptions(python=sys.executable))
    assert spec.interpreter == sys.executable


def test_entries_are_bounded(plugin_copy, tmp_path, monkeypatch):
    monkeypatch.setattr(cache, "MAX_ENTRIES", 3)
    folder = plain_plugin(plugin_copy, tmp_path)
    for i in range(7):
        resolve(load(folder), LaunchOptions(send_timeout_ms=1000 + i))
    assert len(os.listdir(Path(os.environ["EKL_CACHE_DIR"], "launch"))) <= 3


def test_cache_root_is_the_one_envs_uses(monkeypatch, tmp_path):
    from ekl.envs.probe import cache_dir

    for env in ({"EKL_CACHE_DIR": str(tmp_path / "a")}, {"XDG_CACHE_HOME": str(tmp_path / "b")},
                {}):
        for k in ("EKL_CACHE_DIR", "XDG_CACHE_HOME"):
            monkeypatch.delenv(k, raising=False)
        for k, v in env.items():
            monkeypatch.setenv(k, v)
        assert cache.cache_root() == cache_dir()


WRITER = """
import sys, time
from ekl.launcher.plugin import load
from ekl.launcher.settings import LaunchOptions
from ekl.launcher.start import cache
from ekl.launcher.start.resolve import resolve
m = load(sys.argv[1])
spec = resolve(m, use_cache=False)
deps = cache.dependencies(m, LaunchOptions(), spec, None, None, None)
for i in range(int(sys.argv[2])):
    assert cache.store(m, LaunchOptions(), "missing", spec, deps, [(30, f"w{i}")],
                       cache.clock_ns()) is not None
"""


def test_concurrent_writers_never_leave_half_an_entry(plugin_copy, tmp_path):
    folder = plain_plugin(plugin_copy, tmp_path)
    stored(folder)
    path = next(Path(os.environ["EKL_CACHE_DIR"], "launch").glob("*.json"))
    procs = [subprocess.Popen([sys.executable, "-c", WRITER, str(folder), "40"])
             for _ in range(4)]
    reads = 0
    try:
        while any(p.poll() is None for p in procs):
            entry = json.loads(path.read_bytes())  # never partial: each write is a rename
            assert entry["key"] and entry["deps"]
            reads += 1
    finally:
        for p in procs:
            p.wait(60)
    assert [p.returncode for p in procs] == [0, 0, 0, 0]
    assert reads > 0
    leftovers = [n for n in os.listdir(path.parent) if n.endswith(".tmp")]
    assert not leftovers
    assert hit(folder) is not None



def test_records_of_other_threads_are_not_captured():
    import threading

    log = logging.getLogger("ekl")
    from ekl.launcher.start.logcapture import LogCapture

    with LogCapture() as cap:
        t = threading.Thread(target=log.warning, args=("another plugin's warning",))
        t.start()
        t.join()
        log.warning("this plugin's warning")
    assert [m for _, m in cap.records] == ["this plugin's warning"]


def test_a_deleted_current_folder_bypasses_the_cache(plugin_copy, tmp_path, monkeypatch):
    folder = plain_plugin(plugin_copy, tmp_path)
    gone = tmp_path / "gone"
    gone.mkdir()
    monkeypatch.chdir(gone)
    gone.rmdir()
    spec = resolve(load(folder))
    assert spec.interpreter == sys.executable
    assert not Path(os.environ["EKL_CACHE_DIR"], "launch").exists()
