"""End to end: real plugins started in a conda-style env (the stand-in of envs_testlib).

The first tests start the plugin as the launcher does, with ``activation()`` for the
environment and ``wrap_command()`` for the argv, and look at what the plugin process sees.
The last one goes through ``ekl call`` itself.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest

from ekl.envs import check_lock_for_launch, find_environment
from ekl.envs.lock import current_subdir
from ekl.envs.probe import clean_env

from .envs_testlib import lock_of, rattler_install, write_conda_lock, write_plugin

PLUGIN_MAIN = r'''
import json, os, signal, sys, time
def on_term(signum, frame):
    print(json.dumps({"event": "sigterm"}), flush=True)
    sys.exit(0)
signal.signal(signal.SIGTERM, on_term)
keys = ["CONDA_PREFIX", "CONDA_SHLVL", "CONDA_DEFAULT_ENV", "CONDA_PROMPT_MODIFIER",
        "EKL_DATA_DIR", "EKL_DATA_HOOK", "EKL_MODE", "EKL_SHARED", "EKL_LOWER", "EKL_GONE",
        "PYTHONPATH", "PYTHONHOME"]
print(json.dumps({"pid": os.getpid(), "argv": sys.argv[1:], "prefix": sys.prefix,
                  "exe": sys.executable, "cwd": os.getcwd(),
                  "path0": os.environ["PATH"].split(":")[0],
                  "env": {k: os.environ.get(k) for k in keys}}), flush=True)
time.sleep(60)
'''


def test_plugin_runs_in_env_with_exec_pid_and_signals(myenv: Path, tmp_path: Path,
                                                      monkeypatch: pytest.MonkeyPatch) -> None:
    d = write_plugin(tmp_path / "demo")
    (d / "main.py").write_text(PLUGIN_MAIN)
    monkeypatch.setenv("PYTHONPATH", "/launcher/leak")  # the launcher's own, must not leak
    env = find_environment("conda", "myenv", plugin_dir=d)
    conf = '{"sendTimeout":1000}'
    argv = env.wrap_command([str(env.python), "-u", str(d / "main.py"), conf])
    p = subprocess.Popen(argv, env=env.activation(clean_env(os.environ)), cwd=str(d),
                         stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        first = json.loads(p.stdout.readline())  # stdout carries the plugin's output only
        assert first["pid"] == p.pid  # exec: the PID the launcher knows is the plugin's
        assert first["argv"] == [conf]
        assert first["prefix"] == str(myenv) and first["exe"] == str(env.python)
        assert first["path0"] == str(myenv / "bin") and first["cwd"] == str(d)
        assert first["env"] == {
            "CONDA_PREFIX": str(myenv), "CONDA_SHLVL": "1", "CONDA_DEFAULT_ENV": "myenv",
            "CONDA_PROMPT_MODIFIER": "(myenv) ", "EKL_DATA_DIR": "/opt/ekl-data",
            "EKL_DATA_HOOK": f"hooked:{myenv}", "EKL_MODE": "test", "EKL_SHARED": "from-state",
            "EKL_LOWER": "upper-cased", "EKL_GONE": None, "PYTHONPATH": None,
            "PYTHONHOME": None}
        p.send_signal(signal.SIGTERM)  # straight to the interpreter, no shell in between
        assert json.loads(p.stdout.readline()) == {"event": "sigterm"}
        assert p.wait(timeout=10) == 0
        assert "ekl-data activate hook ran" in p.stderr.read()
    finally:
        if p.poll() is None:
            p.kill()
            p.wait()
        p.stdout.close()
        p.stderr.close()


FUNC_PLUGIN = '''
import os, sys
from ekuiper import Function, PluginConfig, plugin

class GetEnv(Function):
    def validate(self, args):
        return ""
    def exec(self, args, ctx):
        return {"value": os.environ.get(args[0]), "prefix": sys.prefix,
                "hook": os.environ.get("EKL_DATA_HOOK")}
    def is_aggregate(self):
        return False

if __name__ == "__main__":
    plugin.start(PluginConfig("envprobe", {}, {}, {"getenv": lambda: GetEnv()}))
'''


def test_ekl_call_in_conda_style_env(myenv: Path, channel, tmp_path: Path) -> None:
    cli = pytest.importorskip("ekl.launcher.cli")
    if not hasattr(cli, "main"):
        pytest.skip("ekl.launcher.cli has no main yet")
    import pynng

    # pynng for the env, as conda-forge would provide it; ekl hosts its own SDK
    site = next(myenv.glob("lib/python*/site-packages"))
    (site / "ekl-test-lend.pth").write_text(str(Path(pynng.__file__).parents[1]) + "\n")
    d = write_plugin(tmp_path / "envprobe", name="envprobe", extra={
        "executable": "envprobe.py", "sources": [], "sinks": [], "functions": ["getenv"]})
    (d / "envprobe.py").write_text(FUNC_PLUGIN)
    pk = [channel.get("ekl-hello", "1.0"), channel.get("ekl-data", "0.1")]
    write_conda_lock(d / "conda-lock.yml", pk, current_subdir())

    def call(*extra: str) -> subprocess.CompletedProcess:
        return subprocess.run([sys.executable, "-m", "ekl.launcher.cli", "call", str(d),
                               "getenv", '"EKL_MODE"', *extra], capture_output=True, text=True,
                              timeout=60, env=dict(os.environ))

    cp = call()
    assert cp.returncode == 0, cp.stderr
    assert json.loads(cp.stdout) == {"value": "test", "prefix": str(myenv),
                                     "hook": f"hooked:{myenv}"}
    # a changed package: `ekl env check` sees it, and --lock strict refuses to start
    rattler_install(myenv, [channel.get("ekl-hello", "1.1"), pk[1]], tmp_path / "rc2")
    m = json.loads((d / "envprobe.json").read_text())
    env = find_environment("conda", "myenv")
    assert "ekl-hello 1.0 -> 1.1" in (check_lock_for_launch(d, lock_of(m), env, "warn") or "")
    if "--lock" in subprocess.run([sys.executable, "-m", "ekl.launcher.cli", "call", "-h"],
                                  capture_output=True, text=True).stdout:
        cp = call("--lock", "strict")
        assert cp.returncode == 1 and "drifted from" in cp.stderr  # as `ekl env check` on drift
