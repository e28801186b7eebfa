"""A plugin whose JSON names no environment but has a lock file beside it.

Stand-ins for conda, as in the rest of tests/envs: the prefix is a venv made with
--copies plus conda-meta records written by py-rattler from a local file:// channel.
"""

from __future__ import annotations

import json
import logging
import sys
from pathlib import Path

import pytest

from ekl.envs import LOCAL_ENV_DIR
from ekl.envs.lock import current_subdir
from ekl.launcher.errors import EklError
from ekl.launcher.plugin import load
from ekl.launcher.settings import LaunchOptions
from ekl.launcher.start.resolve import resolve

from .envs_testlib import make_conda_prefix, write_conda_lock


def locked_plugin(plugin_copy, channel) -> Path:
    folder = plugin_copy("compat")
    pkgs = [channel.get("ekl-hello", "1.0"), channel.get("ekl-data", "0.1")]
    write_conda_lock(folder / "conda-lock.yml", pkgs, current_subdir())
    return folder


def test_plugin_runs_in_the_environment_built_from_its_lock(home, channel, plugin_copy, host,
                                                            tmp_path):
    folder = locked_plugin(plugin_copy, channel)
    prefix = make_conda_prefix(folder / LOCAL_ENV_DIR, channel, system_site=True,
                               cache=tmp_path / "rattler-cache")
    res = resolve(load(folder), LaunchOptions(lock_policy="strict"))
    assert res.interpreter.startswith(str(prefix))
    assert "built from the lock file" in res.origin
    inst = host.start(folder)
    got = inst.start_function("where").exec([["CONDA_PREFIX", "EKL_DATA_DIR"]])
    assert got["executable"].startswith(str(prefix))
    assert got["env"] == {"CONDA_PREFIX": str(prefix), "EKL_DATA_DIR": "/opt/ekl-data"}


def test_local_verbs_say_how_to_build_a_missing_local_environment(home, channel, plugin_copy,
                                                                   caplog):
    folder = locked_plugin(plugin_copy, channel)
    with caplog.at_level(logging.WARNING, logger="ekl"):
        res = resolve(load(folder))
    assert res.interpreter == sys.executable
    assert f"build it with `ekl env create {folder}`" in caplog.text


def test_ekl_python_builds_the_local_environment_on_first_start(home, channel, plugin_copy):
    folder = locked_plugin(plugin_copy, channel)
    # The test channel's packages carry no python, so the built prefix cannot run the
    # plugin; what matters here is that the first start built it from the lock.
    with pytest.raises(EklError) as e:
        resolve(load(folder), LaunchOptions(create_env=True))
    prefix = folder / LOCAL_ENV_DIR
    names = {json.loads(p.read_text())["name"] for p in (prefix / "conda-meta").glob("*.json")}
    assert names == {"ekl-hello", "ekl-data"}
    assert "\n" not in str(e.value) and "python" in str(e.value)
