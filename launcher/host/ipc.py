"""Host-side sockets (REP, PULL listeners; PUSH dialer) and the private socket folder.

The host speaks through the SDK's transport layer (``ekuiper.transport``), the same code
the plugin side uses, chosen by the same ``EKUIPER_TRANSPORT`` variable: the pure-Python
native transport by default, so the host needs no compiled library and ``ekl call`` or
``ekl-python`` do not load pynng (60-100 ms) before the plugin can start; ``pynng`` keeps
nng itself on the host side too.
"""

from __future__ import annotations

import errno
import os
import time

from ekuiper import protocol
from ekuiper.transport import (
    PullSocket,
    RepSocket,
    TransportError,
    TransportTimeout,
    get_transport,
)

from ..errors import EklError, HostTimeout

TYPE_CHECKING = False  # typing is not loaded at run time on the start path (docs/architecture.md)
if TYPE_CHECKING:
    from typing import Any, Callable, Optional, Union

    from ..process.lifeline import Lifeline

#: How long the host keeps re-dialing a sink's data socket after the plugin said it listens.
SINK_DIAL_RETRIES = 50
SINK_DIAL_INTERVAL_S = 0.1


def _in_use(e: BaseException) -> bool:
    cause: Optional[BaseException] = e
    while cause is not None:
        if isinstance(cause, OSError) and cause.errno == errno.EADDRINUSE:
            return True
        cause = cause.__cause__ or cause.__context__
    return "in use" in str(e).lower()


def _listen(url: str, method: str) -> Any:
    """``Transport.<method>`` with the Go runtime's retries; one line naming the socket on
    failure (and, when the address is in use, who may hold it)."""
    try:
        return getattr(get_transport(), method)(url, retries=protocol.LISTEN_RETRIES,
                                                interval_s=protocol.LISTEN_INTERVAL_S)
    except TransportError as e:
        path = protocol.url_path(url)
        hint = f"; another ekl or eKuiper is already serving {path}" if _in_use(e) else ""
        raise EklError(f"cannot listen on {url}: {e}{hint}") from None


def listen_rep(url: str) -> RepSocket:
    return _listen(url, "listen_rep")


def listen_pull(url: str) -> PullSocket:
    return _listen(url, "listen_pull")


def recv_until(sock: Union[RepSocket, PullSocket], deadline: float,
               alive: Optional[Callable[[], bool]], what: str, slice_ms: int = 200) -> bytes:
    """Receive before ``deadline``, checking ``alive()`` between short slices.

    A dead plugin is reported at once instead of after the whole timeout.
    """
    while True:
        left = deadline - time.monotonic()
        if left <= 0:
            raise HostTimeout(f"{what}: no answer in time")
        sock.recv_timeout_ms = max(1, int(min(left, slice_ms / 1000) * 1000))
        try:
            return sock.recv()
        except TransportTimeout:
            if alive is not None and not alive():
                raise PluginDied(what) from None


class PluginDied(Exception):
    """The plugin process died while the host waited on it (the caller words the error)."""


def private_ipc_dir(lifeline: Lifeline) -> str:
    """A fresh 0700 folder under /tmp (short, so socket paths stay under 107 bytes), which
    ``lifeline``'s watchdog knows of before it exists (``Lifeline.private_dir``)."""
    return lifeline.private_dir("ekl-")


def remove_ipc_dir(path: str) -> None:
    """Remove a private socket folder, leaving /tmp (or any shared folder) alone."""
    if os.path.basename(path).startswith("ekl-") and os.path.isdir(path):
        import shutil  # here: shutil loads bz2, lzma and zlib, which no start needs

        shutil.rmtree(path, ignore_errors=True)
