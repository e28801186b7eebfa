"""ekl's SDK under ekl's host, end to end over real ipc:// sockets and real processes."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pynng
import pytest

from conftest import PLUGINS, short_id, wait_for
from ekl.launcher.errors import CommandError, FunctionError
from ekuiper import protocol
from ekuiper.protocol import FuncMeta, Meta


def meta(op: str = "op", instance: int = 0) -> Meta:
    return Meta(f"r{short_id()}", op, instance)



def lines(path: Path):
    return path.read_text().splitlines() if path.exists() else []


# --- sources ----------------------------------------------------------------------------


def test_source_gets_datasource_and_config_and_delivers_with_meta(host, plugin_copy):
    inst = host.start(plugin_copy("compat"))
    m = meta()
    stream = inst.start_source("counter", m, "topic/a", {"interval": 0.001, "k": "v"})
    first, second = stream.recv(5), stream.recv(5)
    assert first.message["ds"] == "topic/a"
    assert first.message["conf"] == {"interval": 0.001, "k": "v"}
    assert first.meta == {"rule": m.rule_id}
    assert second.message["n"] == first.message["n"] + 1


def test_two_instances_of_one_source_run_at_once(host, plugin_copy):
    inst = host.start(plugin_copy("compat"))
    m0 = meta("op", 0)
    m1 = Meta(m0.rule_id, "op", 1)
    s0 = inst.start_source("counter", m0, "zero", {"interval": 0.001})
    s1 = inst.start_source("counter", m1, "one", {"interval": 0.001})
    assert {s0.recv(5).message["ds"], s1.recv(5).message["ds"]} == {"zero", "one"}
    assert inst.journal.ref_counts() == {m0.rule_id: 2}


def test_stop_then_start_again_closes_and_restarts_the_source(host, plugin_copy, tmp_path):
    inst = host.start(plugin_copy("compat"))
    marker = tmp_path / "marker"
    m = meta()
    for cycle in range(3):
        stream = inst.start_source("counter", m, f"c{cycle}", {"interval": 0.001,
                                                               "marker": str(marker)})
        assert stream.recv(5).message["ds"] == f"c{cycle}"
        inst.stop_source("counter", m)
        assert wait_for(lambda c=cycle: len(lines(marker)) == c + 1)
    assert inst.journal.symbols() == []
    assert inst.ping(2) is not None


def test_emit_error_is_an_error_not_an_empty_record(host, plugin_copy):
    inst = host.start(plugin_copy("compat"))
    stream = inst.start_source("counter", meta(), "", {"interval": 0.001, "error_every": 3})
    got = [stream.recv(5) for _ in range(6)]
    errors = [g.error for g in got if g.error]
    assert errors and all(e.startswith("error number ") for e in errors)
    assert all(g.message for g in got if not g.error)


def test_undecodable_source_data_is_reported_and_the_stream_goes_on(host, plugin_copy, ipc_dir):
    inst = host.start(plugin_copy("compat"))
    m = meta()
    stream = inst.start_source("counter", m, "", {"interval": 0.05, "limit": 1})
    assert stream.recv(5).message["n"] == 1
    with pynng.Push0(dial=protocol.data_url(m, ipc_dir)) as rogue:
        rogue.send(b"\xff not json")
        rogue.send(b'{"message": [1, 2]}')
        rogue.send(b'{"message": {"ok": true}, "meta": null}')
    got = [stream.recv(5) for _ in range(3)]
    assert got[0].error and "cannot decode" in got[0].error
    assert got[1].error and "no message object" in got[1].error
    assert got[2].message == {"ok": True}


def test_configure_failure_is_a_one_line_start_error_and_the_plugin_serves_on(host, plugin_copy):
    inst = host.start(plugin_copy("compat"))
    with pytest.raises(CommandError) as e:
        inst.start_source("counter", meta(), "", {"refuse": True})
    text = str(e.value)
    assert "counter" in text and "refused by configure" in text and "\n" not in text
    assert inst.ping(2) is not None
    assert inst.journal.symbols() == []


def test_unknown_symbol_gets_a_one_line_error_naming_it(host, plugin_copy):
    inst = host.start(plugin_copy("compat"))
    with pytest.raises(CommandError) as e:
        inst.start_source("nosuch", meta())
    assert "unknown source symbol 'nosuch'" in str(e.value)
    assert "counter" in str(e.value)  # what it does register
    assert "Traceback" not in str(e.value)
    assert inst.start_function("echo").exec([1]) == {"args": [1], "rule": "", "op": ""}


@pytest.mark.parametrize("raw, fragment", [
    (b"\x00garbage", "not JSON"),
    (b'{"cmd": "start", "arg": "{broken"}', "arg is not JSON"),
    (b'{"cmd": "start", "arg": "{\\"pluginType\\": \\"source\\"}"}', "no symbolName"),
    (b'{"cmd": "reboot", "arg": "{}"}', "unknown command"),
])
def test_malformed_control_commands_get_an_error_and_serving_continues(host, plugin_copy, raw,
                                                                      fragment):
    inst = host.start(plugin_copy("compat"))
    with pytest.raises(CommandError, match=fragment):
        inst.command(raw, "raw command", timeout_s=5)
    assert inst.ping(2) is not None


def _start_raw(ctrl_json: str) -> bytes:
    return json.dumps({"cmd": "start", "arg": ctrl_json}).encode()


HOSTILE_COMMANDS = [
    # issue 12: each of these used to end the control thread (the plugin exited 0) or block it
    (_start_raw('{"symbolName": "counter", "pluginType": "source", '
                '"meta": {"ruleId": "r", "opId": "o", "instanceId": Infinity}}'), "Infinity"),
    (b'{"cmd": "start", "arg": ' + b"[" * 50_000 + b"]" * 50_000 + b"}", "nested deeper"),
    (b"[" * 50_000, "not JSON"),
    (_start_raw("[" * 5000 + "]" * 5000), "nested deeper"),
    (json.dumps({"cmd": "start", "arg": {"symbolName": "counter", "pluginType": "source",
                                         "meta": {"ruleId": "r", "opId": "o"}}}).encode(),
     "arg must be a string"),
    (_start_raw('{"symbolName": "counter", "pluginType": "source"}'), "meta is missing"),
    (_start_raw('{"symbolName": "collector", "pluginType": "sink", "meta": {}}'),
     "non-empty ruleId and opId"),
    (_start_raw('{"symbolName": "\ud800", "pluginType": "func", "meta": {}}'), "unknown"),
    (b'{"cmd": "start", "arg": "' + b"9" * 100_000 + b'"}', "out of range"),
]


def test_hostile_control_commands_get_one_line_errors_and_the_plugin_serves_on(host,
                                                                            plugin_copy):
    inst = host.start(plugin_copy("compat"))
    for raw, fragment in HOSTILE_COMMANDS * 2:  # twice: the loop survived the first round
        with pytest.raises(CommandError) as e:
            inst.command(raw, "hostile command", timeout_s=5)
        text = str(e.value)
        assert fragment in text and "\n" not in text and "Traceback" not in text, text
        assert inst.ping(2) is not None
    assert inst.alive()
    stream = inst.start_source("counter", meta(), "", {"interval": 0.01})
    assert stream.recv(5).message["n"] == 1


def _raw_call(client, data: bytes) -> tuple:
    """Send raw bytes as a function request (the plugin is waiting with its REQ)."""
    client.channel.sock.send(data)
    return protocol.decode_func_reply(client.channel.sock.recv())


def test_hostile_function_requests_answer_state_false_and_the_function_serves_on(
        host, plugin_copy):
    inst = host.start(plugin_copy("compat"))
    client = inst.start_function("echo")
    client.exec([0])  # connected and in request/reply rhythm
    ctx = FuncMeta("r", "o").encode()
    for raw, fragment in [
        (b'{"func": "Exec", "arg": [Infinity, "' + ctx.replace('"', '\\"').encode() + b'"]}',
         "Infinity"),
        (b'{"func": "Exec", "arg": [' + b"[" * 50_000 + b"]" * 50_000 + b"]}", "nested deeper"),
        (b'{"func": "Exec", "arg": ["x", "{\\"ruleId\\": \\"r\\", \\"opId\\": \\"o\\", '
         b'\\"instanceId\\": 1e999, \\"funcId\\": 0}"]}', "out of range"),
        (b'{"func": "Exec", "arg": ["x", {"ruleId": "r", "opId": "o", "instanceId": 1.5, '
         b'"funcId": 0}]}', "must be an integer"),
        (b'{"func": ' + b"{" * 50_000, "not JSON"),
        (b'{"func": "Exec", "arg": [' + b"[" * 500 + b"]" * 500 + b', "' +
         ctx.replace('"', '\\"').encode() + b'"]}', ""),  # deep but allowed: echoed back
    ]:
        state, result = _raw_call(client, raw)
        if fragment:
            assert state is False and fragment in result and "\n" not in result, result
        assert client.exec([1])["args"] == [1]
    assert inst.ping(2) is not None


def test_stop_for_a_symbol_that_is_not_running_is_ok(host, plugin_copy):
    inst = host.start(plugin_copy("compat"))
    inst.stop_source("counter", meta())  # eKuiper only forgets the symbol on ok
    assert inst.ping(2) is not None


# --- functions --------------------------------------------------------------------------


def test_function_calls_validate_exec_isaggregate(host, plugin_copy):
    inst = host.start(plugin_copy("compat"))
    echo = inst.start_function("echo")
    assert echo.validate([{"expr": 1}]) is None
    assert echo.validate([]) == "echo needs an argument"
    assert echo.exec(["a", 2], FuncMeta("rule7", "op3", 0, 1)) == {"args": ["a", 2],
                                                                  "rule": "rule7", "op": "op3"}
    assert echo.is_aggregate() is False
    assert inst.start_function("agg").is_aggregate() is True


@pytest.mark.parametrize("fn, fragment", [("boom", "ValueError: boom"),
                                          ("weird", "not JSON-encodable")])
def test_failing_functions_answer_state_false_in_one_line_and_keep_serving(host, plugin_copy, fn,
                                                                           fragment):
    inst = host.start(plugin_copy("compat"))
    client = inst.start_function(fn)
    for _ in range(2):
        with pytest.raises(FunctionError) as e:
            client.exec([1])
        assert fragment in str(e.value) and "\n" not in str(e.value)
    assert inst.start_function("echo").exec([3])["args"] == [3]


@pytest.mark.parametrize("func, arg, fragment", [
    ("Exec", "not a list", "needs a list"),
    ("Exec", ["x", "{not json"], "not JSON"),
    ("Exec", ["x", '{"ruleId": "r"}'], "funcId"),
    ("Divide", [1], "unknown call"),
])
def test_malformed_function_requests_answer_state_false(host, plugin_copy, func, arg, fragment):
    inst = host.start(plugin_copy("compat"))
    client = inst.start_function("echo")
    state, result = client.request(func, arg)
    assert state is False and fragment in result
    assert client.exec([5])["args"] == [5]


def test_garbage_bytes_on_the_function_channel(host, plugin_copy):
    inst = host.start(plugin_copy("compat"))
    client = inst.start_function("echo")
    client.exec([0])  # connected and in request/reply rhythm
    client.channel.sock.send(b"\x00\x01garbage")
    state, result = protocol.decode_func_reply(client.channel.sock.recv())
    assert state is False and "not JSON" in result
    assert client.exec([1])["args"] == [1]


# --- sinks ------------------------------------------------------------------------------


def test_sink_with_require_ack_acks_ok_and_errors(host, plugin_copy, tmp_path):
    inst = host.start(plugin_copy("compat"))
    out = tmp_path / "out"
    writer = inst.start_sink("collector", meta(), {"requireAck": True, "out": str(out)})
    writer.write({"a": 1})
    with pytest.raises(Exception, match="bad record"):
        writer.write({"bad": 1})
    writer.write([{"a": 2}, {"a": 3}])
    assert lines(out)[1:] == ['{"a":1}', '{"bad":1}', '[{"a":2},{"a":3}]']


def test_sink_collect_that_raises_is_acked_with_its_error(host, plugin_copy, tmp_path):
    inst = host.start(plugin_copy("compat"))
    writer = inst.start_sink("collector", meta(), {"requireAck": True, "raise_on_bad": True,
                                                   "out": str(tmp_path / "o")})
    with pytest.raises(Exception, match="collect raised RuntimeError: cannot write a bad record"):
        writer.write({"bad": True})
    writer.write({"good": True})  # still collecting


def test_sink_without_require_ack_keeps_collecting_however_many_acks_it_sends(
        host, plugin_copy, tmp_path):
    inst = host.start(plugin_copy("compat"))
    out = tmp_path / "out"
    m = meta()
    writer = inst.start_sink("collector", m, {"out": str(out)})
    n = 2000
    for i in range(n):
        writer.write({"i": i})
    assert wait_for(lambda: f'{{"i":{n - 1}}}' in lines(out), timeout=20)
    assert writer.pending_acks() == 0  # nothing piles up on a socket nobody reads
    inst.stop_sink("collector", m)
    assert lines(out)[-1] == "closed" and len(lines(out)) == n + 2


def test_raw_non_json_sink_data_reaches_collect_as_bytes(host, plugin_copy, tmp_path):
    inst = host.start(plugin_copy("compat"))
    out = tmp_path / "out"
    writer = inst.start_sink("collector", meta(), {"requireAck": True, "out": str(out)})
    writer.write(b"plain text, not JSON")
    assert lines(out)[-1] == "plain text, not JSON"


# --- the process ------------------------------------------------------------------------


def test_sigterm_closes_every_symbol_and_exits_0_within_2s(host, plugin_copy, tmp_path):
    inst = host.start(plugin_copy("compat"))
    marker, out = tmp_path / "marker", tmp_path / "out"
    inst.start_source("counter", meta(), "", {"interval": 0.01, "marker": str(marker)})
    inst.start_sink("collector", meta("sink"), {"out": str(out)})
    inst.start_function("echo")
    popen = inst.process.popen
    t0 = time.monotonic()
    popen.send_signal(signal.SIGTERM)
    assert popen.wait(5) == 0
    assert time.monotonic() - t0 < 2.0
    assert lines(marker) and lines(marker)[0].startswith("source closed")
    assert lines(out)[-1] == "closed"


def test_plugin_exits_when_the_host_goes_away(host, plugin_copy):
    inst = host.start(plugin_copy("compat"))
    inst.start_source("counter", meta(), "", {"interval": 0.01})
    popen = inst.process.popen
    inst.control.close()  # the host's control socket vanishes (eKuiper died)
    t0 = time.monotonic()
    assert popen.wait(10) == 0
    assert time.monotonic() - t0 < 5.0


def test_sdk_logs_go_to_stderr(host, plugin_copy):
    inst = host.start(plugin_copy("compat"))
    inst.start_function("echo").exec([1])
    assert wait_for(lambda: any("started function echo" in ln for ln in inst.process.stderr_tail))


def test_context_logger_is_a_real_logger_tagged_with_rule_op_instance():
    import logging

    from ekuiper.runtime.contextimpl import ContextImpl

    ctx = ContextImpl(Meta("rule9", "op2", 1), "pyjson")
    logger = ctx.get_logger()
    assert isinstance(logger, logging.Logger)
    records = []

    class Grab(logging.Handler):
        def emit(self, record):
            records.append(record)

    h = Grab()
    logger.addHandler(h)
    try:
        logger.warning("hello")
    finally:
        logger.removeHandler(h)
    r = records[0]
    assert (r.rule_id, r.op_id, r.instance_id) == ("rule9", "op2", 1)
    assert "rule9/op2/1" in r.name


def test_plugin_whose_name_matches_no_socket_says_so_and_exits_nonzero_at_EKUIPER_LOG_LEVEL(
        ipc_dir):
    """Two behaviours, one run: the plugin dials for ~5 s (the SDK's dial retries, not
    configurable from outside) before it may say no host listens, so one wait serves both."""
    env = dict(os.environ, EKUIPER_IPC_DIR=ipc_dir, EKUIPER_LOG_LEVEL="ERROR")
    cp = subprocess.run([sys.executable, "-u", str(PLUGINS / "compat" / "compat.py"),
                         '{"sendTimeout": 1000}'], env=env, capture_output=True, text=True,
                        timeout=20, cwd=str(PLUGINS / "compat"))
    assert cp.returncode == 1
    assert "plugin compat: no host is listening on ipc://" in cp.stderr
    assert "compat.json" in cp.stderr and "Traceback" not in cp.stderr
    # the level comes from EKUIPER_LOG_LEVEL: ERROR keeps the INFO start-up lines out
    assert "INFO" not in cp.stderr and cp.stdout == ""


def test_context_logger_also_writes_like_the_official_sdks_stdout():
    """Official-SDK plugins call ``ctx.get_logger().write()``/``flush()`` (it is sys.stdout
    there): here each line written becomes one INFO record, partial lines wait."""
    import logging
    import threading

    from ekuiper.runtime import logs
    from ekuiper.runtime.contextimpl import ContextImpl

    logger = ContextImpl(Meta("rule5", "op1", 0), "src").get_logger()
    assert isinstance(logger, logging.Logger) and logging.getLogger(logger.name) is logger
    records = []

    class Grab(logging.Handler):
        def emit(self, record):
            records.append((record.levelno, record.getMessage(), record.rule_id))

    h = Grab()
    logger.addHandler(h)
    logger.setLevel(logging.INFO)
    try:
        assert logger.write("one\ntw") == 6
        logger.write("o\r\n\n")
        print("three", 3, file=logger)
        logger.write(b"bytes line\n")
        logger.write("partial")
        assert [m for _, m, _ in records] == ["one", "two", "three 3", "bytes line"]
        logger.flush()
        assert records[-1][1] == "partial"
        logger.flush()  # nothing pending: nothing logged
        logger.write("x" * (logs.MAX_PENDING_CHARS + 10))  # no newline ever: still bounded
        assert records[-1][1] == "x" * (logs.MAX_PENDING_CHARS + 10)
        n = len(records)
        threads = [threading.Thread(target=lambda i=i: [logger.write(f"t{i}-{k}\n")
                                                      for k in range(50)]) for i in range(4)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        lines = [m for _, m, _ in records[n:]]
        assert sorted(lines) == sorted(f"t{i}-{k}" for i in range(4) for k in range(50))
        assert {lvl for lvl, _, _ in records} == {logging.INFO}
        assert {r for _, _, r in records} == {"rule5"}
        logger.writelines(["a\n", "b\n"])
        assert [m for _, m, _ in records[-2:]] == ["a", "b"]
        assert logger.isatty() is False
    finally:
        logger.removeHandler(h)
        logger.setLevel(logging.NOTSET)
