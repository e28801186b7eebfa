"""Host-side sockets (REP, PULL listeners; PUSH dialer) and the private socket folder."""

from __future__ import annotations

import os
import shutil
import time
from typing import Callable, Optional, TypeVar

import pynng

from ekuiper import protocol

from ..errors import EklError, HostTimeout
from ..fsafe import private_tmp_dir

T = TypeVar("T", bound=pynng.Socket)
#: eKuiper's sink PUSH dial options: reconnect every 100 ms, back-off up to 5 s.
RECONNECT_MS = 100
RECONNECT_MAX_MS = 5000


def listen(sock: T, url: str, retries: int = protocol.LISTEN_RETRIES,
           interval_s: float = protocol.LISTEN_INTERVAL_S) -> T:
    """Listen with the Go runtime's retries; close the socket and explain on failure."""
    sock.recv_max_size = 0
    for i in range(retries + 1):
        try:
            sock.listen(url)
            return sock
        except pynng.NNGException as e:
            if i == retries:
                sock.close()
                path = protocol.url_path(url)
                hint = (f"; another ekl or eKuiper is already serving {path}"
                        if isinstance(e, pynng.AddressInUse) else "")
                raise EklError(f"cannot listen on {url}: {e}{hint}") from None
        time.sleep(interval_s)
    raise AssertionError("unreachable")


def recv_until(sock: pynng.Socket, deadline: float, alive: Optional[Callable[[], bool]],
               what: str, slice_ms: int = 200) -> bytes:
    """Receive before ``deadline``, checking ``alive()`` between short slices.

    A dead plugin is reported at once instead of after the whole timeout.
    """
    while True:
        left = deadline - time.monotonic()
        if left <= 0:
            raise HostTimeout(f"{what}: no answer in time")
        sock.recv_timeout = max(1, int(min(left, slice_ms / 1000) * 1000))
        try:
            return sock.recv_msg().bytes  # recv() raises on a 0-byte message
        except pynng.Timeout:
            if alive is not None and not alive():
                raise PluginDied(what) from None


class PluginDied(Exception):
    """The plugin process died while the host waited on it (the caller words the error)."""


def private_ipc_dir() -> str:
    """A fresh 0700 folder under /tmp (short, so socket paths stay under 107 bytes)."""
    return private_tmp_dir("ekl-")


def remove_ipc_dir(path: str) -> None:
    """Remove a private socket folder, leaving /tmp (or any shared folder) alone."""
    if os.path.basename(path).startswith("ekl-") and os.path.isdir(path):
        shutil.rmtree(path, ignore_errors=True)
