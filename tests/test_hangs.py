"""Hung calls: per-symbol liveness in the ping answer, the supervisor's call timeout,
and ``ekl run``/``call`` applying the same deadline on their own calls. Real plugins,
real sockets; the hostile plugin's ``hang`` never returns from ``exec``."""

from __future__ import annotations

import subprocess
import sys
import threading

import pytest

from conftest import short_id, wait_for
from ekl.launcher.errors import CommandError, EklError
from ekl.launcher.host.control import MAX_PING_REPLY, Probe, parse_ping_reply
from ekl.launcher.supervise.states import State
from ekuiper.protocol import Meta

FAST = dict(backoff_initial_s=0.05, backoff_max_s=0.5, health_interval_s=0.3,
            probe_timeout_s=1.0, startsecs=0.5, call_timeout_s=1.0)


def watched(host, folder, **kw):
    return host.watch(folder, {**FAST, **kw}, function_timeout_s=30)


def in_thread(fn):
    t = threading.Thread(target=lambda: _swallow(fn), daemon=True)
    t.start()
    return t


def _swallow(fn):
    try:
        fn()
    except EklError:
        pass


def test_ping_answer_carries_each_symbols_liveness(host, plugin_copy):
    inst = host.start(plugin_copy("hostile"))
    inst.start_function("echo").exec([1])
    inst.start_source("counter", Meta(f"r{short_id()}", "op", 0), "", {"interval": 0.01})
    assert wait_for(lambda: any(s["kind"] == "source" and s["idle_s"] is not None
                                for s in inst.probe(2).symbols), timeout=5)
    syms = {s["symbol"]: s for s in inst.probe(2).symbols}
    assert syms["echo"]["kind"] == "func" and syms["echo"]["busy_s"] is None
    assert syms["echo"]["idle_s"] >= 0 and syms["counter"]["failed"] is None


def test_official_sdk_plain_ok_is_still_understood(host, plugin_copy, official_python):
    inst = host.start(plugin_copy("compat"), python=official_python)
    p = inst.probe(2)
    assert p is not None and p.symbols is None and p.hung(0.0) is None
    assert inst.ping(2) is not None


@pytest.mark.parametrize("reply", [b"nope", b"{", b'{"ok": false}', b"[1]",
                                   b"{" + b" " * MAX_PING_REPLY + b"}"])
def test_a_garbage_ping_answer_is_a_one_line_error(reply):
    with pytest.raises(CommandError, match="plugin p: ping failed"):
        parse_ping_reply(reply, "p")


def test_unknown_fields_and_odd_entries_are_ignored():
    syms = parse_ping_reply(b'{"ok": true, "liveness": 9, "new": 1, "symbols": '
                            b'[1, {"kind": "func", "symbol": "f", "busy_s": 7, "calls": 3}]}',
                            "p")
    assert Probe(0.0, syms).hung(5.0)["symbol"] == "f"
    assert Probe(0.0, syms).hung(8.0) is None


def test_supervisor_restarts_a_plugin_whose_function_hangs(host, plugin_copy):
    w, inst = watched(host, plugin_copy("hostile"))
    old = inst.pid
    echo = inst.start_function("echo")
    hang = inst.start_function("hang")
    in_thread(lambda: hang.exec([1]))
    assert wait_for(lambda: w.restart_count == 1 and w.state == State.RUNNING
                    and inst.pid not in (None, old), timeout=15)
    reason = w.restarts[-1].reason
    assert reason.startswith("hung: func hang busy with one call for ") and \
        "(call timeout 1.0 s)" in reason
    assert w.status()["last_restarts"][-1]["reason"] == reason
    assert echo.exec([2]) == [2]  # replayed: the other function serves again


def test_supervisor_restarts_a_plugin_whose_sink_hangs(host, plugin_copy):
    w, inst = watched(host, plugin_copy("hostile"))
    old = inst.pid
    writer = inst.start_sink("stuck", Meta(f"r{short_id()}", "op", 0), {})
    writer.write({"a": 1})
    assert wait_for(lambda: w.restart_count == 1 and inst.pid not in (None, old), timeout=15)
    assert w.restarts[-1].reason.startswith("hung: sink stuck busy with one record for ")


def ekl(*args, timeout=90):
    return subprocess.run([sys.executable, "-m", "ekl.launcher.cli", "-q", *args],
                          capture_output=True, text=True, timeout=timeout)


def test_ekl_run_restarts_a_hung_plugin_and_goes_on(plugin_copy):
    cp = ekl("run", str(plugin_copy("hostile")), "--source", "counter", "--function",
             "hangonce", "--count", "3", "--call-timeout", "1", "--config",
             '{"interval": 0.05}')
    assert cp.returncode == 0, cp.stderr
    assert len(cp.stdout.splitlines()) == 3
    assert "function hangonce: no answer within 1.0 s (--call-timeout)" in cp.stderr
    assert "is back; continuing" in cp.stderr


def test_ekl_run_no_restart_exits_1_naming_the_function_and_deadline(plugin_copy):
    cp = ekl("run", str(plugin_copy("hostile")), "--source", "counter", "--function", "hang",
             "--count", "3", "--call-timeout", "1", "--no-restart")
    assert cp.returncode == 1
    last = cp.stderr.strip().splitlines()[-1]
    assert last == ("ekl: function hang: no answer within 1.0 s (--call-timeout); the call "
                    "hangs. Fix the plugin, or give a longer --call-timeout")
    assert "Traceback" not in cp.stderr


def test_ekl_call_applies_the_call_timeout(plugin_copy):
    cp = ekl("call", str(plugin_copy("hostile")), "hang", "1", "--call-timeout", "0.5")
    assert cp.returncode == 1
    assert cp.stderr.strip().splitlines()[-1].startswith(
        "ekl: function hang: no answer within 0.5 s (--call-timeout)")


@pytest.mark.parametrize("value", ["0", "-1"])
def test_a_bad_call_timeout_is_one_line(plugin_copy, value):
    cp = ekl("call", str(plugin_copy("hostile")), "echo", "1", "--call-timeout", value)
    assert cp.returncode == 2
    assert cp.stderr.strip() == (f"ekl: --call-timeout {float(value)}: give a number of "
                                 f"seconds above 0, e.g. 5")


def test_run_and_tail_exit_1_when_the_source_open_raises(plugin_copy):
    folder = str(plugin_copy("hostile"))
    for args in (["tail", folder, "broken"], ["run", folder, "--source", "broken"]):
        cp = ekl(*args)
        assert cp.returncode == 1, args
        assert cp.stderr.strip().splitlines()[-1] == (
            "ekl: source broken stopped: open raised ConnectionError: cannot reach the broker "
            "at mqtt://nowhere:1883"), args


def test_validate_fails_on_a_source_whose_open_raises(plugin_copy):
    cp = ekl("validate", str(plugin_copy("hostile")))
    assert cp.returncode == 1
    assert "source broken stopped right after its start: open raised ConnectionError" \
        in cp.stderr + cp.stdout


def test_a_served_pipeline_restarts_its_hung_plugin_and_flows_again(tmp_path, ipc_dir,
                                                                    plugin_copy):
    from test_supervise_config import Service, plugins_in

    folder = plugin_copy("hostile")
    name = folder.name
    service = Service(tmp_path, ipc_dir)
    flow = (f'[pipelines.flow]\nplugin = "{name}"\nsource = "counter"\n'
            f'config = {{ interval = 0.05 }}\nfunction = "hangonce"\nfield = "n"\n'
            f'sink = "null"\n')
    service.write({name: folder}, flow, extra="call_timeout_s = 1")
    service.start()
    try:
        def fn_live():
            p = plugins_in(service.status).get(name) or {}
            return {s["symbol"]: s for s in p.get("symbol_stats") or []}.get("hangonce")

        assert wait_for(lambda: (plugins_in(service.status).get(name) or {}).get("restarts")
                        == 1, timeout=40), service.log.read_text()[-2000:]
        reason = plugins_in(service.status)[name]["last_restarts"][-1]["reason"]
        assert reason.startswith("hung: "), reason
        # calls complete again in the new process: the function's last call is recent
        assert wait_for(lambda: (f := fn_live()) and f["idle_s"] is not None
                        and f["idle_s"] < 2 and f["busy_s"] is None, timeout=30), (
            fn_live(), service.log.read_text()[-3000:])
        assert plugins_in(service.status)[name]["restarts"] == 1
    finally:
        service.close()
    assert "Traceback" not in service.log.read_text()
