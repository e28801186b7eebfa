"""The eKuiper portable-plugin wire protocol: the one place that knows its shapes.

Both halves import this module: the SDK (plugin side) and ``ekl.launcher`` (the side that
eKuiper's Go runtime plays in production). Anything that builds a socket URL or encodes a
message goes through here, so the two sides cannot drift apart. The authority behind every
constant is lf-edge/ekuiper ``internal/plugin/portable/runtime`` (shared.go, connection.go).
"""

from __future__ import annotations

import json
import math
import os
from collections.abc import Mapping

from .record import field, record

TYPE_CHECKING = False  # typing is not loaded at run time on the start path (docs/architecture.md)
if TYPE_CHECKING:
    from typing import Any, Dict, List, Optional, Tuple, Union

# --- where the sockets live -------------------------------------------------------------

#: Folder for every ``ipc://`` path. eKuiper itself always uses ``/tmp``; this variable
#: exists so local runs and tests can use a private 0700 folder (both sides must agree).
IPC_DIR_ENV = "EKUIPER_IPC_DIR"
DEFAULT_IPC_DIR = "/tmp"
#: sun_path is 108 bytes on Linux including the terminating NUL.
MAX_IPC_PATH = 107


def ipc_dir(override: Optional[str] = None) -> str:
    """The socket folder in force: an explicit override, else ``$EKUIPER_IPC_DIR``, else /tmp."""
    d = override or os.environ.get(IPC_DIR_ENV) or DEFAULT_IPC_DIR
    return d.rstrip("/") or "/"


def _url(name: str, directory: Optional[str]) -> str:
    path = os.path.join(ipc_dir(directory), name)
    if len(path.encode()) > MAX_IPC_PATH:
        raise ValueError(
            f"socket path {path} is {len(path.encode())} bytes, over the {MAX_IPC_PATH}-byte "
            f"limit of Unix sockets: use a shorter {IPC_DIR_ENV} or shorter rule/op ids"
        )
    return "ipc://" + path


#: Overrides the control socket alone (data sockets stay where they are). ``ekl-python``
#: sets it so the real plugin talks to it while its data flows directly to eKuiper.
CONTROL_URL_ENV = "EKUIPER_CONTROL_URL"


def control_url(plugin_name: str, directory: Optional[str] = None) -> str:
    return _url(f"plugin_{plugin_name}.ipc", directory)


def plugin_control_url(plugin_name: str, directory: Optional[str] = None) -> str:
    """The control URL a plugin dials: ``$EKUIPER_CONTROL_URL`` if set, else the standard one."""
    return os.environ.get(CONTROL_URL_ENV) or control_url(plugin_name, directory)


def function_url(symbol_name: str, directory: Optional[str] = None) -> str:
    return _url(f"func_{symbol_name}.ipc", directory)


def data_url(meta: Meta, directory: Optional[str] = None) -> str:
    """Source data (plugin PUSH -> host PULL) and sink data (host PUSH -> plugin PULL)."""
    return _url(f"{meta.rule_id}_{meta.op_id}_{meta.instance_id}.ipc", directory)


def ack_url(meta: Meta, directory: Optional[str] = None) -> str:
    return _url(f"{meta.rule_id}_{meta.op_id}_{meta.instance_id}_ack.ipc", directory)


def url_path(url: str) -> str:
    return url[len("ipc://"):] if url.startswith("ipc://") else url


# --- timings both sides rely on ---------------------------------------------------------

#: The plugin's REQ receive timeout; when it expires the plugin re-sends ``handshake``.
KEEPALIVE_MS = 5000
#: eKuiper's default ``portable.initTimeout``: how long the host waits for the handshake.
INIT_TIMEOUT_MS = 5000
#: eKuiper's ``PortbleConf.SendTimeout``, handed to the plugin in argv[1].
DEFAULT_SEND_TIMEOUT_MS = 1000
#: Plugin-side dialing (official SDK: 50 tries, 100 ms apart).
DIAL_RETRIES = 50
DIAL_INTERVAL_S = 0.1
#: Longest timeout a peer may hand us (about 24.8 days): poll() takes no more.
MAX_TIMEOUT_MS = (1 << 31) - 1
#: Host-side listening (Go runtime: 5 retries, 100 ms apart).
LISTEN_RETRIES = 5
LISTEN_INTERVAL_S = 0.1

# --- control channel --------------------------------------------------------------------

HANDSHAKE = b"handshake"
REPLY_OK = b"ok"
CMD_START = "start"
CMD_STOP = "stop"
#: Liveness probe. ``arg`` is ``"{}"`` so the official SDK (which parses ``arg`` before
#: looking at ``cmd`` and answers ``ok`` to anything it does not know) also answers ``ok``.
CMD_PING = "ping"

TYPE_SOURCE = "source"
TYPE_SINK = "sink"
TYPE_FUNC = "func"
PLUGIN_TYPES = (TYPE_SOURCE, TYPE_SINK, TYPE_FUNC)


class ProtocolError(ValueError):
    """A message that does not have the shape the protocol prescribes (one-line text)."""


#: One encoder for every message: json.dumps with non-default options builds a new
#: encoder per call, a measurable share of a source's per-message CPU.
_ENCODER = json.JSONEncoder(separators=(",", ":"), ensure_ascii=False, allow_nan=False)


_ASCII_ENCODER = json.JSONEncoder(separators=(",", ":"), ensure_ascii=True, allow_nan=False)


def _not_serializable(o: Any) -> Any:
    raise TypeError(f"Object of type {type(o).__name__} is not JSON serializable")


try:
    from json.encoder import c_make_encoder as _c_make_encoder
    from json.encoder import encode_basestring as _encode_basestring
except ImportError:  # pragma: no cover -- interpreters without the _json accelerator
    _c_make_encoder = None

#: ``JSONEncoder.encode`` makes a new C encoder on every call (``iterencode``); this one is
#: made once. Same options, hence the same bytes, as ``_ENCODER``, except that it does not
#: track containers it is inside of (``check_circular``): a self-containing value ends in
#: RecursionError instead of ValueError, both of which callers already handle.
_C_ENCODE = (_c_make_encoder(None, _not_serializable, _encode_basestring, None, ":", ",",
                             False, False, False)
             if _c_make_encoder is not None else None)


def _encode_text(obj: Any) -> str:
    """``obj`` as compact JSON text (``_ENCODER``'s output), through the reused C encoder."""
    if _C_ENCODE is None:  # pragma: no cover
        return _ENCODER.encode(obj)
    return "".join(_C_ENCODE(obj, 0))


#: ``0`` turns the optional accelerated encoder (orjson, when importable) off.
ORJSON_ENV = "EKUIPER_ORJSON"
#: orjson hands subclasses of str/int/dict/list, datetimes and dataclasses to ``default``
#: (here: none, so it raises) instead of encoding them its own way: the stdlib decides.
_ORJSON_OPTS = 0


def _load_orjson(obj: Any, option: int = 0) -> bytes:
    """The first accelerated encode: import orjson (it loads dataclasses, datetime and
    uuid: about 20 ms here) now rather than with this module, which the launcher imports on
    every start and which a plugin imports before it has anything to encode; then encode
    as ``orjson.dumps``.
    Without orjson, later calls skip it (``_orjson_dumps`` becomes None) and this one
    raises ImportError, which ``_fast_dumps`` reads as "use the stdlib"."""
    global _orjson_dumps, _ORJSON_OPTS
    try:
        import orjson as _orjson
    except ImportError:
        _orjson_dumps = None
        raise
    _ORJSON_OPTS = (_orjson.OPT_PASSTHROUGH_SUBCLASS | _orjson.OPT_PASSTHROUGH_DATETIME
                    | _orjson.OPT_PASSTHROUGH_DATACLASS)
    _orjson_dumps = _orjson.dumps
    return _orjson_dumps(obj, option=_ORJSON_OPTS)


#: orjson.dumps once loaded; until then the loader above; None when off or not importable
_orjson_dumps: Any = _load_orjson if os.environ.get(ORJSON_ENV, "").strip() != "0" else None


def _fast_dumps(obj: Any) -> Optional[bytes]:
    """orjson's bytes for ``obj`` when they are certainly the stdlib encoder's, else None.

    orjson differs in three ways that matter, each visible in its output: NaN and
    Infinity become ``null`` (the stdlib refuses them: Go cannot read them), and floats
    under 1e-4 are written ``0.00001`` or ``1e-7`` (the stdlib: ``1e-05``, ``1e-07``).
    Any output containing ``null``, ``e-`` or ``0.0000`` (even inside a string) is thrown
    away and the stdlib encodes the value; so is anything orjson refuses (integers beyond
    64 bits, lone surrogates, non-string keys, deeper than 254 levels, subclasses)."""
    try:
        out = _orjson_dumps(obj, option=_ORJSON_OPTS)
    except Exception:  # orjson.JSONEncodeError (a TypeError), RecursionError, ...
        return None
    # Per call and per message, so: ``find``, not ``bytes in bytes``, which first tries
    # its operand as an integer and raises (and formats) a TypeError inside; and a byte
    # (an int, which ``in`` finds with memchr) before each rarer pattern that holds it.
    if out.find(b"null") >= 0 or (_DASH in out and out.find(b"e-") >= 0) or (
            _DOT in out and out.find(b"0.0000") >= 0):
        return None
    return out


_DASH, _DOT = ord("-"), ord(".")


def dumps(obj: Any) -> bytes:
    """Compact JSON as Go writes it; NaN/Infinity raise ValueError (Go cannot read them).

    A string holding a lone surrogate (which a peer can send as ``"\\ud800"``) cannot be
    UTF-8: such a value is written with ``\\u`` escapes instead, as Go reads them."""
    if _orjson_dumps is not None:
        out = _fast_dumps(obj)
        if out is not None:
            return out
    return std_dumps(obj)


def std_dumps(obj: Any) -> bytes:
    """``dumps`` by the stdlib encoder alone (the same bytes): for what a host writes once
    per command or call, where loading orjson (20 ms and more: it imports dataclasses,
    uuid and datetime) would cost more than it could save (``ekl call``, issue 16)."""
    text = _encode_text(obj)
    try:
        return text.encode("utf-8")
    except UnicodeEncodeError:
        return _ASCII_ENCODER.encode(obj).encode("ascii")


# --- strict JSON, as Go's encoding/json reads it ------------------------------------------

#: Deepest nesting of arrays and objects accepted from the wire (and from ``ekl call``).
#: Python's parser and encoder recurse per level and stop near 1000 levels with a
#: RecursionError; this limit keeps every value well clear of that, so a reply that echoes
#: an argument can always be encoded. eKuiper's own values (records, function arguments,
#: syntax trees of expressions) are far shallower.
MAX_JSON_DEPTH = 512
#: Integers with more digits than this are refused: Go reads a number it does not decode
#: into a typed int as a float64, and none of them fits there (float64 ends near 1.8e308).
#: It also keeps Python's int parsing (quadratic in the digits before 3.11) cheap.
MAX_INT_DIGITS = 309


def _reject_constant(name: str) -> Any:
    raise ValueError(f"{name} is not allowed: numbers must be finite (Go cannot read {name})")


def _finite_float(text: str) -> float:
    f = float(text)
    if math.isinf(f):
        raise ValueError(f"number {text[:40]} is out of range: numbers must be finite")
    return f


def _bounded_int(text: str) -> int:
    if len(text) > MAX_INT_DIGITS and len(text.lstrip("-")) > MAX_INT_DIGITS:
        raise ValueError(f"integer of {len(text.lstrip('-'))} digits is out of range: numbers must be "
                         "finite as a 64-bit float")
    return int(text)


_DECODER = json.JSONDecoder(parse_constant=_reject_constant, parse_float=_finite_float,
                            parse_int=_bounded_int)
_SCAN = _DECODER.scan_once
#: For texts of at most MAX_INT_DIGITS characters, which cannot hold an integer over the
#: limit: the same rules with Python's own integer parsing (no call out per integer).
_SCAN_SHORT = json.JSONDecoder(parse_constant=_reject_constant,
                               parse_float=_finite_float).scan_once


def _too_deep(obj: Any, limit: int) -> bool:
    """Whether ``obj`` nests arrays/objects more than ``limit`` levels (iteratively)."""
    stack = [(obj, 1)]
    while stack:
        o, depth = stack.pop()
        if depth > limit:
            return True
        values = o.values() if isinstance(o, dict) else o
        for v in values:
            if isinstance(v, (dict, list)):
                stack.append((v, depth + 1))
    return False


def loads_strict(data: Union[bytes, bytearray, str]) -> Any:
    """Parse one JSON value as Go's encoding/json would accept it, or raise ProtocolError.

    Refused, each with a one-line reason: text that is not UTF-8 or not JSON, ``NaN`` and
    ``Infinity``, numbers that overflow a 64-bit float, and nesting deeper than
    :data:`MAX_JSON_DEPTH`. Whatever the input, no other exception type comes out (the
    plugin's channel loops and ekl's relay rely on that)."""
    return _loads_depth(data, MAX_JSON_DEPTH)


def _loads_depth(data: Union[bytes, bytearray, str], limit: int) -> Any:
    """loads_strict with nesting limited to ``limit`` levels."""
    try:
        text = data.decode("utf-8") if type(data) is bytes else (
            data if isinstance(data, str) else bytes(data).decode("utf-8"))
    except UnicodeDecodeError as e:
        raise ProtocolError(f"not UTF-8 ({e.reason} at byte {e.start})") from None
    except Exception as e:  # not bytes-like at all
        raise ProtocolError(f"not JSON text ({type(e).__name__})") from None
    # Fast path for what peers send: an object or array with nothing around it, parsed by
    # the same scanner as ``_DECODER.decode`` without its two whitespace regex passes.
    # Anything else, and every failure, takes the full path below for its message.
    first = text[:1]
    if first == "{" or first == "[":
        n = len(text)
        try:
            value, end = (_SCAN_SHORT if n <= MAX_INT_DIGITS else _SCAN)(text, 0)
        except Exception:  # StopIteration, ValueError, RecursionError, ...: see below
            end = -1
        if end == n:
            if (n > limit and text.count("[") + text.count("{") > limit
                    and _too_deep(value, limit)):
                raise ProtocolError(f"not JSON the protocol accepts: nested deeper than "
                                    f"{limit} levels")
            return value
    try:
        value = _DECODER.decode(text)
    except RecursionError:
        raise ProtocolError(f"not JSON the protocol accepts: nested deeper than "
                            f"{limit} levels") from None
    except ValueError as e:
        reason = " ".join(str(e).split())
        if "numbers must be finite" in reason:
            raise ProtocolError(f"not JSON the protocol accepts: {reason}") from None
        raise ProtocolError(f"not JSON ({reason})") from None
    except Exception as e:  # MemoryError and anything else the parser may raise
        raise ProtocolError(f"not JSON ({type(e).__name__})") from None
    # Cheap first: fewer brackets than the limit cannot nest deeper than it.
    if (isinstance(value, (dict, list))
            and text.count("[") + text.count("{") > limit
            and _too_deep(value, limit)):
        raise ProtocolError(f"not JSON the protocol accepts: nested deeper than "
                            f"{limit} levels")
    return value


def is_stale_handshake(result: bytes) -> bool:
    """The host's rule: any result whose first byte is ``h`` is a re-sent handshake."""
    return result[:1] == b"h"


#: instanceId, funcId: Go ints (64-bit); anything outside is refused rather than wrapped.
_INT64 = (-(1 << 63), (1 << 63) - 1)


def _int_field(d: Mapping[str, Any], key: str, where: str, default: Optional[int] = 0) -> int:
    """An integer field as Go decodes it into an int: no floats, no strings, no bools."""
    if key not in d and default is not None:
        return default
    v = d.get(key)
    if isinstance(v, bool) or not isinstance(v, int) or not _INT64[0] <= v <= _INT64[1]:
        raise ProtocolError(f"{where}.{key} must be an integer, got {short_repr(v)}")
    return v


def _str_field(d: Mapping[str, Any], key: str, where: str) -> str:
    v = d.get(key, "")
    if v is None:
        return ""
    if not isinstance(v, str):
        raise ProtocolError(f"{where}.{key} must be a string, got {short_repr(v)}")
    return v


def short_repr(v: Any, n: int = 60) -> str:
    """A bounded one-line rendering of a decoded value for error texts."""
    if isinstance(v, (dict, list)):
        return "an object" if isinstance(v, dict) else "an array"
    text = repr(v)
    return text if len(text) <= n else text[:n] + "..."


@record(frozen=True)
class Meta:
    rule_id: str = ""
    op_id: str = ""
    instance_id: int = 0

    def to_dict(self) -> Dict[str, Any]:
        return {"ruleId": self.rule_id, "opId": self.op_id, "instanceId": self.instance_id}

    @classmethod
    def from_dict(cls, d: Any) -> Meta:
        """Go's Meta: ``ruleId`` and ``opId`` strings, ``instanceId`` an integer."""
        if not isinstance(d, Mapping):
            raise ProtocolError(f"meta must be an object with ruleId, opId and instanceId, "
                                f"got {short_repr(d)}")
        return cls(_str_field(d, "ruleId", "meta"), _str_field(d, "opId", "meta"),
                   _int_field(d, "instanceId", "meta"))

    @property
    def key(self) -> str:
        return f"{self.rule_id}_{self.op_id}_{self.instance_id}"


@record(frozen=True)
class Control:
    """What a start/stop command carries (Go ``Control``)."""

    symbol_name: str
    plugin_type: str
    meta: Meta = field(default_factory=Meta)
    data_source: str = ""
    config: Optional[Dict[str, Any]] = None

    def to_dict(self) -> Dict[str, Any]:
        d: Dict[str, Any] = {"symbolName": self.symbol_name, "meta": self.meta.to_dict(),
                             "pluginType": self.plugin_type}
        if self.data_source:
            d["dataSource"] = self.data_source
        if self.config:
            d["config"] = self.config
        return d

    @classmethod
    def from_dict(cls, d: Any) -> Control:
        """Go's Control. A source or sink needs ``meta`` with a ruleId and an opId, which
        name its sockets (else it would use ``/tmp/__0.ipc``). eKuiper starts a function
        with no ``meta`` at all (Go's ``*Meta`` with ``omitempty``, left nil): allowed."""
        if not isinstance(d, Mapping):
            raise ProtocolError(f"command arg must hold a JSON object, got {short_repr(d)}")
        name = d.get("symbolName")
        if not isinstance(name, str) or not name:
            raise ProtocolError("command arg has no symbolName")
        ptype = d.get("pluginType")
        if not isinstance(ptype, str) or ptype not in PLUGIN_TYPES:
            raise ProtocolError(f"symbol {name!r}: pluginType {short_repr(ptype)} is not one of "
                                f"{', '.join(PLUGIN_TYPES)}")
        if d.get("meta") is None:
            if ptype != TYPE_FUNC:
                raise ProtocolError(f"{ptype} {name!r}: meta is missing; it must be an object "
                                    "with ruleId, opId and instanceId")
            meta = Meta()
        else:
            meta = Meta.from_dict(d["meta"])
        if ptype != TYPE_FUNC and not (meta.rule_id and meta.op_id):
            raise ProtocolError(f"{ptype} {name!r}: meta needs a non-empty ruleId and opId, "
                                f"got ruleId {meta.rule_id!r}, opId {meta.op_id!r}")
        # The Go runtime sends dataSource; the official Python SDK read datasource.
        ds = d.get("dataSource", d.get("datasource", ""))
        if ds is None:
            ds = ""
        if not isinstance(ds, str):
            raise ProtocolError(f"symbol {name!r}: dataSource must be a string, got {short_repr(ds)}")
        config = d.get("config")
        if config is not None and not isinstance(config, Mapping):
            raise ProtocolError(f"symbol {name!r}: config must be an object, got {short_repr(config)}")
        return cls(name, ptype, meta, ds, dict(config) if config else None)

    @property
    def key(self) -> str:
        """How the plugin finds a running symbol: ``{ruleId}_{opId}_{instanceId}_{symbol}``."""
        return f"{self.meta.key}_{self.symbol_name}"

    @property
    def describe(self) -> str:
        kind = {"func": "function"}.get(self.plugin_type, self.plugin_type)
        if self.plugin_type == TYPE_FUNC:
            return f"{kind} {self.symbol_name}"
        return f"{kind} {self.symbol_name} (rule {self.meta.rule_id}, op {self.meta.op_id}, " \
               f"instance {self.meta.instance_id})"


def encode_command(cmd: str, control: Optional[Control] = None) -> bytes:
    """``{"cmd": ..., "arg": "<Control JSON as a string>"}``; note ``arg`` is a string."""
    arg = std_dumps(control.to_dict()).decode("utf-8") if control is not None else "{}"
    return std_dumps({"cmd": cmd, "arg": arg})


#: written by the stdlib encoder (the same bytes): no orjson import for a constant
PING_COMMAND = _encode_text({"cmd": CMD_PING, "arg": "{}"}).encode("utf-8")


def decode_command(data: bytes) -> Tuple[str, Optional[Control]]:
    """Parse a command. ``ping`` carries no control; start/stop must, as a JSON *string*.

    Raises ProtocolError, and nothing else, for any input."""
    try:
        c = loads_strict(data)
    except ProtocolError as e:
        raise ProtocolError(f"malformed command, {e}: {_preview(data)}") from None
    if not isinstance(c, Mapping) or not isinstance(c.get("cmd"), str):
        raise ProtocolError(f"malformed command, no cmd: {_preview(data)}")
    cmd = c["cmd"]
    if cmd == CMD_PING:
        return cmd, None
    if cmd not in (CMD_START, CMD_STOP):
        raise ProtocolError(f"unknown command {short_repr(cmd)}")
    arg = c.get("arg")
    if not isinstance(arg, str):
        raise ProtocolError(f"malformed {cmd} command: arg must be a string holding the "
                            f"control JSON, got {short_repr(arg)}")
    try:
        ctrl = loads_strict(arg)
    except ProtocolError as e:
        raise ProtocolError(f"malformed {cmd} command: arg is {e}: {_preview(arg)}") from None
    return cmd, Control.from_dict(ctrl)


def _preview(data: Union[bytes, bytearray, str], n: int = 80) -> str:
    """The start of a message for an error text: bounded, one line, never raising."""
    try:
        head = data[:n]
        text = head if isinstance(head, str) else bytes(head).decode("utf-8", "replace")
        return repr(text + ("..." if len(data) > n else ""))
    except Exception:
        return f"<{type(data).__name__}>"


# --- function channel -------------------------------------------------------------------

FUNC_VALIDATE = "Validate"
FUNC_EXEC = "Exec"
FUNC_IS_AGGREGATE = "IsAggregate"


@record(frozen=True)
class FuncMeta:
    rule_id: str = ""
    op_id: str = ""
    instance_id: int = 0
    func_id: int = 0

    def encode(self) -> str:
        """The JSON *string* appended as the last Exec argument."""
        return json.dumps({"ruleId": self.rule_id, "opId": self.op_id,
                           "instanceId": self.instance_id, "funcId": self.func_id},
                          separators=(",", ":"))

    @classmethod
    def decode(cls, raw: Any) -> FuncMeta:
        """The last Exec argument (a JSON string; an object is accepted too). ProtocolError
        for anything else."""
        if isinstance(raw, str):
            try:
                d = loads_strict(raw)
            except ProtocolError as e:
                raise ProtocolError(f"Exec function context is {e}: {_preview(raw)}") from None
        else:
            d = raw
        if not isinstance(d, Mapping) or not {"ruleId", "opId", "instanceId", "funcId"} <= set(d):
            got = _preview(raw) if isinstance(raw, str) else short_repr(raw)
            raise ProtocolError("Exec needs a last argument with ruleId, opId, instanceId "
                                f"and funcId, got {got}")
        where = "Exec function context"
        return cls(_str_field(d, "ruleId", where), _str_field(d, "opId", where),
                   _int_field(d, "instanceId", where, None), _int_field(d, "funcId", where, None))

    @property
    def key(self) -> str:
        return f"{self.rule_id}_{self.op_id}_{self.instance_id}_{self.func_id}"


def encode_func_request(func: str, arg: Any) -> bytes:
    return std_dumps({"func": func, "arg": arg})


def decode_func_request(data: bytes) -> Tuple[str, Any]:
    """``(func, arg)``; ProtocolError, and nothing else, for any malformed input."""
    try:
        c = loads_strict(data)
    except ProtocolError as e:
        raise ProtocolError(f"malformed function request, {e}: {_preview(data)}") from None
    # (``type(c) is dict`` first: what the parser makes, without the ABC check's cost)
    if not (type(c) is dict or isinstance(c, Mapping)) or not isinstance(c.get("func"), str):
        raise ProtocolError(f"malformed function request, no func: {_preview(data)}")
    return c["func"], c.get("arg")


_EXEC_PREFIX = b'{"func":"Exec","arg":['
_EXEC_START = len(_EXEC_PREFIX)


def split_exec_request(data: bytes) -> Optional[Tuple[List[Any], bytes]]:
    """The hot path's view of an Exec request exactly as Go writes it,
    ``{"func":"Exec","arg":[ARGS...,"CONTEXT"]}``: ``(args, context)`` where ``args`` is
    the list before the function context, parsed by :func:`loads_strict`'s rules, and
    ``context`` the context's JSON string literal, quotes included, NOT yet parsed (the
    caller looks it up among the contexts it has already parsed, as eKuiper repeats it on
    every call from one call site). None for anything else, to be read by
    :func:`decode_func_request`, which also gives every error its text.

    Why it is safe: inside a JSON string ``,"`` occurs only as a last character ``,``
    before the closing quote (any other quote is escaped), so the last ``,"`` of a request
    that ends with ``"]}`` starts its last argument, or else it cuts the arguments inside
    an unterminated string, which does not parse (None: the full path); and
    the args are parsed one level shallower than in the request, so the depth limit is
    taken one lower to refuse exactly what the full parse refuses."""
    if not (type(data) is bytes and data.startswith(_EXEC_PREFIX) and data.endswith(b'"]}')):
        return None
    i = data.rfind(b',"')
    if i <= _EXEC_START:
        return None  # the context is the only argument, or no argument precedes the comma
    args = exec_args(data, i)
    return None if args is None else (args, data[i + 1:-2])


def exec_args(data: bytes, i: int) -> Optional[List[Any]]:
    """The arguments of an Exec request that starts with ``{"func":"Exec","arg":[``, from
    there to the comma at ``i`` (> the prefix's length) that precedes the function
    context, parsed as :func:`split_exec_request` parses them; None if they do not parse.
    The hot path calls it directly once it knows where the context starts
    (:func:`exec_tail`)."""
    if i <= MAX_INT_DIGITS:
        # Usual arguments, inlined from _loads_depth: text of at most MAX_INT_DIGITS
        # characters (no integer over the limit, no nesting near it) that starts with
        # "[" and ends with "]", so the scanner alone decides (nothing around the value).
        try:
            text = data[_EXEC_START - 1:i].decode("utf-8") + "]"
            args, end = _SCAN_SHORT(text, 0)
        except Exception:  # UnicodeDecodeError, StopIteration, ValueError, ...
            return None
        return args if end == len(text) else None
    try:
        return _loads_depth(data[_EXEC_START - 1:i] + b"]", MAX_JSON_DEPTH - 1)
    except ProtocolError:
        return None


def exec_tail(context: bytes) -> Optional[bytes]:
    """``,CONTEXT]}``: how every Exec request from the call site whose context literal (as
    :func:`split_exec_request` returned it) is ``context`` ends, so that the hot path can
    recognise the next one with ``endswith`` (no search, no copy, no hashing) and hand
    the rest to :func:`exec_args`. None when that would split a request elsewhere than
    split_exec_request does: a literal holding ``,"`` (a context ending in a comma),
    where the last ``,"`` lies inside the literal."""
    if b',"' in context:
        return None
    return b"," + context + b"]}"


def encode_func_reply(state: bool, result: Any) -> bytes:
    """``{"state":...,"result":...}``, written around the encoded result (no dict built)."""
    if _orjson_dumps is not None:
        fast = _fast_dumps(result)
        if fast is not None:
            return (b'{"state":true,"result":' if state else b'{"state":false,"result":') \
                + fast + b"}"
    body = "".join(_C_ENCODE(result, 0)) if _C_ENCODE is not None else _encode_text(result)
    text = ('{"state":true,"result":' if state else '{"state":false,"result":') + body + "}"
    try:
        return text.encode("utf-8")
    except UnicodeEncodeError:
        return _ASCII_ENCODER.encode({"state": bool(state), "result": result}).encode("ascii")


def decode_func_reply(data: bytes) -> Tuple[bool, Any]:
    """``(state, result)``; ProtocolError, and nothing else, for any malformed input."""
    try:
        r = loads_strict(data)
    except ProtocolError as e:
        raise ProtocolError(f"function reply is {e}: {_preview(data)}") from None
    if not isinstance(r, Mapping) or not isinstance(r.get("state"), bool):
        raise ProtocolError(f"function reply has no boolean state: {_preview(data)}")
    return r["state"], r.get("result")


# --- source data ------------------------------------------------------------------------


def encode_source_message(message: Mapping[str, Any], meta: Optional[Mapping[str, Any]]) -> bytes:
    if _orjson_dumps is not None:
        if meta is None:  # ``null`` written here: _fast_dumps refuses output holding one
            m = _fast_dumps(message)
            if m is not None:
                return b'{"message":' + m + b',"meta":null}'
        else:
            out = _fast_dumps({"message": message, "meta": meta})
            if out is not None:
                return out
    obj = {"message": message, "meta": meta}
    if _C_ENCODE is None:  # pragma: no cover
        return dumps(obj)
    text = "".join(_C_ENCODE(obj, 0))  # dumps, inlined: the per-message path
    try:
        return text.encode("utf-8")
    except UnicodeEncodeError:
        return _ASCII_ENCODER.encode(obj).encode("ascii")


def encode_source_error(text: str) -> bytes:
    """An error the source reports instead of a tuple.

    The official SDK sends ``{"error": text}``; eKuiper 2.x decodes only ``message`` and
    ``meta`` and so ingests an *empty tuple*. Putting the text in ``message`` as a string
    makes the Go side fail to decode it, which routes it to the rule's error path
    (``ingestError``, visible in rule status) with the text included, and ``error`` keeps
    it readable for hosts that look for that key (ours does).
    """
    return dumps({"error": text, "message": text})


@record(frozen=True)
class SourceMessage:
    message: Optional[Dict[str, Any]] = None
    meta: Optional[Dict[str, Any]] = None
    error: Optional[str] = None


def _error_text(v: Any, n: int = 1000) -> str:
    """An error value from a peer as bounded text."""
    text = v if isinstance(v, str) else short_repr(v, n)
    return text if len(text) <= n else text[:n] + "..."


def decode_source_message(data: bytes) -> SourceMessage:
    """Decode what a source pushed; anything eKuiper could not ingest becomes an error.

    Never raises: every malformed input comes back as a SourceMessage with ``error``."""
    try:
        d = loads_strict(data)
    except ProtocolError as e:
        return SourceMessage(error=f"cannot decode {_preview(data)} as JSON: {e}")
    if not isinstance(d, Mapping):
        return SourceMessage(error=f"source data must be a JSON object, got {_preview(data)}")
    if "error" in d:
        return SourceMessage(error=_error_text(d["error"]))
    msg, meta = d.get("message"), d.get("meta")
    if not isinstance(msg, Mapping):
        return SourceMessage(error=f"source data has no message object: {_preview(data)}")
    if meta is not None and not isinstance(meta, Mapping):
        return SourceMessage(error=f"source meta must be an object or null: {_preview(data)}")
    return SourceMessage(dict(msg), dict(meta) if meta is not None else None)


# --- sink data and acks -----------------------------------------------------------------

ACK_OK = b"{}"


def encode_ack_error(text: str) -> bytes:
    return dumps({"error": text})


def decode_ack(data: bytes) -> Optional[str]:
    """None for success, the error text otherwise (malformed acks are errors too)."""
    try:
        d = loads_strict(data)
    except ProtocolError as e:
        return f"malformed ack ({e}): {_preview(data)}"
    if not isinstance(d, Mapping):
        return f"malformed ack {_preview(data)}"
    err = d.get("error")
    return _error_text(err) if err else None


def require_ack(config: Optional[Mapping[str, Any]]) -> bool:
    """Whether the rule asked for acks; eKuiper decodes ``requireAck`` loosely."""
    if not config:
        return False
    v = config.get("requireAck")
    if isinstance(v, str):
        return v.strip().lower() in ("true", "1", "yes")
    return bool(v)



# --- the plugin process -----------------------------------------------------------------


def encode_portable_config(send_timeout_ms: int = DEFAULT_SEND_TIMEOUT_MS) -> str:
    """argv[1] of a plugin process (Go ``PortableConfig``)."""
    return json.dumps({"sendTimeout": int(send_timeout_ms)}, separators=(",", ":"))


def decode_portable_config(argv: List[str]) -> Dict[str, Any]:
    """Read argv[1]; a missing or malformed one falls back to the defaults."""
    conf: Dict[str, Any] = {"sendTimeout": DEFAULT_SEND_TIMEOUT_MS}
    if len(argv) > 1:
        try:
            d = loads_strict(argv[1])
        except ProtocolError as e:
            raise ProtocolError(f"argv[1] is not the portable config JSON ({e}): "
                                f"{_preview(argv[1])}") from None
        if isinstance(d, Mapping):
            st = d.get("sendTimeout")
            if isinstance(st, (int, float)) and not isinstance(st, bool) and st > 0:
                conf["sendTimeout"] = int(min(st, MAX_TIMEOUT_MS))
    return conf
