"""Transport selection: ``EKUIPER_TRANSPORT=native`` (default, pure Python) or ``pynng``.

native is the default since the whole test suite passes with both; it costs a fraction of
pynng's CPU per message and needs no compiled wheel. pynng is imported only when chosen.
"""

from __future__ import annotations

import os

from .base import (
    DEFAULT_MAX_MSG_SIZE,
    DEFAULT_PUSH_COALESCE_US,
    MAX_MSG_SIZE_ENV,
    PUSH_COALESCE_ENV,
    PullSocket,
    PushSocket,
    RepSocket,
    ReqSocket,
    Transport,
    TransportClosed,
    TransportError,
    TransportStateError,
    TransportTimeout,
    max_msg_size,
)

TYPE_CHECKING = False  # typing is not loaded at run time on the start path (docs/architecture.md)
if TYPE_CHECKING:
    from typing import Callable, Dict, Mapping, Optional

TRANSPORT_ENV = "EKUIPER_TRANSPORT"
DEFAULT_TRANSPORT = "native"


def _pynng() -> Transport:
    try:
        from .pynng_transport import PynngTransport  # imported lazily: pynng is compiled
    except ImportError as e:
        raise TransportError(f"{TRANSPORT_ENV}=pynng needs pynng, which cannot be imported "
                             f"({e}); install it (pip install 'ekl-sdk[pynng]') or unset "
                             f"{TRANSPORT_ENV} for the native transport") from None
    return PynngTransport()


def _native() -> Transport:
    from .native import NativeTransport  # pure Python: no compiled dependency
    return NativeTransport()


#: name -> factory; factories import their implementation only when chosen.
TRANSPORTS: Dict[str, Callable[[], Transport]] = {"pynng": _pynng, "native": _native}


def transport_name(environ: Optional[Mapping[str, str]] = None) -> str:
    """The transport ``environ`` (default: this process's environment) selects.

    Public so that a host deciding what a plugin will need (pynng or not) reads the
    variable exactly as the plugin will.
    """
    env = os.environ if environ is None else environ
    return (env.get(TRANSPORT_ENV) or DEFAULT_TRANSPORT).strip().lower()


def get_transport(name: Optional[str] = None) -> Transport:
    chosen = (name or transport_name()).strip().lower()
    try:
        factory = TRANSPORTS[chosen]
    except KeyError:
        raise TransportError(
            f"{TRANSPORT_ENV}={chosen!r} is not a known transport; use one of "
            f"{', '.join(sorted(TRANSPORTS))}") from None
    return factory()


__all__ = ["Transport", "ReqSocket", "PushSocket", "PullSocket", "RepSocket", "TransportError",
           "TransportTimeout", "TransportClosed", "TransportStateError", "get_transport", "TRANSPORTS",
           "TRANSPORT_ENV", "DEFAULT_TRANSPORT", "transport_name", "MAX_MSG_SIZE_ENV",
           "DEFAULT_MAX_MSG_SIZE", "max_msg_size", "PUSH_COALESCE_ENV", "DEFAULT_PUSH_COALESCE_US"]
