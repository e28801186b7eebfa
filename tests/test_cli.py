"""The ``ekl`` verbs as a user runs them: real processes, real signals, one-line errors."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import psutil
import pytest

from conftest import EXAMPLES
from ekl.launcher.process import is_gone

PYSAM = str(EXAMPLES / "pysam")


def ekl(*args: str, stdin: str | None = None, timeout: float = 60, **kw) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "ekl.launcher.cli", *args], input=stdin,
                          capture_output=True, text=True, timeout=timeout, **kw)


def no_traceback(cp: subprocess.CompletedProcess) -> None:
    assert "Traceback" not in cp.stderr, cp.stderr


def test_run_prints_count_records_and_cleans_up(ipc_dir):
    cp = ekl("run", PYSAM, "--count", "5", "--config", '{"interval": 0.01}', "--ipc-dir", ipc_dir)
    assert cp.returncode == 0, cp.stderr
    records = [json.loads(line) for line in cp.stdout.splitlines()]
    assert len(records) == 5
    assert [r["value"] for r in records] == list(range(2021, 2026))
    assert all(r["revert"] == "nosjyp" for r in records)
    assert "[pysam] receive:" in cp.stderr  # the sink's own output, prefixed, not buffered
    assert os.listdir(ipc_dir) == []         # every socket file removed


def test_run_with_explicit_symbols_datasource_and_field(ipc_dir):
    cp = ekl("run", PYSAM, "--source", "pyjson", "--function", "revert", "--field", "name",
             "--sink", "print", "--datasource", "abc", "--conf-key", "fast", "--count", "3",
             "--ipc-dir", ipc_dir)
    assert cp.returncode == 0, cp.stderr
    assert [json.loads(x)["revert"] for x in cp.stdout.splitlines()] == ["cba"] * 3


def test_call_prints_the_result_as_json():
    cp = ekl("call", PYSAM, "revert", '"hello"')
    assert cp.returncode == 0, cp.stderr
    assert json.loads(cp.stdout) == "olleh"


def test_call_reports_the_plugins_error_and_exits_1():
    cp = ekl("call", PYSAM, "revert", "42")
    assert cp.returncode == 1
    assert "revert needs a string, got int" in cp.stderr
    no_traceback(cp)


def test_call_validate_reports_invalid_arguments():
    cp = ekl("call", PYSAM, "revert", '"a"', '"b"', "--validate")
    assert cp.returncode == 1 and "takes exactly one argument, got 2" in cp.stderr


def test_tail_prints_json_lines(ipc_dir):
    cp = ekl("tail", PYSAM, "pyjson", "-n", "3", "--datasource", "dev1", "--conf-key", "fast",
             "--meta", "--ipc-dir", ipc_dir)
    assert cp.returncode == 0, cp.stderr
    lines = [json.loads(x) for x in cp.stdout.splitlines()]
    assert [x["message"]["name"] for x in lines] == ["dev1"] * 3
    assert lines[0]["meta"] == {"source": "pyjson"}


def test_feed_sends_stdin_to_the_sink():
    cp = ekl("feed", PYSAM, "print", "--require-ack", stdin='{"a": 1}\n\n{"a": 2}\n')
    assert cp.returncode == 0, cp.stderr
    assert '[pysam] receive: {"a": 1}' in cp.stderr and '{"a": 2}' in cp.stderr
    assert "fed 2 record(s)" in cp.stderr


@pytest.mark.parametrize("transport", ["native", "pynng"])
def test_feed_to_a_slow_sink_loses_nothing_at_the_end(plugin_copy, tmp_path, transport):
    """A sink still working through a backlog when it is stopped finishes it: records
    arrive faster than the sink takes them (5 ms each), so at the stop 1.5 s of them
    wait, more than a sink's share of the stop budget (0.9 s), within the 4 s it may take
    on eKuiper's stop (``Settings.sink_drain_max_s``). The test suite's pynng re-run lost the
    last of 300 records this way on a loaded machine. The host also stops the sink before
    it closes its end (pynng's PUSH drops what it still queues when it is closed)."""
    if transport == "pynng":
        pytest.importorskip("pynng")
    folder = plugin_copy("compat")
    out = tmp_path / "out"
    n = 300
    t0 = time.monotonic()
    cp = ekl("feed", str(folder), "collector", "--config",
             json.dumps({"out": str(out), "delay_ms": 5}),
             stdin="".join(f'{{"i": {i}}}\n' for i in range(n)),
             env=dict(os.environ, EKUIPER_TRANSPORT=transport))
    assert cp.returncode == 0, cp.stderr
    got = out.read_text().splitlines()
    assert got[0] == "open" and got[-1] == "closed", got[:1] + got[-1:]
    assert [json.loads(line)["i"] for line in got[1:-1]] == list(range(n))
    assert time.monotonic() - t0 < 30


def test_stopping_a_sink_whose_collect_hangs_is_bounded(plugin_copy, tmp_path):
    """The longer drain waits only while records still come: a ``collect`` that never
    returns ends it 1 s after the base budget (``DRAIN_STALL_S``), not at
    ``sink_drain_max_s``, and ``ekl feed`` exits with nothing left behind."""
    folder = plugin_copy("compat")
    out = tmp_path / "out"
    t0 = time.monotonic()
    cp = ekl("feed", str(folder), "collector", "--config",
             json.dumps({"out": str(out), "delay_ms": 600_000}),
             stdin='{"i": 0}\n{"i": 1}\n', timeout=60)
    took = time.monotonic() - t0
    assert cp.returncode == 0, cp.stderr
    assert "fed 2 record(s)" in cp.stderr
    assert took < 15, f"ekl feed took {took:.1f} s"
    assert out.read_text().splitlines()[0] == "open"
    assert not [p for p in psutil.process_iter(["cmdline"])
                if str(folder) in " ".join(p.info["cmdline"] or [])]


def test_feed_reports_ack_errors_and_bad_lines_and_exits_1(plugin_copy, tmp_path):
    folder = plugin_copy("compat")
    out = tmp_path / "out"
    cp = ekl("feed", str(folder), "collector", "--require-ack", "--config",
             json.dumps({"out": str(out)}), stdin='{"ok": 1}\nnot json\n{"bad": 2}\n{"ok": 3}\n')
    assert cp.returncode == 1
    assert "stdin line 2: not JSON" in cp.stderr
    assert "stdin line 3: sink collector: bad record" in cp.stderr
    assert out.read_text().splitlines()[1:] == ['{"ok": 1}', '{"bad": 2}', '{"ok": 3}', "closed"]
    no_traceback(cp)


def test_feed_without_acks_loses_nothing_at_the_end(plugin_copy, tmp_path):
    folder = plugin_copy("compat")
    out = tmp_path / "out"
    n = 300
    cp = ekl("feed", str(folder), "collector", "--config", json.dumps({"out": str(out)}),
             stdin="".join(f'{{"i": {i}}}\n' for i in range(n)))
    assert cp.returncode == 0, cp.stderr
    got = out.read_text().splitlines()
    assert got[0] == "open" and got[-1] == "closed" and len(got) == n + 2


@pytest.mark.parametrize("sig, code", [(signal.SIGINT, 130), (signal.SIGTERM, 143)])
def test_interrupt_stops_the_plugin_and_removes_every_socket(ipc_dir, sig, code):
    proc = subprocess.Popen([sys.executable, "-m", "ekl.launcher.cli", "tail", PYSAM, "pyjson",
                             "--ipc-dir", ipc_dir], stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True)
    try:
        assert json.loads(proc.stdout.readline())["name"] == "pyjson"
        kids = [c.pid for c in psutil.Process(proc.pid).children(recursive=True)]
        assert kids
        proc.send_signal(sig)
        _, err = proc.communicate(timeout=15)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    assert proc.returncode == code
    assert "interrupted; plugin stopped" in err and "Traceback" not in err
    deadline = time.monotonic() + 3
    while time.monotonic() < deadline and not all(is_gone(k) for k in kids):
        time.sleep(0.05)
    assert all(is_gone(k) for k in kids)
    assert os.listdir(ipc_dir) == []


@pytest.mark.any_transport  # refused before any plugin starts
@pytest.mark.parametrize("args, fragment", [
    (["run", "/nonexistent/plugin"], "/nonexistent/plugin: no such plugin folder or file"),
    (["call", PYSAM, "nosuch"], "pysam.json lists no function 'nosuch'; it has: revert"),
    (["call", PYSAM, "revert", "hello"], "argument 1 'hello' is not JSON"),
    (["tail", PYSAM, "pyjson", "--config", "{oops"], "--config '{oops' is not JSON"),
    (["tail", PYSAM, "pyjson", "--config", "[1]"], "--config must be a JSON object"),
    (["tail", PYSAM, "pyjson", "--conf-key", "nope"], "has no section 'nope'"),
    (["run", PYSAM, "--python", "/no/such/python"], "interpreter /no/such/python does not exist"),
    (["feed", PYSAM, "nosink"], "pysam.json lists no sink 'nosink'"),
    (["run", PYSAM, "--conda-run"], "--conda-run"),
])
def test_bad_input_is_one_line_and_exit_2(args, fragment):
    cp = ekl(*args, env={**os.environ, "PATH": "/usr/bin:/bin"})
    assert cp.returncode == 2, (cp.returncode, cp.stderr)
    assert fragment in cp.stderr
    assert len(cp.stderr.strip().splitlines()) == 1, cp.stderr
    no_traceback(cp)


@pytest.mark.any_transport  # refused before any plugin starts
def test_every_manifest_problem_is_listed_at_once(tmp_path):
    d = tmp_path / "bad"
    d.mkdir()
    (d / "bad.json").write_text(json.dumps({"language": "ruby", "executable": "../x.py",
                                            "sources": ["s"], "virtualEnvType": "docker"}))
    cp = ekl("run", str(d))
    assert cp.returncode == 2
    lines = cp.stderr.strip().splitlines()
    assert len(lines) == 4, cp.stderr
    assert all(line.startswith("ekl: bad.json: ") for line in lines)
    no_traceback(cp)


@pytest.mark.any_transport  # exits before dialing
def test_plugin_that_crashes_at_start_is_reported_with_its_stderr(plugin_copy):
    cp = ekl("call", str(plugin_copy("crashloop")), "f")
    assert cp.returncode == 1
    assert "exited with code 3 before its handshake" in cp.stderr
    assert "could not connect to db:5432" in cp.stderr
    no_traceback(cp)


@pytest.mark.any_transport  # no plugin
def test_version_and_help():
    assert ekl("--version").stdout.startswith("ekl ")
    cp = ekl("--help")
    assert cp.returncode == 0 and "run" in cp.stdout and "supervise" in cp.stdout


@pytest.mark.any_transport  # the entry point; calls are tested per transport
def test_console_script_is_installed():
    exe = Path(sys.executable).with_name("ekl")
    assert exe.is_file()
    cp = subprocess.run([str(exe), "call", PYSAM, "revert", '"ab"'], capture_output=True,
                        text=True, timeout=60)
    assert cp.returncode == 0 and json.loads(cp.stdout) == "ba"
