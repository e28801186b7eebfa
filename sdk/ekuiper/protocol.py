"""The eKuiper portable-plugin wire protocol: the one place that knows its shapes.

Both halves import this module: the SDK (plugin side) and ``ekl.launcher`` (the side that
eKuiper's Go runtime plays in production). Anything that builds a socket URL or encodes a
message goes through here, so the two sides cannot drift apart. The authority behind every
constant is lf-edge/ekuiper ``internal/plugin/portable/runtime`` (shared.go, connection.go).
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass, field
from typing import Any, Dict, List, Mapping, Optional, Tuple

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


def dumps(obj: Any) -> bytes:
    """Compact JSON as Go writes it; NaN/Infinity raise (Go cannot read them)."""
    return _ENCODER.encode(obj).encode("utf-8")


def is_stale_handshake(result: bytes) -> bool:
    """The host's rule: any result whose first byte is ``h`` is a re-sent handshake."""
    return result[:1] == b"h"


@dataclass(frozen=True)
class Meta:
    rule_id: str = ""
    op_id: str = ""
    instance_id: int = 0

    def to_dict(self) -> Dict[str, Any]:
        return {"ruleId": self.rule_id, "opId": self.op_id, "instanceId": self.instance_id}

    @classmethod
    def from_dict(cls, d: Any) -> Meta:
        if d is None:
            return cls()
        if not isinstance(d, Mapping):
            raise ProtocolError(f"meta must be an object, got {type(d).__name__}")
        try:
            return cls(str(d.get("ruleId", "") or ""), str(d.get("opId", "") or ""),
                       int(d.get("instanceId", 0) or 0))
        except (TypeError, ValueError) as e:
            raise ProtocolError(f"meta.instanceId must be an integer: {e}") from None

    @property
    def key(self) -> str:
        return f"{self.rule_id}_{self.op_id}_{self.instance_id}"


@dataclass(frozen=True)
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
        if not isinstance(d, Mapping):
            raise ProtocolError(f"command arg must be a JSON object, got {type(d).__name__}")
        name = d.get("symbolName")
        if not isinstance(name, str) or not name:
            raise ProtocolError("command arg has no symbolName")
        ptype = d.get("pluginType")
        if ptype not in PLUGIN_TYPES:
            raise ProtocolError(
                f"symbol {name}: pluginType {ptype!r} is not one of {', '.join(PLUGIN_TYPES)}")
        # The Go runtime sends dataSource; the official Python SDK read datasource.
        ds = d.get("dataSource", d.get("datasource", "")) or ""
        config = d.get("config") or None
        if config is not None and not isinstance(config, Mapping):
            raise ProtocolError(f"symbol {name}: config must be an object")
        return cls(name, ptype, Meta.from_dict(d.get("meta")), str(ds),
                   dict(config) if config else None)

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
    arg = dumps(control.to_dict()).decode("utf-8") if control is not None else "{}"
    return dumps({"cmd": cmd, "arg": arg})


PING_COMMAND = encode_command(CMD_PING)


def decode_command(data: bytes) -> Tuple[str, Optional[Control]]:
    """Parse a command. ``ping`` carries no control; start/stop must."""
    try:
        c = json.loads(data)
    except (ValueError, UnicodeDecodeError):
        raise ProtocolError(f"malformed command, not JSON: {_preview(data)}") from None
    if not isinstance(c, Mapping) or not isinstance(c.get("cmd"), str):
        raise ProtocolError(f"malformed command, no cmd: {_preview(data)}")
    cmd = c["cmd"]
    if cmd == CMD_PING:
        return cmd, None
    if cmd not in (CMD_START, CMD_STOP):
        raise ProtocolError(f"unknown command {cmd!r}")
    arg = c.get("arg")
    if isinstance(arg, str):
        try:
            arg = json.loads(arg)
        except ValueError:
            raise ProtocolError(f"malformed {cmd} command: arg is not JSON: {arg[:80]!r}") from None
    return cmd, Control.from_dict(arg)


def _preview(data: bytes, n: int = 80) -> str:
    text = data[:n].decode("utf-8", "replace")
    return repr(text + ("..." if len(data) > n else ""))


# --- function channel -------------------------------------------------------------------

FUNC_VALIDATE = "Validate"
FUNC_EXEC = "Exec"
FUNC_IS_AGGREGATE = "IsAggregate"


@dataclass(frozen=True)
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
        try:
            d = json.loads(raw) if isinstance(raw, str) else raw
        except ValueError:
            raise ProtocolError(f"Exec function context is not JSON: {str(raw)[:80]!r}") from None
        if not isinstance(d, Mapping) or not {"ruleId", "opId", "instanceId", "funcId"} <= set(d):
            raise ProtocolError("Exec needs a last argument with ruleId, opId, instanceId "
                                f"and funcId, got {str(raw)[:80]!r}")
        try:
            return cls(str(d["ruleId"]), str(d["opId"]), int(d["instanceId"]), int(d["funcId"]))
        except (TypeError, ValueError):
            raise ProtocolError(f"Exec function context has non-integer ids: {d!r}") from None

    @property
    def key(self) -> str:
        return f"{self.rule_id}_{self.op_id}_{self.instance_id}_{self.func_id}"


def encode_func_request(func: str, arg: Any) -> bytes:
    return dumps({"func": func, "arg": arg})


def decode_func_request(data: bytes) -> Tuple[str, Any]:
    try:
        c = json.loads(data)
    except (ValueError, UnicodeDecodeError):
        raise ProtocolError(f"malformed function request, not JSON: {_preview(data)}") from None
    if not isinstance(c, Mapping) or not isinstance(c.get("func"), str):
        raise ProtocolError(f"malformed function request, no func: {_preview(data)}")
    return c["func"], c.get("arg")


def encode_func_reply(state: bool, result: Any) -> bytes:
    return dumps({"state": bool(state), "result": result})


def decode_func_reply(data: bytes) -> Tuple[bool, Any]:
    try:
        r = json.loads(data)
    except (ValueError, UnicodeDecodeError):
        raise ProtocolError(f"function reply is not JSON: {_preview(data)}") from None
    if not isinstance(r, Mapping) or not isinstance(r.get("state"), bool):
        raise ProtocolError(f"function reply has no boolean state: {_preview(data)}")
    return r["state"], r.get("result")


# --- source data ------------------------------------------------------------------------


def encode_source_message(message: Mapping[str, Any], meta: Optional[Mapping[str, Any]]) -> bytes:
    return dumps({"message": message, "meta": meta})


def encode_source_error(text: str) -> bytes:
    """An error the source reports instead of a tuple.

    The official SDK sends ``{"error": text}``; eKuiper 2.x decodes only ``message`` and
    ``meta`` and so ingests an *empty tuple*. Putting the text in ``message`` as a string
    makes the Go side fail to decode it, which routes it to the rule's error path
    (``ingestError``, visible in rule status) with the text included, and ``error`` keeps
    it readable for hosts that look for that key (ours does).
    """
    return dumps({"error": text, "message": text})


@dataclass(frozen=True)
class SourceMessage:
    message: Optional[Dict[str, Any]] = None
    meta: Optional[Dict[str, Any]] = None
    error: Optional[str] = None


def decode_source_message(data: bytes) -> SourceMessage:
    """Decode what a source pushed; anything eKuiper could not ingest becomes an error."""
    try:
        d = json.loads(data)
    except (ValueError, UnicodeDecodeError) as e:
        return SourceMessage(error=f"cannot decode {_preview(data)} as JSON: {e}")
    if not isinstance(d, Mapping):
        return SourceMessage(error=f"source data must be a JSON object, got {_preview(data)}")
    if "error" in d:
        return SourceMessage(error=str(d["error"]))
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
        d = json.loads(data)
    except (ValueError, UnicodeDecodeError):
        return f"malformed ack {_preview(data)}"
    if not isinstance(d, Mapping):
        return f"malformed ack {_preview(data)}"
    err = d.get("error")
    return str(err) if err else None


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
            d = json.loads(argv[1])
        except ValueError:
            raise ProtocolError(f"argv[1] is not the portable config JSON: {argv[1][:80]!r}") from None
        if isinstance(d, Mapping):
            st = d.get("sendTimeout")
            if isinstance(st, (int, float)) and st > 0:
                conf["sendTimeout"] = int(st)
    return conf
