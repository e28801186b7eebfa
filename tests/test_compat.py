"""Compatibility both ways with the official Python SDK (PyPI ekuiper 2.4.2).

1. The compat test plugin (official public API only) runs unchanged under ekl's host with
   the official SDK and with ours: sources, sinks with acks, functions and the ping probe.
2. A table of the official SDK's defects that ours fixes. Each row is one test that
   observes the official SDK *and* ours under the same host and asserts that the official
   one still shows the defect and ours does not, so the record fails if either side changes.

The official SDK hard-codes /tmp for its sockets (the host follows it there): plugin names
and rule ids are unique per test, and the function sockets, whose names are fixed symbol
names, are taken under a lock (see ``official_function``).
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import logging
import os
import signal
import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Dict, Iterator, List, Optional, Tuple

import pytest

from conftest import short_id, wait_for
from ekl.launcher.errors import AckError, CommandError, HostTimeout
from ekl.launcher.host.instance import PluginInstance
from ekuiper import protocol
from ekuiper.protocol import FuncMeta, Meta
from ekuiper.record import replace

OFFICIAL, EKL = "official", "ekl"


def rule_meta() -> Meta:
    return Meta(f"r{short_id()}", "op1", 0)


@contextlib.contextmanager
def official_function(side: str, symbol: str) -> Iterator[None]:
    """Serialise use of ``/tmp/func_{symbol}.ipc`` across parallel tests (official SDK only).

    The official SDK builds function URLs from the symbol name alone, in /tmp, so two test
    processes starting the same function symbol at once would fight over one socket.
    """
    if side != OFFICIAL:
        yield
        return
    with open(f"/tmp/ekl-tests-func_{symbol}.lock", "w") as f:
        fcntl.flock(f, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(f, fcntl.LOCK_UN)


def read_lines(path: Path) -> list:
    return path.read_text().splitlines() if path.is_file() else []



class Sides:
    """Starts plugins under ekl's host with either SDK."""

    def __init__(self, host: Any, plugin_copy: Callable[..., Path], official_python: str,
                 ipc_dir: str, tmp_path: Path) -> None:
        self.host = host
        self.plugin_copy = plugin_copy
        self.python = {OFFICIAL: official_python, EKL: None}
        self.ipc_dir = ipc_dir
        self.tmp = tmp_path

    def start(self, side: str, template: str = "compat", send_timeout_ms: Optional[int] = None,
              name: Optional[str] = None, **settings: Any) -> PluginInstance:
        folder = self.plugin_copy(template, name)
        inst = self.host.start(folder, python=self.python[side], start=False, **settings)
        if send_timeout_ms is not None:  # argv[1], as eKuiper passes its portable.sendTimeout
            inst.spec = replace(inst.spec, argv=inst.spec.argv[:-1] + (
                protocol.encode_portable_config(send_timeout_ms),))
        inst.start_process()
        return inst

    def interpreter(self, side: str) -> str:
        return self.python[side] or sys.executable

    def both(self, probe: Callable[[Sides, str], Any]) -> Dict[str, Any]:
        """Run ``probe`` for both SDKs at once (halves the wall time of slow probes)."""
        with ThreadPoolExecutor(2) as pool:
            futures = {side: pool.submit(probe, self, side) for side in (OFFICIAL, EKL)}
            return {side: f.result() for side, f in futures.items()}


@pytest.fixture
def sides(host, plugin_copy, official_python, ipc_dir, tmp_path) -> Sides:
    return Sides(host, plugin_copy, official_python, ipc_dir, tmp_path)


# --- 1. the compat plugin runs unchanged on both SDKs ------------------------------------

both_sdks = pytest.mark.parametrize("side", [OFFICIAL, EKL])


@both_sdks
def test_source_messages_arrive_with_meta(sides: Sides, side: str) -> None:
    inst = sides.start(side)
    marker = sides.tmp / "marker"
    meta = rule_meta()
    conf = {"interval": 0.01, "marker": str(marker)}
    stream = inst.start_source("counter", meta, "topic/a", conf)
    got = [m for m in stream.messages(3, timeout_s=5)]
    assert [m.error for m in got] == [None] * 3
    assert [m.message["n"] for m in got] == [1, 2, 3]
    assert all(m.message["conf"] == conf for m in got)
    assert all(m.meta == {"rule": meta.rule_id} for m in got)
    inst.stop_source("counter", meta)
    assert wait_for(lambda: f"source closed {meta.rule_id}" in read_lines(marker), 2)


@both_sdks
def test_sink_with_require_ack_acks_ok_and_error(sides: Sides, side: str) -> None:
    inst = sides.start(side)
    out = sides.tmp / "out"
    meta = rule_meta()
    writer = inst.start_sink("collector", meta, {"out": str(out), "requireAck": True})
    writer.write({"v": "good"})
    with pytest.raises(AckError, match="bad record"):
        writer.write({"v": "bad"})
    writer.write([{"v": "good again"}])
    inst.stop_sink("collector", meta)
    assert wait_for(lambda: "closed" in read_lines(out), 2)
    assert read_lines(out) == ["open", '{"v":"good"}', '{"v":"bad"}', '[{"v":"good again"}]',
                               "closed"]


@both_sdks
def test_function_exec_validate_is_aggregate(sides: Sides, side: str) -> None:
    inst = sides.start(side)
    with official_function(side, "echo"), official_function(side, "agg"):
        try:
            echo = inst.start_function("echo")
            assert echo.validate([]) == "echo needs an argument"
            assert echo.validate([{"type": "FieldRef"}]) is None
            result = echo.exec(["a", 2, {"k": [1.5]}], FuncMeta("rule7", "op3", 1, 2))
            assert result == {"args": ["a", 2, {"k": [1.5]}], "rule": "rule7", "op": "op3"}
            assert echo.is_aggregate() is False
            assert inst.start_function("agg").is_aggregate() is True
        finally:
            inst.close()  # before the lock is released: the function sockets go with it


@both_sdks
def test_ping_answered_ok(sides: Sides, side: str) -> None:
    inst = sides.start(side)
    for _ in range(3):
        rtt = inst.ping(2.0)
        assert rtt is not None and 0 <= rtt < 2.0
    # the plugin still takes real commands after probes
    stream = inst.start_source("counter", rule_meta(), "", {"interval": 0.01})
    assert stream.recv(5).message["n"] == 1


class Output(logging.Handler):
    """Collects the lines a plugin prints (stdout and stderr), as ekl's host logs them."""

    def __init__(self, plugin: str) -> None:
        super().__init__(logging.INFO)
        self.lines: List[str] = []
        self.logger = logging.getLogger(f"ekl.plugin.{plugin}")

    def __enter__(self) -> Output:
        self.level_before = self.logger.level
        self.logger.setLevel(logging.INFO)
        self.logger.addHandler(self)
        return self

    def __exit__(self, *exc: object) -> None:
        self.logger.removeHandler(self)
        self.logger.setLevel(self.level_before)

    def emit(self, record: logging.LogRecord) -> None:
        self.lines.append(record.getMessage())

    def has(self, text: str) -> bool:
        return any(text in line for line in list(self.lines))


@both_sdks
def test_pysam_example_runs_on_both_sdks(sides: Sides, side: str) -> None:
    """examples/pysam says it runs on the official SDK too: its three symbols, and its
    logging through ``ctx.get_logger().write``, work on both."""
    # The plugin's name is fixed in pysam.py, and the official SDK's sockets live in /tmp.
    with official_function(side, "plugin_pysam"), official_function(side, "revert"), \
            Output("pysam") as out:
        inst = sides.start(side, template="pysam", name="pysam")
        try:
            meta = rule_meta()
            stream = inst.start_source("pyjson", meta, "dev1", {"interval": 0.01, "start": 7})
            got = list(stream.messages(2, timeout_s=5))
            assert [m.message["value"] for m in got] == [7, 8]
            # the official SDK drops the data source (its datasource-ignored defect)
            assert got[0].message["name"] == ("dev1" if side == EKL else "pyjson")
            assert got[0].meta == {"source": "pyjson"}
            assert wait_for(lambda: out.has("pyjson emitting every 0.01 s"), 3)
            sink_meta = rule_meta()
            writer = inst.start_sink("print", sink_meta, {"prefix": "got:", "requireAck": True})
            writer.write({"a": 1})  # acked ok, or AckError
            assert wait_for(lambda: out.has('got: {"a":1}'), 3)
            # stderr (the log) and stdout (the print) are read by separate threads: the
            # order their lines arrive in is not the order they were written in
            assert wait_for(lambda: out.has("print sink open"), 3)
            revert = inst.start_function("revert")
            assert revert.exec(["hello"]) == "olleh"
            assert "exactly one argument, got 2" in (revert.validate(["a", "b"]) or "")
            inst.stop_sink("print", sink_meta)
            assert wait_for(lambda: out.has("print sink closed"), 3)
            inst.stop_source("pyjson", meta)
            assert inst.ping(2) is not None
        finally:
            inst.close()  # before the locks are released: the sockets go with it
    if side == EKL:  # logged through the rule-tagged logger, on stderr
        assert any("INFO ekuiper.pyjson[" in line and "pyjson emitting" in line
                   for line in out.lines)


# --- 2. the official SDK's defects, and that ours fixes them ----------------------------


def command_result(e: CommandError) -> str:
    """The plugin's own result text inside the host's error message."""
    return str(e).split(" failed: ", 1)[1]


def multi_line_traceback(text: str, exc: str) -> bool:
    return "Traceback (most recent call last)" in text and exc in text and text.count("\n") >= 2


def one_line(text: str, *needles: str) -> bool:
    return "\n" not in text and "Traceback" not in text and all(n in text for n in needles)


class GoDecodeError(Exception):
    pass


def go_message_wrapper(data: bytes) -> Tuple[Any, Any]:
    """What eKuiper 2.x gets from ``json.Unmarshal(data, &messageWrapper{})`` (source.go).

    ``messageWrapper`` is ``{Message map[string]any "message"; Meta map[string]any "meta"}``;
    encoding/json matches keys case-insensitively, ignores unknown keys such as "error",
    and fails on a value that is not an object or null. A decode error goes to the rule's
    error path (``ingestError``); otherwise ``ingest(Message, Meta)`` makes a tuple, an
    empty one when Message is nil.
    """
    try:
        d = json.loads(data)
    except ValueError as e:
        raise GoDecodeError(str(e)) from None
    if not isinstance(d, dict):
        raise GoDecodeError("cannot unmarshal into Go value of type messageWrapper")
    fields: Dict[str, Any] = {"message": None, "meta": None}
    for key, value in d.items():
        if key.lower() in fields:
            if value is not None and not isinstance(value, dict):
                raise GoDecodeError(f"json: cannot unmarshal {type(value).__name__} into Go struct "
                                    f"field messageWrapper.{key} of type map[string]interface {{}}")
            fields[key.lower()] = value
    return fields["message"], fields["meta"]


def probe_datasource(s: Sides, side: str) -> Any:
    inst = s.start(side)
    stream = inst.start_source("counter", rule_meta(), "topic/a", {"interval": 0.01})
    return stream.recv(5).message["ds"]


def probe_unknown_symbol(s: Sides, side: str) -> Any:
    inst = s.start(side)
    with pytest.raises(CommandError) as e:
        inst.start_source("nosuch", rule_meta())
    return command_result(e.value), inst.ping(2.0) is not None


def probe_malformed_command(s: Sides, side: str) -> Any:
    inst = s.start(side)
    with pytest.raises(CommandError) as e:
        inst.command(b'{"cmd": "start", "arg": not json', "malformed command")
    return command_result(e.value), inst.ping(2.0) is not None


def probe_send_timeout(s: Sides, side: str) -> Any:
    """argv[1] says sendTimeout 30 s; the host stops reading a fast source for 2.5 s.

    A plugin that honours it waits for the host and goes on; one that ignores it (the
    official SDK always uses 1 s) has its emit time out, and the source dies.
    """
    inst = s.start(side, send_timeout_ms=30000)
    stream = inst.start_source("counter", rule_meta(), "", {"interval": 0})
    time.sleep(2.5)
    end = time.monotonic() + 1.0
    n = 0
    try:
        while time.monotonic() < end:
            stream.recv(0.5)
            n += 1
    except HostTimeout:
        return f"source stopped after {n} queued messages"
    return "source still emitting"


def probe_sink_without_ack(s: Sides, side: str) -> Any:
    """2000 records to a sink whose rule has no requireAck; the collector acks each one."""
    # the official sink dies: wait only 1 s for it to take a record; ours gets the default
    inst = s.start(side, **({"sink_send_timeout_s": 1.0} if side == OFFICIAL else {}))
    out = s.tmp / f"out-{side}"
    writer = inst.start_sink("collector", rule_meta(), {"out": str(out)})
    last = '{"i":1999}'
    try:
        for i in range(2000):
            writer.write({"i": i})
    except HostTimeout:
        time.sleep(0.3)
        return {"host_timed_out": True, "collected": len(read_lines(out)) - 1,
                "has_last": last in read_lines(out)}
    wait_for(lambda: last in read_lines(out), 5)
    return {"host_timed_out": False, "collected": len(read_lines(out)) - 1,
            "has_last": last in read_lines(out)}


def probe_emit_error(s: Sides, side: str) -> Any:
    inst = s.start(side)
    stream = inst.start_source("counter", rule_meta(), "", {"interval": 0.01, "error_every": 2})
    stream.sock.recv_timeout = 5000
    stream.sock.recv()  # n=1, a tuple
    raw = stream.sock.recv()  # n=2, the error
    try:
        go: Any = go_message_wrapper(raw)
    except GoDecodeError as e:
        go = e
    return protocol.decode_source_message(raw), go, raw


def probe_get_logger(s: Sides, side: str) -> Any:
    inst = s.start(side, template="logcheck")
    meta = rule_meta()
    rec = inst.start_source("logger", meta).recv(5).message
    assert inst.process is not None
    # only a logger that accepted the call can have written the line: wait for it then
    rec["logged"] = wait_for(lambda: any(f"hello from rule {meta.rule_id}" in line
                                         for line in inst.process.stderr_tail),
                             2 if rec["info"] == "ok" else 0)
    # a line written with write() arrives as a log record on stderr (ours) or on stdout
    rec["written"] = wait_for(lambda: any(f"INFO ekuiper.logger[{meta.rule_id}/" in line
                                          and f"written for rule {meta.rule_id}" in line
                                          for line in inst.process.stderr_tail),
                              2 if rec["write"] == "ok" and side == EKL else 0)
    rec["rule"] = meta.rule_id
    return rec


def probe_name_mismatch(s: Sides, side: str) -> Any:
    """The plugin runs with no host listening for its name (as when NAME.json differs)."""
    folder = s.plugin_copy("compat")
    env = dict(os.environ, **{protocol.IPC_DIR_ENV: s.ipc_dir})
    env.pop("PYTHONPATH", None)
    t0 = time.monotonic()
    proc = subprocess.Popen([s.interpreter(side), "-u", str(folder / "compat.py"),
                             protocol.encode_portable_config()], cwd=folder, env=env,
                            stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, start_new_session=True)
    try:
        out, err = proc.communicate(timeout=15)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.communicate()
    return proc.returncode, time.monotonic() - t0, err.decode(), folder.name


def probe_sigterm(s: Sides, side: str) -> Any:
    inst = s.start(side)
    marker = s.tmp / f"marker-{side}"
    meta = rule_meta()
    stream = inst.start_source("counter", meta, "", {"interval": 0.01, "marker": str(marker)})
    stream.recv(5)
    assert inst.process is not None and inst.process.popen is not None
    popen = inst.process.popen
    t0 = time.monotonic()
    os.kill(popen.pid, signal.SIGTERM)
    try:
        rc = popen.wait(5)
    except subprocess.TimeoutExpired:
        rc = None
    return rc, time.monotonic() - t0, f"source closed {meta.rule_id}" in read_lines(marker)


def _call(s: Sides, side: str, symbol: str) -> Tuple[bool, Any, Tuple[bool, Any]]:
    inst = s.start(side)
    with official_function(side, symbol):
        try:
            fc = inst.start_function(symbol)
            state, result = fc.request(protocol.FUNC_EXEC, [7, FuncMeta("r1", "op1").encode()])
            again = fc.request(protocol.FUNC_IS_AGGREGATE, None)  # still serving
        finally:
            inst.close()
    return state, result, again


def probe_function_raises(s: Sides, side: str) -> Any:
    return _call(s, side, "boom")


def probe_not_json_encodable(s: Sides, side: str) -> Any:
    return _call(s, side, "weird")


@dataclass
class Defect:
    id: str
    official: str          # what the official SDK does (the defect)
    ours: str              # what ekl's SDK does instead
    probe: Callable[[Sides, str], Any]
    shows_defect: Callable[[Any], bool]
    fixed: Callable[[Any], bool]


DEFECTS = [
    Defect("datasource-ignored",
           "reads the key `datasource`; eKuiper sends `dataSource`, so configure() gets ''",
           "accepts both keys", probe_datasource,
           lambda ds: ds == "", lambda ds: ds == "topic/a"),
    Defect("unknown-symbol-traceback",
           "a start for an unknown symbol answers a multi-line Python traceback (KeyError)",
           "one line naming the symbol and the ones the plugin has; keeps serving",
           probe_unknown_symbol,
           lambda r: multi_line_traceback(r[0], "KeyError"),
           lambda r: one_line(r[0], "'nosuch'", "counter", "stuck") and r[1]),
    Defect("malformed-command-traceback",
           "a malformed command answers a multi-line traceback (JSONDecodeError)",
           "one line saying what is wrong; keeps serving", probe_malformed_command,
           lambda r: multi_line_traceback(r[0], "JSONDecodeError"),
           lambda r: one_line(r[0], "malformed command", "not JSON") and r[1]),
    Defect("argv-send-timeout-ignored",
           "ignores argv[1] `sendTimeout` (always 1 s): a source dies when the host pauses "
           "reading for longer than 1 s",
           "uses argv[1] `sendTimeout` for its sends", probe_send_timeout,
           lambda r: r.startswith("source stopped"), lambda r: r == "source still emitting"),
    Defect("sink-without-requireack-dies",
           "a sink whose rule has no requireAck still sends acks nobody reads; after a few "
           "hundred records the ack send times out and the sink dies",
           "sends no acks when the rule did not ask; collects all 2000 records",
           probe_sink_without_ack,
           # The dead sink shows in the records it never wrote. Whether the host's sends
           # also time out depends on how many records the socket buffers hold: ekl's host
           # writes a burst in one write (EKUIPER_PUSH_COALESCE_US), and 2000 records fit.
           lambda r: not r["has_last"] and 0 < r["collected"] < 2000,
           lambda r: not r["host_timed_out"] and r["has_last"] and r["collected"] >= 2000),
    Defect("emit-error-empty-tuple",
           "emit_error sends `{\"error\": text}`: eKuiper 2.x decodes only message/meta and "
           "ingests an empty tuple; the text is lost",
           "adds the text as `message` (a string): Go's decode fails and the error reaches the "
           "rule's error path with its text; `error` stays for hosts that read it",
           probe_emit_error,
           lambda r: r[0].error == "error number 2" and r[1] == (None, None),
           lambda r: r[0].error == "error number 2" and isinstance(r[1], GoDecodeError)
           and b"error number 2" in r[2]),
    Defect("get-logger-is-stdout",
           "ctx.get_logger() returns sys.stdout (no .info; output mixed into stdout)",
           "a logging.Logger whose name carries rule/op/instance, logging to stderr; it also "
           "has write()/flush(), so the official SDK's idiom still works",
           probe_get_logger,
           lambda r: r["type"] == "TextIOWrapper" and not r["is_logger"]
           and r["info"].startswith("AttributeError") and r["write"] == "ok",
           lambda r: r["is_logger"] and r["info"] == "ok" and r["rule"] in r["name"]
           and r["logged"] and r["write"] == "ok" and r["written"]),
    Defect("name-mismatch-exits-0",
           "a plugin whose name matches no control socket dials for ~5 s and exits 0",
           "exits 1 with a message naming the socket and NAME.json", probe_name_mismatch,
           lambda r: r[0] == 0,
           lambda r: r[0] == 1 and "no host is listening" in r[2] and f"{r[3]}.json" in r[2]),
    Defect("sigterm-skips-close",
           "SIGTERM kills the process at once: close() of running symbols never runs",
           "close() called on every running symbol, sockets closed, exit 0 within 2 s",
           probe_sigterm,
           lambda r: r[0] == -signal.SIGTERM and not r[2],
           lambda r: r[0] == 0 and r[1] < 2.0 and r[2]),
    Defect("function-raise-traceback",
           "a function that raises answers state false with a multi-line traceback",
           "state false with one line: function, exception type and text; keeps serving",
           probe_function_raises,
           lambda r: r[0] is False and multi_line_traceback(r[1], "ValueError: boom"),
           lambda r: r[0] is False and one_line(r[1], "boom", "ValueError") and r[2] == (True, False)),
    Defect("result-not-json-traceback",
           "a result that is not JSON-encodable answers state false with a multi-line traceback",
           "state false with one line naming the result's type; keeps serving",
           probe_not_json_encodable,
           lambda r: r[0] is False and multi_line_traceback(r[1], "not JSON serializable"),
           lambda r: r[0] is False and one_line(r[1], "weird", "set", "JSON") and r[2] == (True, False)),
]


@pytest.mark.parametrize("defect", DEFECTS, ids=[d.id for d in DEFECTS])
def test_official_defect_fixed_by_ekl(sides: Sides, defect: Defect) -> None:
    seen = sides.both(defect.probe)
    assert defect.shows_defect(seen[OFFICIAL]), (
        f"the official SDK no longer shows this defect ({defect.official}); "
        f"observed {seen[OFFICIAL]!r}: update the table and docs/sdk.md")
    assert defect.fixed(seen[EKL]), f"ekl's SDK should: {defect.ours}; observed {seen[EKL]!r}"


def test_defect_table_is_documented() -> None:
    """docs/sdk.md lists every row of the table above."""
    doc = (Path(__file__).resolve().parent.parent / "docs" / "sdk.md").read_text()
    section = doc.split("## What ekl's SDK fixes", 1)[1]
    missing = [d.id for d in DEFECTS if f"`{d.id}`" not in section]
    assert not missing, f"docs/sdk.md lacks rows for {missing}"

