"""The control socket every launcher serves, so an operator can act on one plugin.

``ekl supervise`` and each ``ekl-python`` listen on a Unix socket in a private 0700 folder
of their own; its path is in their status file (``control``), which is how ``ekl restart``
and friends find it. One request per connection, one JSON line each way:

    -> {"op": "restart", "names": ["pysam"], "all": false, "timeout_s": 30}
    <- {"ok": true, "results": [{"name": "pysam", "ok": true, "state": "RUNNING", "error": null}]}

Everything the peer sends is bounded (size, time) and nothing it sends can end the server
loop: a malformed request gets an error reply, and the loop goes on.
"""

from __future__ import annotations

import json
import logging
import os
import socket
import threading
from typing import Any, Callable, Dict, List, Optional, Tuple

from ..errors import EklError
from ..process.lifeline import shared

log = logging.getLogger("ekl")

OPS = ("restart", "stop", "start", "reset", "states")
#: A request is one short JSON line; anything longer is not one.
MAX_REQUEST_BYTES = 64 * 1024
#: How long a peer may take to send its request.
REQUEST_TIMEOUT_S = 5.0
#: How long an operation may wait for its resulting state, unless the request says.
DEFAULT_OP_TIMEOUT_S = 60.0
SOCKET_NAME = "control.sock"

#: (op, name, timeout_s) -> (ok, state, error): what the launcher does for one plugin.
class LauncherGone(EklError):
    """The status file names a control socket nobody serves: its launcher died."""

    exit_code = 4


Handler = Callable[[str, str, float], Tuple[bool, str, Optional[str]]]


class ControlServer:
    """Accepts requests on its socket and runs them through ``handler`` for each plugin."""

    def __init__(self, names: Callable[[], List[str]], handler: Handler) -> None:
        self.names = names
        self.handler = handler
        self.folder = shared().private_dir("ekl-ctl-")  # a SIGKILLed launcher leaves none
        self.path = os.path.join(self.folder, SOCKET_NAME)
        self._sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        self._sock.bind(self.path)
        self._sock.listen(8)
        self._closed = threading.Event()
        self._thread = threading.Thread(target=self._serve, daemon=True, name="control")
        self._thread.start()

    def _serve(self) -> None:
        while not self._closed.is_set():
            try:
                conn, _ = self._sock.accept()
            except OSError:
                if self._closed.is_set():
                    return
                continue
            threading.Thread(target=self._one, args=(conn,), daemon=True,
                             name="control-conn").start()

    def _one(self, conn: socket.socket) -> None:
        with conn:
            try:
                reply = self._answer(self._read(conn))
            except Exception as e:  # noqa: BLE001 - one peer's request never ends the server
                log.exception("control request failed")
                reply = {"ok": False, "error": f"{type(e).__name__}: {e}"}
            try:
                conn.sendall(json.dumps(reply).encode() + b"\n")
            except OSError:
                pass

    @staticmethod
    def _read(conn: socket.socket) -> Any:
        conn.settimeout(REQUEST_TIMEOUT_S)
        buf = b""
        while b"\n" not in buf:
            chunk = conn.recv(4096)
            if not chunk:
                break
            buf += chunk
            if len(buf) > MAX_REQUEST_BYTES:
                raise ValueError(f"request longer than {MAX_REQUEST_BYTES} bytes")
        return json.loads(buf.split(b"\n", 1)[0] or b"null")

    def _answer(self, req: Any) -> Dict[str, Any]:
        if not isinstance(req, dict) or req.get("op") not in OPS:
            return {"ok": False, "error": f"a request is {{\"op\": one of {', '.join(OPS)}, "
                                          f"\"names\": [...]}}"}
        known = self.names()
        names = known if req.get("all") else req.get("names")
        if not isinstance(names, list) or not all(isinstance(n, str) for n in names):
            return {"ok": False, "error": "names must be a list of plugin names"}
        unknown = [n for n in names if n not in known]
        if unknown:
            return {"ok": False, "unknown": unknown, "known": known,
                    "error": f"no plugin {', '.join(unknown)} here; this launcher runs "
                             f"{', '.join(known) or 'none'}"}
        timeout = req.get("timeout_s", DEFAULT_OP_TIMEOUT_S)
        if isinstance(timeout, bool) or not isinstance(timeout, (int, float)) or \
                not 0 < timeout <= 3600:
            timeout = DEFAULT_OP_TIMEOUT_S
        results = []
        lock = threading.Lock()

        def run(name: str) -> None:
            ok, state, error = self.handler(req["op"], name, float(timeout))
            with lock:
                results.append({"name": name, "ok": ok, "state": state, "error": error})

        threads = [threading.Thread(target=run, args=(n,), daemon=True) for n in names]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        results.sort(key=lambda r: names.index(r["name"]))
        return {"ok": all(r["ok"] for r in results), "results": results}

    def close(self) -> None:
        self._closed.set()
        try:
            self._sock.close()
        except OSError:
            pass
        for p in (self.path, self.folder):
            try:
                (os.rmdir if p == self.folder else os.unlink)(p)
            except OSError:
                pass


def request(path: str, op: str, names: List[str], all_: bool = False,
            timeout_s: float = DEFAULT_OP_TIMEOUT_S) -> Dict[str, Any]:
    """Send one request to the launcher serving ``path``; EklError when it cannot answer."""
    s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    s.settimeout(timeout_s + REQUEST_TIMEOUT_S)
    try:
        try:
            s.connect(path)
        except (FileNotFoundError, ConnectionRefusedError):
            raise LauncherGone(f"control socket {path}: nobody listens (the launcher is gone; "
                               f"its status file is stale)") from None
        except OSError as e:
            raise EklError(f"control socket {path}: cannot connect: {e.strerror}") from None
        s.sendall(json.dumps({"op": op, "names": names, "all": all_,
                              "timeout_s": timeout_s}).encode() + b"\n")
        buf = b""
        while b"\n" not in buf:
            try:
                chunk = s.recv(65536)
            except socket.timeout:
                raise EklError(f"control socket {path}: no answer within "
                               f"{timeout_s + REQUEST_TIMEOUT_S:.0f} s") from None
            if not chunk:
                break
            buf += chunk
    finally:
        s.close()
    try:
        reply = json.loads(buf.split(b"\n", 1)[0])
    except ValueError:
        raise EklError(f"control socket {path}: the launcher closed it without an answer") \
            from None
    if not isinstance(reply, dict):
        raise EklError(f"control socket {path}: not an ekl launcher's answer")
    return reply
