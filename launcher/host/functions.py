"""The host end of a function symbol's channel (eKuiper's ``PortableFunc``)."""

from __future__ import annotations

from ekuiper import protocol
from ekuiper.protocol import FuncMeta

from ..errors import FunctionError, HostTimeout, PluginExited
from .channels import RepChannel
from .ipc import PluginDied

TYPE_CHECKING = False  # typing is not loaded at run time on the start path (docs/architecture.md)
if TYPE_CHECKING:
    from typing import Any, Callable, List, Optional


class FunctionClient:
    """Calls one function symbol: ``validate``, ``exec`` and ``is_aggregate``.

    The host listens REP on ``func_{symbol}`` before asking the plugin to start the
    symbol; the plugin dials and sends ``handshake``; each call then goes out as a reply.
    """

    def __init__(self, symbol: str, ipc_dir: Optional[str] = None,
                 timeout_s: float = 5.0, alive: Optional[Callable[[], bool]] = None) -> None:
        self.symbol = symbol
        self.timeout_s = timeout_s
        self.alive = alive
        self.channel = RepChannel(protocol.function_url(symbol, ipc_dir))
        self.url = self.channel.url
        self._is_agg: Optional[bool] = None

    def request(self, func: str, arg: Any, timeout_s: Optional[float] = None) -> tuple:
        """One call; returns ``(state, result)`` exactly as the plugin answered."""
        t = timeout_s or self.timeout_s
        label = f"function {self.symbol}: {func}"
        try:
            reply = self.channel.exchange(protocol.encode_func_request(func, arg), t,
                                          self.alive, label)
        except PluginDied:
            raise PluginExited(f"function {self.symbol}: the plugin died during {func}") from None
        except HostTimeout:
            raise HostTimeout(f"{label}: no answer within {t:.1f} s") from None
        try:
            return protocol.decode_func_reply(reply)
        except protocol.ProtocolError as e:
            raise FunctionError(f"{label}: {e}") from None

    def validate(self, args: List[Any]) -> Optional[str]:
        """None when valid, else the plugin's reason."""
        state, result = self.request(protocol.FUNC_VALIDATE, args)
        return None if state else str(result)

    def exec(self, args: List[Any], meta: Optional[FuncMeta] = None) -> Any:
        state, result = self.request(protocol.FUNC_EXEC,
                                     list(args) + [(meta or FuncMeta()).encode()])
        if not state:
            raise FunctionError(f"function {self.symbol}: {result}")
        return result

    def is_aggregate(self) -> bool:
        if self._is_agg is None:  # eKuiper caches the answer too
            state, result = self.request(protocol.FUNC_IS_AGGREGATE, None)
            if not state or not isinstance(result, bool):
                raise FunctionError(f"function {self.symbol}: IsAggregate answered {result!r}")
            self._is_agg = result
        return self._is_agg

    def close(self) -> None:
        self.channel.close()
