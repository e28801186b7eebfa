"""ekl's pytest plugin, run the way authors run it: pytest in a subprocess.

The example's tests and a fresh skeleton's tests must pass; a failing test must still
leave no process behind; the marker, the option, the ini setting and the factory must
each pick the plugin they name.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

from conftest import EXAMPLES, REPO
from ekl.launcher.authoring.scaffold import init_plugin
from ekl.launcher.process import is_gone


def pytest_run(*args: str, cwd: Path, timeout: float = 90) -> subprocess.CompletedProcess:
    """pytest in a subprocess, without this suite's xdist/ini, with ekl's plugin loaded."""
    env = dict(os.environ)
    env.pop("PYTEST_XDIST_WORKER", None)
    env.pop("PYTEST_ADDOPTS", None)
    return subprocess.run([sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider",
                           "-p", "no:xdist", *args], cwd=cwd, env=env, capture_output=True,
                          text=True, timeout=timeout)


def test_the_example_tests_pass():
    cp = pytest_run(str(EXAMPLES / "pysam"), cwd=REPO)
    assert cp.returncode == 0, cp.stdout + cp.stderr
    assert "7 passed" in cp.stdout


def test_a_fresh_skeletons_tests_pass(tmp_path):
    name = f"fresh{os.urandom(3).hex()}"
    folder = tmp_path / name
    init_plugin(name, folder)
    cp = pytest_run(cwd=folder)
    assert cp.returncode == 0, cp.stdout + cp.stderr
    assert "4 passed" in cp.stdout


def test_a_failing_test_leaves_no_process(tmp_path):
    name = f"fail{os.urandom(3).hex()}"
    folder = tmp_path / name
    init_plugin(name, folder)
    pidfile = tmp_path / "pid"
    (folder / "test_fails.py").write_text(
        "def test_fails(ekl_plugin):\n"
        f"    open({str(pidfile)!r}, 'w').write(str(ekl_plugin.pid))\n"
        f"    ekl_plugin.read({name + '_source'!r}, 1, config={{'interval': 0.01}})\n"
        "    assert False, 'on purpose'\n")
    cp = pytest_run("test_fails.py", cwd=folder)
    assert cp.returncode == 1 and "on purpose" in cp.stdout, cp.stdout + cp.stderr
    pid = int(pidfile.read_text())
    assert is_gone(pid), f"plugin process {pid} outlived the failed test"


def test_marker_option_ini_and_factory_pick_their_plugin(tmp_path):
    a = tmp_path / "plugins" / "pa"
    init_plugin("pa", a)
    b = tmp_path / "plugins" / "pb"
    init_plugin("pb", b)
    tests = tmp_path / "elsewhere"
    tests.mkdir()
    (tests / "test_pick.py").write_text(
        "import pytest\n\n"
        "@pytest.mark.ekl_plugin('../plugins/pb')\n"
        "def test_marker(ekl_plugin):\n"
        "    assert ekl_plugin.name == 'pb' and ekl_plugin.call('pb_upper', 'x') == 'X'\n\n"
        "def test_option_or_ini(ekl_plugin):\n"
        "    assert ekl_plugin.name == 'pa'\n\n"
        "def test_factory(ekl_plugin_factory):\n"
        "    one = ekl_plugin_factory('../plugins/pa')\n"
        "    two = ekl_plugin_factory('../plugins/pb')\n"
        "    assert one.call('pa_upper', 'a') == 'A' and two.call('pb_upper', 'b') == 'B'\n"
        "    assert one.ping() < 5 and two.pid != one.pid\n"
        "    assert two.feed('pb_sink', [{'k': 1}], config={'prefix': 'seen'}) == [None]\n"
        "    assert two.wait_output('^seen ').startswith('seen ')\n")
    cp = pytest_run("--ekl-plugin", "../plugins/pa", "test_pick.py", cwd=tests)
    assert cp.returncode == 0, cp.stdout + cp.stderr
    (tests / "pytest.ini").write_text("[pytest]\nekl_plugin = ../plugins/pa\n")
    # the factory ignores option and ini alike (it ran above): the ini run skips its 2 starts
    cp = pytest_run("-k", "not factory", "test_pick.py", cwd=tests)
    assert cp.returncode == 0 and "2 passed, 1 deselected" in cp.stdout, cp.stdout + cp.stderr


def test_no_plugin_found_is_one_clear_line(tmp_path):
    (tmp_path / "test_none.py").write_text("def test_x(ekl_plugin):\n    pass\n")
    cp = pytest_run("test_none.py", cwd=tmp_path)
    assert cp.returncode == 1
    assert "no plugin for the ekl_plugin fixture" in cp.stdout
    assert "Traceback" not in cp.stdout
