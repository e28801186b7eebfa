"""Property-based attacks on the wire: arbitrary bytes and arbitrary JSON on every channel.

For each channel a real plugin process (tests/plugins/compat) runs under ekl's host, once
with each transport (``EKUIPER_TRANSPORT`` native and pynng), and hypothesis sends what it
likes; after every example a valid call (a ping, a function call, a record, a source
tuple) must be answered correctly, and the plugin must still be alive. The protocol
module's decoders are fuzzed on their own too: they may raise ProtocolError and nothing
else (ekl's relay relies on it).

Example counts are small by default to keep the suite fast; ``-m slow`` runs many more.
"""

from __future__ import annotations

import json
import os
import shutil
import socket
import struct
import tempfile
import threading
import time
from pathlib import Path
from typing import Any, Callable, Iterator, List

import pynng
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from conftest import Host, make_plugin, short_id, wait_for
from ekl.launcher.errors import CommandError
from ekl.launcher.host.instance import PluginInstance
from ekuiper import protocol
from ekuiper.protocol import Control, FuncMeta, Meta
from ekuiper.reqrep import serve_inverted
from ekuiper.transport import TRANSPORT_ENV, get_transport

TRANSPORTS = ["native", "pynng"]
FAST, SLOW = 25, 300
counts = pytest.mark.parametrize("n", [FAST, pytest.param(SLOW, marks=pytest.mark.slow)])
transports = pytest.mark.parametrize("transport", TRANSPORTS)
#: compat's symbols: a fuzzed start must never hit a real one (``die`` exits the process).
REAL_SYMBOLS = set(json.loads((Path(__file__).parent / "plugins" / "compat" /
                               "compat.json").read_text())["functions"]) | {
    "counter", "stuck", "collector"}


def fuzz(n: int) -> settings:
    return settings(max_examples=n, deadline=None, derandomize=n == FAST,
                    suppress_health_check=list(HealthCheck))


# --- strategies -------------------------------------------------------------------------

scalars = (st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False,
                                                                 allow_infinity=False)
           | st.text(max_size=12))
json_values = st.recursive(scalars, lambda c: st.lists(c, max_size=4)
                           | st.dictionaries(st.text(max_size=8), c, max_size=4), max_leaves=16)
#: JSON-looking text that Python's json would take but the protocol must refuse, or that
#: used to escape the SDK's error handling.
hostile_texts = st.one_of(
    st.sampled_from(["NaN", "Infinity", "-Infinity", "1e999", "-1e400", "9" * 400,
                     '"\\ud800"', '{"a": NaN}', "[1, 2", "{}" * 3, ""]),
    st.integers(400, 3000).map(lambda d: "[" * d + "]" * d),
    st.integers(400, 3000).map(lambda d: '{"a":' * d + "1" + "}" * d),
    st.integers(1000, 50_000).map(lambda d: "[" * d),
)
json_texts = json_values.map(json.dumps) | hostile_texts
ids = st.one_of(st.text(max_size=6), json_values)
metas = st.one_of(
    st.fixed_dictionaries({}, optional={"ruleId": ids, "opId": ids,
                                        "instanceId": st.one_of(st.integers(), json_values)}),
    json_values)
controls = st.fixed_dictionaries({}, optional={
    "symbolName": st.one_of(st.just("nosuch"), json_values).filter(
        lambda v: not (isinstance(v, str) and v in REAL_SYMBOLS)),
    "pluginType": st.one_of(st.sampled_from(protocol.PLUGIN_TYPES), json_values),
    "meta": metas, "dataSource": json_values, "config": json_values})


def _with_hostile_value(d: dict, text: str) -> str:
    """``d`` as JSON with one field's value replaced by raw ``text`` (NaN, deep nesting)."""
    return json.dumps(dict(d, hostile="@@")).replace('"@@"', text or "0")


commands = st.one_of(
    st.binary(max_size=200),
    json_texts.map(str.encode),
    st.builds(lambda cmd, ctrl, raw: json.dumps({"cmd": cmd, "arg": raw or json.dumps(ctrl)})
              .encode(), st.sampled_from(["start", "stop", "ping"]) | st.text(max_size=6),
              controls, st.none() | json_texts),
    st.builds(lambda cmd, arg: json.dumps({"cmd": cmd, "arg": arg}).encode(),
              st.sampled_from(["start", "stop"]), json_values),
    st.builds(lambda ctrl, text: json.dumps({"cmd": "start", "arg": _with_hostile_value(
        ctrl, text)}).encode(), controls, hostile_texts),
)
func_requests = st.one_of(
    st.binary(max_size=200),
    json_texts.map(str.encode),
    st.builds(lambda f, arg: json.dumps({"func": f, "arg": arg}).encode(),
              st.sampled_from(["Exec", "Validate", "IsAggregate"]) | st.text(max_size=6),
              json_values),
    st.builds(lambda args, ctx: json.dumps({"func": "Exec", "arg": args + [ctx]}).encode(),
              st.lists(json_values, max_size=3),
              st.one_of(st.just(FuncMeta("r", "o").encode()), json_texts, json_values)),
    st.builds(lambda text: ('{"func": "Exec", "arg": [%s, "{}"]}' % (text or "0")).encode(),
              hostile_texts),
)


# --- the protocol module alone ----------------------------------------------------------

DECODERS: List[Callable[[bytes], Any]] = [protocol.decode_command, protocol.decode_func_request,
                                          protocol.decode_func_reply, FuncMeta.decode]


@counts
def test_decoders_raise_only_protocol_errors(n: int) -> None:
    @fuzz(n * 4)
    @given(data=st.one_of(st.binary(max_size=300), commands, func_requests,
                          json_texts.map(str.encode)))
    def check(data: bytes) -> None:
        for decode in DECODERS:
            try:
                decode(data)
            except protocol.ProtocolError as e:
                assert "\n" not in str(e)
        assert isinstance(protocol.decode_source_message(data), protocol.SourceMessage)
        ack = protocol.decode_ack(data)
        assert ack is None or isinstance(ack, str)

    check()


@counts
def test_decoded_values_can_always_be_encoded_again(n: int) -> None:
    """What the decoders let through, a reply can echo: finite, shallow enough, UTF-8."""
    @fuzz(n * 4)
    @given(text=json_texts)
    def check(text: str) -> None:
        try:
            value = protocol.loads_strict(text)
        except protocol.ProtocolError:
            return
        protocol.encode_func_reply(True, {"args": [value]})

    check()


# --- the serving loop itself (the plugin's control and function threads, ekl's relay) -----


@transports
def test_serving_loop_survives_any_exception_from_its_handler(transport: str, ipc_dir: str) -> None:
    url = f"ipc://{ipc_dir}/loop.ipc"
    rep = pynng.Rep0(recv_timeout=5000)
    rep.listen(url)
    errors = {b"recursion": RecursionError("maximum recursion depth exceeded"),
              b"overflow": OverflowError("cannot convert float infinity to integer"),
              b"memory": MemoryError(), b"exit": SystemExit(0), b"key": KeyError("x\ny")}

    def handle(msg: bytes) -> bytes:
        if msg in errors:
            raise errors[msg]
        return b"echo:" + msg

    stop = threading.Event()
    req = get_transport(transport).dial_req(url, recv_timeout_ms=5000, send_timeout_ms=2000,
                                            retries=20, interval_s=0.02)
    t = threading.Thread(target=serve_inverted, args=(req, handle, "test", stop.is_set),
                         daemon=True)
    t.start()
    try:
        assert rep.recv() == protocol.HANDSHAKE
        for cmd in list(errors) * 2:
            rep.send(cmd)
            reply = rep.recv()
            assert b"internal error" in reply and b"\n" not in reply, reply
            rep.send(b"next")
            assert rep.recv() == b"echo:next"
        assert t.is_alive()
    finally:
        stop.set()
        req.close()
        rep.close()
        t.join(2)


# --- a plugin process on each transport -------------------------------------------------


@pytest.fixture(scope="module", params=TRANSPORTS)
def plugin(request, tmp_path_factory) -> Iterator[PluginInstance]:
    """The compat plugin on one transport, shared by this module's tests (a plugin start
    costs more than a test's examples); each test first checks that it is still alive."""
    ipc = tempfile.mkdtemp(prefix="eklfz-", dir="/tmp")
    host = Host(ipc)
    mp = pytest.MonkeyPatch()
    try:
        mp.setenv(TRANSPORT_ENV, request.param)
        inst = host.start(make_plugin(tmp_path_factory.mktemp("fuzz"), "compat"))
        mp.undo()
        env = inst.start_function("where").exec([[TRANSPORT_ENV]])["env"]
        assert env[TRANSPORT_ENV] == request.param
        yield inst
    finally:
        mp.undo()
        host.close()
        shutil.rmtree(ipc, ignore_errors=True)


@pytest.fixture
def live(plugin: PluginInstance) -> PluginInstance:
    assert plugin.alive() and plugin.ping(5) is not None, "an earlier test killed the plugin"
    return plugin


@counts
def test_control_channel_fuzz(live: PluginInstance, n: int) -> None:
    plugin = live

    @fuzz(n * 2)
    @given(data=commands)
    def check(data: bytes) -> None:
        try:
            plugin.command(data, "fuzzed command", timeout_s=5)
        except CommandError as e:
            assert "\n" not in str(e) and "Traceback" not in str(e)
        assert plugin.ping(5) is not None

    check()
    assert plugin.alive()


def _raw_call(client: Any, data: bytes) -> tuple:
    client.channel.sock.send(data)
    return protocol.decode_func_reply(client.channel.sock.recv())


@counts
def test_function_channel_fuzz(live: PluginInstance, n: int) -> None:
    plugin = live
    client = plugin.start_function("echo")
    client.channel.sock.recv_timeout = 5000
    assert client.exec([0])["args"] == [0]  # in request/reply rhythm from here on
    k = [0]

    @fuzz(n * 2)
    @given(data=func_requests)
    def check(data: bytes) -> None:
        state, result = _raw_call(client, data)
        if state is False:
            assert isinstance(result, str) and "\n" not in result
        k[0] += 1
        assert client.exec([k[0]])["args"] == [k[0]]

    check()
    assert plugin.ping(5) is not None


@counts
def test_sink_channel_fuzz(live: PluginInstance, n: int, tmp_path: Path) -> None:
    """Arbitrary messages from a second sender, and arbitrary bytes on raw connections
    (with and without a valid SP header); the rule's own records keep being collected."""
    plugin = live
    out = tmp_path / "out"
    m = Meta(f"r{short_id()}", "fz", 0)
    writer = plugin.start_sink("collector", m, {"out": str(out)})
    path = protocol.url_path(protocol.data_url(m, plugin.ipc_dir))
    rogue = pynng.Push0(send_timeout=2000)
    rogue.dial(protocol.data_url(m, plugin.ipc_dir), block=True)
    k = [0]

    def collected(marker: str) -> bool:
        return out.is_file() and marker in out.read_text(errors="replace").splitlines()

    @fuzz(n)
    @given(message=st.binary(max_size=300) | json_texts.map(str.encode),
           stream=st.binary(max_size=300), header=st.booleans())
    def check(message: bytes, stream: bytes, header: bool) -> None:
        rogue.send(message)
        raw = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        raw.settimeout(2)
        try:
            raw.connect(path)
            if header:
                raw.sendall(b"\x00SP\x00\x00\x50\x00\x00")
            raw.sendall(stream)
        except OSError:
            pass  # refused half-way: fine
        finally:
            raw.close()
        k[0] += 1
        writer.write({"k": k[0]})
        assert wait_for(lambda: collected(f'{{"k":{k[0]}}}'), 5), f"record {k[0]} lost"

    try:
        check()
    finally:
        rogue.close()
    assert plugin.ping(5) is not None


@counts
def test_source_channel_fuzz(live: PluginInstance, n: int) -> None:
    """The host end of a source: arbitrary bytes pushed to the host's socket beside the
    plugin come out as errors, and the plugin's tuples keep coming; a fake host that
    sends arbitrary bytes *to* the plugin's PUSH connection does not stop it either."""
    plugin = live
    m = Meta(f"r{short_id()}", "fz", 0)
    stream = plugin.start_source("counter", m, "", {"interval": 0.02})
    rogue = pynng.Push0(send_timeout=2000)
    rogue.dial(protocol.data_url(m, plugin.ipc_dir), block=True)
    last = [stream.recv(5).message["n"]]

    # 0-byte messages included: ekl's host reads with recv_msg(), which takes them.
    @fuzz(n)
    @given(data=st.binary(max_size=300) | json_texts.map(str.encode))
    def check(data: bytes) -> None:
        rogue.send(data)
        deadline = time.monotonic() + 5
        while True:  # the plugin's own tuples carry its rule id as meta
            got = stream.recv(5)
            if got.error is None and got.meta == {"rule": m.rule_id} \
                    and got.message["n"] > last[0]:
                last[0] = got.message["n"]
                return
            assert time.monotonic() < deadline

    try:
        check()
    finally:
        rogue.close()
    assert plugin.ping(5) is not None


@counts
def test_source_push_connection_fuzz(live: PluginInstance, n: int) -> None:
    """A raw fake host on a source's socket sends garbage to the plugin, which must go on
    emitting (re-dialling if its transport drops the connection: nng does at the first
    byte, so a few examples say all). A reader thread drains what the plugin sends, as a
    host does, so the plugin's sends never wait on the test."""
    plugin = live
    m = Meta(f"r{short_id()}", "fz", 0)
    path = protocol.url_path(protocol.data_url(m, plugin.ipc_dir))
    lst = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    lst.bind(path)
    lst.listen(8)
    lst.settimeout(0.2)
    done = threading.Event()
    state = {"messages": 0, "conn": None, "bad": []}

    def host() -> None:  # accept, read frames; when the plugin drops us, accept again
        while not done.is_set():
            try:
                c, _ = lst.accept()
            except socket.timeout:
                continue
            except OSError:
                return
            c.settimeout(0.5)
            try:
                c.sendall(b"\x00SP\x00\x00\x51\x00\x00")  # we are its PULL
                frames = _Frames(c)
                state["conn"] = c
                while not done.is_set():
                    try:
                        msg = frames.message()
                    except socket.timeout:
                        continue
                    if "message" not in json.loads(msg):
                        state["bad"].append(msg)
                    state["messages"] += 1
            except OSError:  # ConnectionError included: the plugin dropped us
                pass
            finally:
                c.close()

    reader = threading.Thread(target=host, daemon=True)
    reader.start()
    plugin.command(protocol.encode_command(protocol.CMD_START, Control(
        "counter", protocol.TYPE_SOURCE, m, "", {"interval": 0.005})), "start counter")
    assert wait_for(lambda: state["messages"] > 0, 5)

    @fuzz(max(5, n // 4))
    @given(garbage=st.binary(min_size=1, max_size=300))
    def check(garbage: bytes) -> None:
        seen = state["messages"]
        c = state["conn"]
        try:
            if c is not None:
                c.sendall(garbage)
        except OSError:
            pass  # already dropped: the plugin dials again
        assert wait_for(lambda: state["messages"] > seen, 5), "the source stopped emitting"

    try:
        check()
        assert not state["bad"]
    finally:
        done.set()
        reader.join(5)
        lst.close()
        os.unlink(path)
    assert plugin.ping(5) is not None


class _Frames:
    """The receiving end of a raw SP connection: the peer's header, then its messages."""

    def __init__(self, sock: socket.socket) -> None:
        self.sock = sock
        self.buf = b""
        assert self._read(8)[:4] == b"\x00SP\x00"

    def _read(self, n: int) -> bytes:
        while len(self.buf) < n:
            chunk = self.sock.recv(65536)
            if not chunk:
                raise ConnectionError("the plugin closed the connection")
            self.buf += chunk
        out, self.buf = self.buf[:n], self.buf[n:]
        return out

    def message(self) -> bytes:
        _kind, length = struct.unpack(">BQ", self._read(9))
        return self._read(length)
