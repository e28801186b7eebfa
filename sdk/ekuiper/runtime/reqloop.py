"""The plugin side of the inverted request/reply used on control and function channels.

The plugin owns the REQ socket although the host gives the orders: it sends ``handshake``,
receives each order as the reply, and sends the result as its next request. When no order
comes within the keep-alive time it sends ``handshake`` again (a REQ socket must send
before it may receive again); the host discards those with its stale-handshake rule.
"""

from __future__ import annotations

import time

from ..lazylog import DEBUG, getLogger, one_line
from ..protocol import HANDSHAKE
from ..transport import ReqSocket, TransportClosed, TransportError, TransportTimeout

TYPE_CHECKING = False  # typing is not loaded at run time on the start path (docs/architecture.md)
if TYPE_CHECKING:
    from typing import Callable, Optional

log = getLogger("ekuiper")


class PeerWatch:
    """Tells when the host behind a REQ socket has been gone for ``grace_s`` in a row.

    A plugin (and ekl-python's relay, which plays one) stops instead of spinning when the
    host disappears; a brief reconnect within the grace does not count.
    """

    def __init__(self, sock: ReqSocket, grace_s: float) -> None:
        self.sock = sock
        self.grace_s = grace_s
        self._since: Optional[float] = None

    def gone(self) -> bool:
        if self.sock.connected:
            self._since = None
            return False
        now = time.monotonic()
        self._since = self._since or now
        return now - self._since >= self.grace_s


def _text_reply(text: str) -> bytes:
    return text.encode("utf-8", "backslashreplace")


def serve_inverted(sock: ReqSocket, handle: Callable[[bytes], bytes], name: str,
                   stopping: Callable[[], bool],
                   error_reply: Callable[[str], bytes] = _text_reply) -> None:
    """Answer orders with ``handle`` until the socket is closed or ``stopping()`` is true.

    Nothing a peer sends can end this loop: should ``handle`` raise anyway (it is meant
    not to), the order is answered with ``error_reply(one line)`` and serving goes on; an
    unexpected failure of the socket itself is logged and retried like a transport error.
    """
    pending: Optional[bytes] = HANDSHAKE
    # The native REQ socket sends and receives in one call on the per-call path; it
    # answers None when that is not the usual case and it sent nothing, and then send and
    # recv below do it. Once a request is out, it raises what recv raises.
    exchange: Optional[Callable[[bytes], Optional[bytes]]] = getattr(sock, "exchange", None)
    while not stopping():
        try:
            msg = exchange(pending) if pending is not None and exchange is not None else None
            if msg is None:
                if pending is not None:
                    try:
                        sock.send(pending)
                    except TransportTimeout:
                        # No peer to take it (host gone or restarting): retry the same
                        # bytes, so a result is never replaced by a handshake (the host
                        # would resend the order).
                        continue
                    except TransportClosed:
                        return
                    except Exception as e:  # TransportError, or a bug: never end the loop
                        if stopping():
                            return
                        log.warning("%s: send failed: %s", name, _describe(e))
                        time.sleep(0.05)  # a transport that fails at once must not spin
                        continue
                    pending = None
                msg = sock.recv()
        except TransportTimeout:
            pending = HANDSHAKE  # keep-alive
            continue
        except TransportClosed:
            return
        except Exception as e:  # a receive failed otherwise: never end the loop
            if stopping():
                return
            log.warning("%s: receive failed: %s", name, _describe(e))
            time.sleep(0.05)
            pending = HANDSHAKE
            continue
        try:
            pending = handle(msg)
        except BaseException as e:  # noqa: B036 -- a peer's bytes must not end the loop
            text = one_line(f"{name}: internal error handling a message: {_describe(e)}")
            log.error("%s", text, exc_info=log.isEnabledFor(DEBUG))
            try:
                pending = error_reply(text)
            except Exception:
                pending = _text_reply(text)


def _describe(e: BaseException) -> str:
    """``Type: text`` for a log line, bounded, even for exceptions whose str() fails."""
    if isinstance(e, TransportError):
        try:
            return one_line(e)[:300]
        except Exception:
            return type(e).__name__
    try:
        return f"{type(e).__name__}: {one_line(e)[:300]}"
    except Exception:
        return type(e).__name__
