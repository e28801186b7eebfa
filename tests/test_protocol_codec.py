"""The SDK's fast encoding paths write exactly the bytes of the plain stdlib encoder.

``protocol.dumps``, ``encode_func_reply`` and ``encode_source_message`` take shortcuts on
the hot path (a C encoder made once, replies written around the encoded result, and
orjson when it is importable). Each must give byte for byte what ``json.JSONEncoder``
with the protocol's options gives (or fail the same way), for any value: these tests
compare them on generated values, including the ones where orjson differs (NaN, floats
under 1e-4, huge integers, lone surrogates, non-string keys, subclasses, deep nesting).
"""

from __future__ import annotations

import dataclasses
import datetime
import enum
import json
import os
import subprocess
import sys
from typing import Any, Callable, Tuple

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from ekuiper import protocol

_REF = json.JSONEncoder(separators=(",", ":"), ensure_ascii=False, allow_nan=False)
_REF_ASCII = json.JSONEncoder(separators=(",", ":"), ensure_ascii=True, allow_nan=False)


def reference(obj: Any) -> bytes:
    """What protocol.dumps wrote before the fast paths: the stdlib, nothing else."""
    text = _REF.encode(obj)
    try:
        return text.encode("utf-8")
    except UnicodeEncodeError:
        return _REF_ASCII.encode(obj).encode("ascii")


def outcome(fn: Callable[[], bytes]) -> Tuple[str, Any]:
    try:
        return "ok", fn()
    except (TypeError, ValueError, RecursionError) as e:  # the kinds callers handle
        return "error", ValueError if isinstance(e, (ValueError, RecursionError)) else TypeError


class Color(enum.IntEnum):
    RED = 1


class Name(str):
    pass


@dataclasses.dataclass
class Point:
    x: int


floats = st.one_of(
    st.floats(allow_nan=True, allow_infinity=True),
    st.floats(min_value=-1e-3, max_value=1e-3),  # where orjson's formatting differs
    st.sampled_from([1e-5, 1.5e-05, 1e-7, 9.999e-05, 1e-4, 1e16, 1.5e16, 5e-324, -0.0]))
ints = st.one_of(st.integers(), st.integers(min_value=2**63 - 2, max_value=2**64 + 2),
                 st.integers(min_value=10**30, max_value=10**40))
texts = st.one_of(st.text(), st.text(alphabet=st.characters(min_codepoint=0, max_codepoint=0x7f)),
                  st.sampled_from(["\ud800", "x\udfffy", "null", "e-1", "0.00001", "\x7f\u2028",
                                   "\x00\x1f\"\\"]))
scalars = st.one_of(st.none(), st.booleans(), ints, floats, texts,
                    st.sampled_from([Color.RED, Name("n"), Point(1), datetime.date(2020, 1, 2)]))
values = st.recursive(
    scalars,
    lambda inner: st.one_of(
        st.lists(inner, max_size=4),
        st.lists(inner, max_size=3).map(tuple),
        st.dictionaries(texts, inner, max_size=4),
        st.dictionaries(st.integers(-5, 5), inner, max_size=2),
        st.dictionaries(st.sampled_from([Name("k")]), inner, max_size=1)),
    max_leaves=12)


@settings(max_examples=300, deadline=None)
@given(values)
def test_dumps_writes_the_stdlib_bytes(v: Any) -> None:
    assert outcome(lambda: protocol.dumps(v)) == outcome(lambda: reference(v))


@settings(max_examples=200, deadline=None)
@given(st.booleans(), values)
def test_func_reply_writes_the_stdlib_bytes(state: bool, v: Any) -> None:
    assert outcome(lambda: protocol.encode_func_reply(state, v)) == \
        outcome(lambda: reference({"state": state, "result": v}))


@settings(max_examples=200, deadline=None)
@given(st.dictionaries(texts, values, max_size=4),
       st.one_of(st.none(), st.dictionaries(texts, values, max_size=3)))
def test_source_message_writes_the_stdlib_bytes(message: Any, meta: Any) -> None:
    assert outcome(lambda: protocol.encode_source_message(message, meta)) == \
        outcome(lambda: reference({"message": message, "meta": meta}))


@pytest.mark.parametrize("depth", [200, 300, 600])
def test_deep_values_match(depth: int) -> None:
    v: Any = 1
    for _ in range(depth):
        v = [v]
    assert outcome(lambda: protocol.dumps(v)) == outcome(lambda: reference(v))


def test_self_containing_value_fails_as_an_encoding_error() -> None:
    v: list = []
    v.append(v)
    kind, _ = outcome(lambda: protocol.encode_func_reply(True, v))
    assert kind == "error"  # the runtime turns it into a "not JSON-encodable" reply


def test_orjson_used_only_when_importable_and_not_turned_off() -> None:
    """Without orjson (or with EKUIPER_ORJSON=0) the SDK runs on the stdlib alone."""
    code = ("import sys; sys.modules['orjson'] = None\n"  # makes `import orjson` fail
            "from ekuiper import protocol\n"
            "out = protocol.dumps({'a': [1, 1e-05, None]}).decode()\n"
            "assert protocol._orjson_dumps is None\n"  # tried once, then never again
            "print(out)")
    env = dict(os.environ)
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env,
                         check=True).stdout.strip()
    assert out == '{"a":[1,1e-05,null]}'
    env[protocol.ORJSON_ENV] = "0"
    code2 = ("from ekuiper import protocol\nassert protocol._orjson_dumps is None\n"
             "print(protocol.encode_func_reply(True, [1.5]).decode())")
    out = subprocess.run([sys.executable, "-c", code2], capture_output=True, text=True, env=env,
                         check=True).stdout.strip()
    assert out == '{"state":true,"result":[1.5]}'


def test_orjson_is_in_use_here() -> None:
    """The dev environment has orjson, so the tests above exercise its path."""
    pytest.importorskip("orjson")
    if os.environ.get(protocol.ORJSON_ENV, "").strip() != "0":
        protocol.dumps({"a": 1})
        import orjson

        assert protocol._orjson_dumps is orjson.dumps


def test_orjson_loads_at_the_first_encode_not_with_the_protocol_module() -> None:
    """The launcher imports ekuiper.protocol on every start and never needs orjson there."""
    pytest.importorskip("orjson")
    code = ("import sys\nfrom ekuiper import protocol\nassert 'orjson' not in sys.modules\n"
            "assert protocol.dumps({'a': [1.5, 'x']}) == b'{\"a\":[1.5,\"x\"]}'\n"
            "assert 'orjson' in sys.modules\n")
    env = {k: v for k, v in os.environ.items() if k != protocol.ORJSON_ENV}
    subprocess.run([sys.executable, "-c", code], env=env, check=True)


# --- the Exec fast path reads what decode_func_request reads ---------------------------

json_values = st.recursive(
    st.one_of(st.none(), st.booleans(), st.integers(-2**70, 2**70),
              st.floats(allow_nan=False, allow_infinity=False), texts),
    lambda inner: st.one_of(st.lists(inner, max_size=3),
                            st.dictionaries(texts, inner, max_size=3)),
    max_leaves=8)
contexts = st.one_of(
    st.builds(lambda r, o, i, f: protocol.FuncMeta(r, o, i, f).encode(), texts, texts,
              st.integers(0, 9), st.integers(0, 9)),
    texts)


def agrees_with_full_parse(data: bytes) -> None:
    """Whenever split_exec_request answers and its context literal parses as a string
    (the runtime checks that before it uses the literal; otherwise it takes the full
    path), the full parse accepts the request and reads the same arguments and context."""
    split = protocol.split_exec_request(data)
    if split is None:
        return
    args, literal = split
    try:
        ctx = protocol.loads_strict(literal)
    except protocol.ProtocolError:
        return
    if not isinstance(ctx, str):
        return
    func, arg = protocol.decode_func_request(data)  # must not raise
    assert func == protocol.FUNC_EXEC and isinstance(arg, list) and arg
    assert args == arg[:-1]
    assert ctx == arg[-1]


@settings(max_examples=300, deadline=None)
@given(st.lists(json_values, max_size=4), contexts)
def test_exec_fast_path_reads_what_eKuiper_writes(args: list, ctx: str) -> None:
    data = protocol.encode_func_request(protocol.FUNC_EXEC, args + [ctx])
    split = protocol.split_exec_request(data)
    if args and not ctx.endswith(","):  # a context ending in "," is read by the full path
        assert split is not None
        assert split[0] == protocol.decode_func_request(data)[1][:-1]
        assert protocol.loads_strict(split[1]) == ctx
    agrees_with_full_parse(data)


@settings(max_examples=300, deadline=None)
def edit(raw: bytearray, pos: int, op: str, byte: int) -> None:
    """One mutation of a request: set, insert or delete the byte at ``pos``."""
    if op == "set":
        raw[pos] = byte
    elif op == "insert":
        raw.insert(pos, byte)
    elif len(raw) > 1:
        del raw[pos]


@given(st.lists(json_values, min_size=1, max_size=3), contexts, st.data())
def test_exec_fast_path_never_accepts_what_the_full_parse_refuses(args: list, ctx: str,
                                                                 data: st.DataObject) -> None:
    raw = bytearray(protocol.encode_func_request(protocol.FUNC_EXEC, args + [ctx]))
    for _ in range(data.draw(st.integers(1, 3))):
        pos = data.draw(st.integers(0, len(raw) - 1))
        op = data.draw(st.sampled_from(["set", "insert", "delete"]))
        byte = data.draw(st.sampled_from([ord(c) for c in ',"\\[]{}:0a ']) | st.integers(0, 255))
        edit(raw, pos, op, byte)
    agrees_with_full_parse(bytes(raw))


@pytest.mark.parametrize("depth", [509, 510, 511, 512])
def test_exec_fast_path_depth_limit_is_the_full_parse_limit(depth: int) -> None:
    """The envelope adds two levels; the fast path parses the args in one."""
    v: Any = 1
    for _ in range(depth):
        v = [v]
    data = protocol.encode_func_request(protocol.FUNC_EXEC, [v, "ctx"])
    try:
        protocol.decode_func_request(data)
        full_ok = True
    except protocol.ProtocolError:
        full_ok = False
    assert (protocol.split_exec_request(data) is not None) == full_ok


@pytest.mark.parametrize("data", [
    b'{"func":"Exec","arg":["ctx"]}',  # the context alone: the full path
    b'{"func":"Exec","arg":[,"ctx"]}',  # a comma with no argument before it: refused
    b'{"func":"Exec","arg":[1,"]}',
    b'{"func":"Exec","arg":[1,"a\\"]}',
    b'{"func":"Exec","arg":[1,,"c"]}',
    b'{"func":"Exec","arg":[NaN,"c"]}',
    b'{"func":"Exec","arg":[1e400,"c"]}',
    b'{"func":"Exec","arg":[1],"x":[1,"c"]}',
    b'{"func":"Exec","arg":[1,"c"]} ',
])
def test_exec_fast_path_edge_cases(data: bytes) -> None:
    agrees_with_full_parse(data)


def test_exec_fast_path_refuses_a_leading_comma() -> None:
    """``[,"ctx"]`` is not JSON; the fast path once read it as no arguments."""
    assert protocol.split_exec_request(b'{"func":"Exec","arg":[,"ctx"]}') is None


# --- the runtime's per-call-site shortcut (protocol.exec_tail) reads the same ----------


class _Recorder:
    """A function that records what each call received."""

    def __init__(self) -> None:
        self.calls: list = []

    def exec(self, args: Any, ctx: Any) -> int:
        self.calls.append((args, ctx.meta))
        return len(self.calls)


_SITES = [protocol.FuncMeta("r1", "op", 0, 0).encode(), protocol.FuncMeta("r1", "op", 0, 1).encode(),
          protocol.FuncMeta("r,", 'o"p', 2, 3).encode(),
          '{"ruleId":"r","opId":"o","instanceId":0,"funcId":0} ,',  # ends in a comma: not JSON
          '{"ruleId":"r","opId":"o","instanceId":0,"funcId":0,"x":","}']


def expected_call(data: bytes) -> Any:
    """What the full parse makes of a request: (args, Meta) for a valid Exec, else None."""
    try:
        func, arg = protocol.decode_func_request(data)
        if func != protocol.FUNC_EXEC or not isinstance(arg, list) or not arg:
            return None
        fm = protocol.FuncMeta.decode(arg[-1])
    except protocol.ProtocolError:
        return None
    return arg[:-1], protocol.Meta(fm.rule_id, fm.op_id, fm.instance_id)


@settings(max_examples=150, deadline=None)
@given(st.lists(st.tuples(st.lists(json_values, max_size=3), st.sampled_from(_SITES),
                          st.lists(st.tuples(st.integers(0, 10**6),
                                             st.sampled_from(["set", "insert", "delete"]),
                                             st.sampled_from([ord(c) for c in ',"\\[]{}:0a '])),
                                   max_size=2)),
                min_size=1, max_size=8))
def test_function_runtime_reads_every_call_as_the_full_parse(calls: list) -> None:
    """Calls from repeating call sites, some mutated: whichever path the runtime takes
    (the call site's tail, the literal lookup, or the full parse), ``exec`` receives the
    arguments and context the full parse reads, and a request the full parse refuses
    never reaches ``exec``."""
    from ekuiper.runtime.symbols import FunctionRuntime, Settings
    from ekuiper.transport import get_transport

    rec = _Recorder()
    rt = FunctionRuntime(protocol.Control("f", protocol.TYPE_FUNC), rec, get_transport(),
                         Settings())
    for args, site, edits in calls:
        raw = bytearray(protocol.encode_func_request(protocol.FUNC_EXEC, args + [site]))
        for pos, op, byte in edits:
            edit(raw, pos % len(raw), op, byte)
        data = bytes(raw)
        want = expected_call(data)
        before = len(rec.calls)
        state, _ = protocol.decode_func_reply(rt.handle(data))
        if want is None:
            assert len(rec.calls) == before and state is False
        else:
            assert len(rec.calls) == before + 1 and state is True
            assert rec.calls[-1] == want
