"""The protocol module's shapes, checked against what eKuiper's Go runtime sends and reads."""

import json

import pytest

from ekuiper import protocol
from ekuiper.protocol import Control, FuncMeta, Meta


def test_command_arg_is_a_json_string_as_go_marshals_it():
    ctrl = Control("pyjson", "source", Meta("rule1", "op1", 0), "topic/a", {"interval": 1})
    cmd = json.loads(protocol.encode_command("start", ctrl))
    assert isinstance(cmd["arg"], str)
    assert json.loads(cmd["arg"]) == {"symbolName": "pyjson", "pluginType": "source",
                                      "meta": {"ruleId": "rule1", "opId": "op1", "instanceId": 0},
                                      "dataSource": "topic/a", "config": {"interval": 1}}


def test_empty_datasource_and_config_are_omitted_like_go_omitempty():
    arg = json.loads(json.loads(protocol.encode_command("start", Control("f", "func")))["arg"])
    assert "dataSource" not in arg and "config" not in arg


@pytest.mark.parametrize("key", ["dataSource", "datasource"])
def test_decode_accepts_both_spellings_of_datasource(key):
    raw = json.dumps({"cmd": "start", "arg": json.dumps(
        {"symbolName": "s", "pluginType": "source", "meta": {"ruleId": "r", "opId": "o",
                                                              "instanceId": 2}, key: "t"})})
    cmd, ctrl = protocol.decode_command(raw.encode())
    assert cmd == "start" and ctrl.data_source == "t" and ctrl.meta.instance_id == 2


@pytest.mark.parametrize("raw, fragment", [
    (b"not json", "not JSON"),
    (b'{"arg": "{}"}', "no cmd"),
    (b'{"cmd": "explode", "arg": "{}"}', "unknown command"),
    (b'{"cmd": "start", "arg": "{broken"}', "arg is not JSON"),
    (b'{"cmd": "start", "arg": "{}"}', "no symbolName"),
    (b'{"cmd": "start", "arg": "{\\"symbolName\\": \\"x\\", \\"pluginType\\": \\"sauce\\"}"}',
     "pluginType"),
])
def test_malformed_commands_are_one_line_errors(raw, fragment):
    with pytest.raises(protocol.ProtocolError) as e:
        protocol.decode_command(raw)
    assert fragment in str(e.value) and "\n" not in str(e.value)


def test_ping_is_answered_ok_even_by_an_sdk_that_parses_arg_first():
    # The official SDK json.loads(arg) before looking at cmd: arg must be a JSON object text.
    cmd = json.loads(protocol.PING_COMMAND)
    assert cmd["cmd"] == "ping" and json.loads(cmd["arg"]) == {}


def test_stale_handshake_rule_is_first_byte_h():
    assert protocol.is_stale_handshake(b"handshake")
    assert not protocol.is_stale_handshake(b"ok")
    assert not protocol.is_stale_handshake(b"")


def test_urls_follow_ekuiper_and_the_ipc_dir_override(monkeypatch):
    m = Meta("rule1", "op1", 3)
    monkeypatch.delenv(protocol.IPC_DIR_ENV, raising=False)
    assert protocol.control_url("pysam") == "ipc:///tmp/plugin_pysam.ipc"
    assert protocol.function_url("revert") == "ipc:///tmp/func_revert.ipc"
    assert protocol.data_url(m) == "ipc:///tmp/rule1_op1_3.ipc"
    assert protocol.ack_url(m) == "ipc:///tmp/rule1_op1_3_ack.ipc"
    monkeypatch.setenv(protocol.IPC_DIR_ENV, "/tmp/mine/")
    assert protocol.control_url("pysam") == "ipc:///tmp/mine/plugin_pysam.ipc"


def test_socket_paths_over_the_unix_limit_are_refused_with_the_fix():
    with pytest.raises(ValueError, match="107-byte limit"):
        protocol.data_url(Meta("r" * 120, "op", 0), "/tmp")


def test_function_context_travels_as_a_json_string():
    s = FuncMeta("r", "o", 1, 2).encode()
    assert isinstance(s, str) and json.loads(s) == {"ruleId": "r", "opId": "o",
                                                    "instanceId": 1, "funcId": 2}
    assert FuncMeta.decode(s).key == "r_o_1_2"
    with pytest.raises(protocol.ProtocolError):
        FuncMeta.decode('{"ruleId": "r"}')


def _go_message_wrapper(data: bytes):
    """What eKuiper's ``json.Unmarshal(msg, &messageWrapper{})`` yields: (message, error)."""
    d = json.loads(data)
    msg = d.get("message")
    if msg is not None and not isinstance(msg, dict):
        return None, "cannot unmarshal into map"
    return msg, None


def test_source_errors_never_decode_to_an_empty_tuple_in_go():
    data = protocol.encode_source_error("sensor offline")
    message, err = _go_message_wrapper(data)
    assert message is None and err is not None  # eKuiper's ingestError path, not a tuple
    assert "sensor offline" in data.decode()
    assert protocol.decode_source_message(data).error == "sensor offline"


def test_nan_cannot_reach_go_which_cannot_parse_it():
    with pytest.raises(ValueError):
        protocol.encode_source_message({"x": float("nan")}, None)


@pytest.mark.parametrize("config, expected", [
    (None, False), ({}, False), ({"requireAck": True}, True), ({"requireAck": "true"}, True),
    ({"requireAck": False}, False), ({"requireAck": "false"}, False)])
def test_require_ack_is_read_loosely_as_eKuiper_does(config, expected):
    assert protocol.require_ack(config) is expected


def test_portable_config_from_argv():
    assert protocol.decode_portable_config(["x", '{"sendTimeout": 250}'])["sendTimeout"] == 250
    assert protocol.decode_portable_config(["x"])["sendTimeout"] == 1000
    with pytest.raises(protocol.ProtocolError):
        protocol.decode_portable_config(["x", "{oops"])


# --- strict decoding: ProtocolError, and nothing else, for any input ----------------------

DEEP = b"[" * 100_000 + b"]" * 100_000


def _start(arg: object) -> bytes:
    return json.dumps({"cmd": "start", "arg": arg}).encode()


def _ctrl(**over: object) -> str:
    d = {"symbolName": "s", "pluginType": "source",
         "meta": {"ruleId": "r", "opId": "o", "instanceId": 0}}
    d.update(over)
    return json.dumps({k: v for k, v in d.items() if v is not ...})


@pytest.mark.parametrize("raw, fragment", [
    (_start('{"symbolName": "s", "pluginType": "source", '
            '"meta": {"ruleId": "r", "opId": "o", "instanceId": Infinity}}'), "Infinity"),
    (_start('{"symbolName": "s", "pluginType": "source", '
            '"meta": {"ruleId": "r", "opId": "o", "instanceId": 1e999}}'), "out of range"),
    (_start('{"symbolName": "s", "pluginType": "source", '
            '"meta": {"ruleId": "r", "opId": "o", "instanceId": NaN}}'), "NaN"),
    (_start(_ctrl(meta={"ruleId": "r", "opId": "o", "instanceId": 1.5})), "must be an integer"),
    (_start(_ctrl(meta={"ruleId": "r", "opId": "o", "instanceId": "3"})), "must be an integer"),
    (_start(_ctrl(meta={"ruleId": "r", "opId": "o", "instanceId": 1 << 64})), "must be an integer"),
    (_start(_ctrl(meta={"ruleId": "r", "opId": "o", "instanceId": True})), "must be an integer"),
    (_start(_ctrl(meta={"ruleId": 5, "opId": "o"})), "ruleId must be a string"),
    (_start(_ctrl(meta=...)), "meta is missing"),
    (_start(_ctrl(meta=None)), "meta is missing"),
    (_start(_ctrl(meta=[1])), "meta must be an object"),
    (_start(_ctrl(meta={"instanceId": 0})), "non-empty ruleId and opId"),
    (_start(_ctrl(dataSource=["a"])), "dataSource must be a string"),
    (_start(_ctrl(config=[1])), "config must be an object"),
    (_start(_ctrl(pluginType=["source"])), "pluginType"),
    (_start({"symbolName": "s", "pluginType": "source"}), "arg must be a string"),
    (_start(None), "arg must be a string"),
    (json.dumps({"cmd": "stop", "arg": 7}).encode(), "arg must be a string"),
    (b'{"cmd": "start", "arg": "' + b"[" * 5000 + b'"}', "arg is not JSON"),
    (b'{"cmd": "start", "arg": "\\"' + b"x" * 10 + b'\\""}', "arg must hold a JSON object"),
    (b"[" * 600 + b"]" * 600, "nested deeper than 512"),
    (DEEP, "nested deeper than 512"),
    (b'{"cmd": ' + b"[" * 100_000, "not JSON"),
    (b'{"cmd": "start", "arg": "' + json.dumps("[" * 600 + "]" * 600).encode()[1:-1] + b'"}',
     "nested deeper than 512"),
    (b"\xff\xfe", "not UTF-8"),
    (b'{"cmd": "start", "arg": "' + b"9" * 400 + b'"}', "out of range"),
    (b'{"cmd": {"x": 1}}', "no cmd"),
    (b'{"cmd": "ping", "arg": {}} trailing', "not JSON"),
])
def test_hostile_commands_raise_only_protocol_errors_in_one_line(raw, fragment):
    with pytest.raises(protocol.ProtocolError) as e:
        protocol.decode_command(raw)
    text = str(e.value)
    assert fragment in text and "\n" not in text and len(text) < 400, text


def test_a_function_needs_no_meta_as_ekuiper_sends_none():
    # eKuiper's NewPortableFunc builds Control{SymbolName, PluginType} and Meta is a *Meta
    # with omitempty: the start command of a function has no "meta" key at all.
    for meta in ({}, ..., None):
        cmd, ctrl = protocol.decode_command(_start(_ctrl(pluginType="func", meta=meta)))
        assert ctrl.meta == Meta() and ctrl.plugin_type == "func"
    with pytest.raises(protocol.ProtocolError, match="instanceId must be an integer"):
        protocol.decode_command(_start(_ctrl(pluginType="func", meta={"instanceId": "x"})))
    with pytest.raises(protocol.ProtocolError, match="sink 's': meta is missing"):
        protocol.decode_command(_start(_ctrl(pluginType="sink", meta=...)))


@pytest.mark.parametrize("decode", [protocol.decode_command, protocol.decode_func_request,
                                    protocol.decode_func_reply])
@pytest.mark.parametrize("raw", [DEEP, b"NaN", b"-Infinity", b"1e400", b"[1e999]", b"\x00",
                                 b"\xc3\x28", b"", b"{" * 3000, b'"\\ud800"', b"9" * 5000])
def test_every_decoder_refuses_with_protocol_error(decode, raw):
    with pytest.raises(protocol.ProtocolError):
        decode(raw)


@pytest.mark.parametrize("raw", [DEEP, b"NaN", b"\xff", b'{"message": {"x": Infinity}}',
                                 b'{"error": ' + b"[" * 3000 + b"]" * 3000 + b"}"])
def test_source_and_ack_decoders_turn_anything_into_an_error_text(raw):
    assert protocol.decode_source_message(raw).error
    assert protocol.decode_ack(raw)


def test_function_context_ids_must_be_integers():
    for bad in ('{"ruleId": "r", "opId": "o", "instanceId": Infinity, "funcId": 0}',
                '{"ruleId": "r", "opId": "o", "instanceId": 0, "funcId": 1e999}',
                '{"ruleId": "r", "opId": "o", "instanceId": 0.5, "funcId": 0}',
                '{"ruleId": [], "opId": "o", "instanceId": 0, "funcId": 0}',
                "[" * 5000, 12):
        with pytest.raises(protocol.ProtocolError):
            FuncMeta.decode(bad)


def test_loads_strict_limits_are_exact():
    ok = "[" * protocol.MAX_JSON_DEPTH + "]" * protocol.MAX_JSON_DEPTH
    assert protocol.loads_strict(ok) is not None
    deep = "[" + ok + "]"
    with pytest.raises(protocol.ProtocolError, match="nested deeper"):
        protocol.loads_strict(deep)
    # brackets inside strings do not count
    assert protocol.loads_strict(json.dumps(["[" * 5000])) == ["[" * 5000]
    assert protocol.loads_strict("9" * protocol.MAX_INT_DIGITS) == int("9" * 309)
    assert protocol.loads_strict("-" + "9" * protocol.MAX_INT_DIGITS) < 0
    with pytest.raises(protocol.ProtocolError, match="out of range"):
        protocol.loads_strict("9" * (protocol.MAX_INT_DIGITS + 1))
    assert protocol.loads_strict("1.7e308") == 1.7e308
    assert protocol.loads_strict(b'{"a": [1, 2.5, "x", null, true]}') == {"a": [1, 2.5, "x", None,
                                                                                True]}


def test_dumps_escapes_a_lone_surrogate_instead_of_failing():
    value = protocol.loads_strict('"\\ud800x"')
    assert protocol.dumps(value) == b'"\\ud800x"'
    assert protocol.dumps({"é": 1}) == '{"é":1}'.encode()
    with pytest.raises(ValueError):
        protocol.dumps(float("inf"))


def test_portable_config_is_bounded():
    assert protocol.decode_portable_config(["x", '{"sendTimeout": 1e300}'])["sendTimeout"] == \
        protocol.MAX_TIMEOUT_MS
    assert protocol.decode_portable_config(["x", '{"sendTimeout": true}'])["sendTimeout"] == 1000
    with pytest.raises(protocol.ProtocolError):
        protocol.decode_portable_config(["x", '{"sendTimeout": Infinity}'])
