"""The control socket: ``ekl restart|stop|start|reset NAME...|--all`` reach a running launcher.

Every launcher (``ekl supervise``, each ``ekl-python``) listens on a Unix stream socket in
its private 0700 folder and names it in its status file (``control_socket``), so the
commands find it the way ``ekl status`` finds the status. One request per connection, one
JSON line each way::

    -> {"op": "restart", "plugins": ["pysam"], "timeout": 30}
    <- {"ok": true, "results": [{"plugin": "pysam", "ok": true, "state": "RUNNING"}]}

The launcher supplies the action (``handler(op, names, timeout)``, which waits for the
resulting state); this module owns the transport and its defences: the 0700 folder and a
peer-uid check (only the launcher's user or root), bounded request size, per-connection
deadlines, a bounded number of connections, and a handler exception that becomes an error
reply instead of ending the server.
"""

from __future__ import annotations

import json
import logging
import os
import socket
import stat
import struct
import threading
import time
from typing import Any, Callable, Dict, List, Mapping, Optional, Sequence, TextIO

from ..errors import EklError, HostTimeout
from .metrics import collector_for

log = logging.getLogger("ekl")

OPS = ("restart", "stop", "start", "reset")
SOCKET_NAME = "control.sock"
STATUS_FIELD = "control_socket"
MAX_REQUEST_BYTES = 64 * 1024
MAX_REPLY_BYTES = 4 * 1024 * 1024
MAX_NAMES = 1000
MAX_CLIENTS = 8
IO_TIMEOUT_S = 5.0
DEFAULT_TIMEOUT_S = 30.0
MAX_TIMEOUT_S = 3600.0

#: (op, plugin names, seconds to wait for the resulting state) -> one result per name:
#: {"plugin": name, "ok": bool, "state": str, "error": str (when not ok)}
Handler = Callable[[str, Sequence[str], float], Sequence[Mapping[str, Any]]]


def _peer_uid(conn: socket.socket) -> Optional[int]:
    try:
        creds = conn.getsockopt(socket.SOL_SOCKET, socket.SO_PEERCRED, struct.calcsize("3i"))
    except (AttributeError, OSError):
        return None  # not Linux: the 0700 folder is the only guard
    return struct.unpack("3i", creds)[1]


def _read_line(conn: socket.socket, limit: int, deadline: Optional[float] = None) -> bytes:
    """One line of at most ``limit`` bytes, all of it within ``deadline`` (a trickle of one
    byte a second must not hold a connection slot for a day)."""
    buf = bytearray()
    while b"\n" not in buf:
        if deadline is not None:
            left = deadline - time.monotonic()
            if left <= 0:
                raise socket.timeout("deadline")
            conn.settimeout(left)
        chunk = conn.recv(65536)
        if not chunk:
            break
        buf += chunk
        if len(buf) > limit:
            raise ValueError(f"longer than {limit} bytes")
    return bytes(buf.split(b"\n", 1)[0])


def _send(conn: socket.socket, obj: Mapping[str, Any]) -> None:
    conn.sendall(json.dumps(obj, default=str).encode() + b"\n")


class ControlServer:
    """Serves control requests in ``folder`` (created 0700, or refused if others can enter)."""

    def __init__(self, folder: str, handler: Handler, names: Callable[[], Sequence[str]],
                 io_timeout: float = IO_TIMEOUT_S) -> None:
        self.folder = folder
        self.handler = handler
        self.names = names
        self.io_timeout = io_timeout
        self.path = os.path.join(folder, SOCKET_NAME)
        try:
            os.makedirs(folder, mode=0o700, exist_ok=True)
            st = os.lstat(folder)
        except OSError as e:
            raise EklError(f"control folder {folder}: cannot create it: {e.strerror or e}; give a "
                           f"folder this user can write") from None
        if not stat.S_ISDIR(st.st_mode) or st.st_uid != os.getuid() or st.st_mode & 0o077:
            raise EklError(f"control folder {folder}: must be a folder of this user with mode 0700 "
                           f"(it is {oct(st.st_mode & 0o777)}); remove it or give another")
        try:
            os.unlink(self.path)  # a socket file left by a SIGKILLed launcher of the same folder
        except FileNotFoundError:
            pass
        except OSError as e:
            raise EklError(f"control socket {self.path}: cannot replace it: {e.strerror or e}") from None
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        try:
            self.sock.bind(self.path)
        except OSError as e:
            self.sock.close()
            raise EklError(f"control socket {self.path}: cannot listen there: {e.strerror or e}; "
                           f"unix socket paths are limited to 107 bytes") from None
        os.chmod(self.path, 0o600)
        self.sock.listen(16)
        self._slots = threading.BoundedSemaphore(MAX_CLIENTS)
        self._closed = threading.Event()
        self._thread: Optional[threading.Thread] = None
        self.served = 0

    def start(self) -> ControlServer:
        self._thread = threading.Thread(target=self._accept_loop, name="ekl-control", daemon=True)
        self._thread.start()
        return self

    def _accept_loop(self) -> None:
        while not self._closed.is_set():
            try:
                conn, _ = self.sock.accept()
            except OSError:
                if self._closed.is_set():
                    return
                continue  # EMFILE and friends: keep serving the next one
            if not self._slots.acquire(blocking=False):
                try:
                    conn.settimeout(0.5)
                    _send(conn, {"ok": False, "error": f"launcher busy: {MAX_CLIENTS} control "
                                                       f"requests already running; try again"})
                except OSError:
                    pass
                conn.close()
                continue
            threading.Thread(target=self._serve, args=(conn,), name="ekl-control-conn",
                             daemon=True).start()

    def _serve(self, conn: socket.socket) -> None:
        try:
            with conn:
                conn.settimeout(self.io_timeout)
                reply = self._answer(conn)
                conn.settimeout(self.io_timeout)
                _send(conn, reply)
                self.served += 1
        except OSError:
            pass  # the client went away or stalled: nothing to tell it
        except Exception:  # noqa: BLE001 -- one bad request never ends the server
            log.exception("control: a request failed")
        finally:
            self._slots.release()

    def _answer(self, conn: socket.socket) -> Dict[str, Any]:
        uid = _peer_uid(conn)
        if uid is not None and uid not in (0, os.getuid()):
            return {"ok": False, "error": f"permission denied: uid {uid} is not the launcher's user"}
        try:
            req = json.loads(_read_line(conn, MAX_REQUEST_BYTES, time.monotonic() + self.io_timeout)
                             or b"null")
        except socket.timeout:
            return {"ok": False, "error": f"no request within {self.io_timeout:g} s"}
        except ValueError as e:
            return {"ok": False, "error": f"not a control request: {e}"}
        if not isinstance(req, dict) or req.get("op") not in OPS:
            return {"ok": False, "error": f"not a control request; op must be one of {', '.join(OPS)}"}
        timeout = req.get("timeout", DEFAULT_TIMEOUT_S)
        if isinstance(timeout, bool) or not isinstance(timeout, (int, float)) or \
                not 0 < timeout <= MAX_TIMEOUT_S:
            return {"ok": False, "error": f"timeout must be seconds in (0, {MAX_TIMEOUT_S:g}]"}
        known = list(self.names())
        if req.get("all") is True:
            names = known
        else:
            names = req.get("plugins")
            if not isinstance(names, list) or not names or len(names) > MAX_NAMES or \
                    not all(isinstance(n, str) for n in names):
                return {"ok": False, "error": "plugins must be a non-empty list of names, or all: true"}
            unknown = [n for n in names if n not in known]
            if unknown:
                return {"ok": False, "error": f"no plugin {', '.join(unknown)} under this launcher; "
                                              f"it runs: {', '.join(known) or 'none'}"}
        names = list(dict.fromkeys(names))
        conn.settimeout(None)  # the handler may wait up to `timeout` for the state
        try:
            results = [dict(r) for r in self.handler(req["op"], names, float(timeout))]
        except Exception as e:  # noqa: BLE001
            log.exception("control: %s %s failed", req["op"], ", ".join(names))
            return {"ok": False, "error": f"{req['op']} failed inside the launcher: {e}"}
        return {"ok": all(r.get("ok") for r in results), "results": results}

    def close(self) -> None:
        self._closed.set()
        try:
            self.sock.shutdown(socket.SHUT_RDWR)
        except OSError:
            pass
        self.sock.close()
        if self._thread is not None:
            self._thread.join(5)
        try:
            os.unlink(self.path)
        except OSError:
            pass

    def __enter__(self) -> ControlServer:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def request(path: str, op: str, plugins: Sequence[str] = (), all_plugins: bool = False,
            timeout: float = DEFAULT_TIMEOUT_S) -> Dict[str, Any]:
    """One request to the launcher at ``path``; stale or missing sockets are one-line errors."""
    body: Dict[str, Any] = {"op": op, "timeout": timeout}
    if all_plugins:
        body["all"] = True
    else:
        body["plugins"] = list(plugins)
    s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    try:
        s.settimeout(IO_TIMEOUT_S)
        try:
            s.connect(path)
        except FileNotFoundError:
            raise EklError(f"control socket {path} does not exist; the launcher is gone (stale "
                           f"status file)") from None
        except ConnectionRefusedError:
            raise EklError(f"control socket {path} refuses connections; the launcher that made "
                           f"it is gone (stale socket)") from None
        except PermissionError:
            raise EklError(f"control socket {path}: permission denied; run as the launcher's "
                           f"user (or root)") from None
        except OSError as e:
            raise EklError(f"control socket {path}: cannot connect: {e.strerror or e}") from None
        try:
            s.sendall(json.dumps(body).encode() + b"\n")
        except (BrokenPipeError, ConnectionResetError):
            pass  # it answered before reading (busy, refused): the answer is waiting below
        s.settimeout(timeout + IO_TIMEOUT_S)
        try:
            line = _read_line(s, MAX_REPLY_BYTES)
        except socket.timeout:
            raise HostTimeout(f"control socket {path}: no answer within {timeout + IO_TIMEOUT_S:g} s "
                              f"to {op}; see the launcher's log") from None
        except (OSError, ValueError) as e:
            raise EklError(f"control socket {path}: bad answer to {op}: {e}") from None
    finally:
        s.close()
    try:
        reply = json.loads(line)
    except ValueError:
        reply = None
    if not isinstance(reply, dict):
        raise EklError(f"control socket {path}: the launcher closed without an answer to {op}; "
                       f"see the launcher's log")
    return reply


def main(op: str, plugins: Sequence[str] = (), all_plugins: bool = False,
         status_sources: Optional[Sequence[str]] = None, timeout: float = DEFAULT_TIMEOUT_S,
         out: Optional[TextIO] = None, err: Optional[TextIO] = None) -> int:
    """``ekl OP NAME...|--all``: find each plugin's launcher through the status files, ask it,
    print ``NAME: STATE`` per plugin; exit 0 when all reached the asked state, else 1."""
    import sys

    out, err = out or sys.stdout, err or sys.stderr
    if op not in OPS:
        raise EklError(f"ekl {op}: not a control command; use {', '.join(OPS)}")
    if not all_plugins and not plugins:
        raise EklError(f"ekl {op}: name the plugins, or give --all")
    statuses = collector_for(status_sources)()
    where: Dict[str, Mapping[str, Any]] = {}
    for s in sorted((s for s in statuses if not s.get("error")),
                    key=lambda s: not s.get("launcher_alive", True)):
        for p in s.get("plugins") or []:
            if isinstance(p, Mapping) and isinstance(p.get("name"), str):
                where.setdefault(p["name"], s)
    names = sorted(n for n, s in where.items() if s.get("launcher_alive", True)) if all_plugins \
        else list(dict.fromkeys(plugins))
    if not names:
        raise EklError(f"ekl {op} --all: no running launcher in the status files")
    unknown = [n for n in names if n not in where]
    if unknown:
        raise EklError(f"no plugin {', '.join(unknown)} in the status files; known: "
                       f"{', '.join(sorted(where)) or 'none'}")
    by_socket: Dict[str, List[str]] = {}
    for n in names:
        s = where[n]
        if not s.get("launcher_alive", True):
            raise EklError(f"plugin {n}: its launcher (pid {s.get('launcher_pid')}) is gone; stale "
                           f"status file {s.get('source')}")
        path = s.get(STATUS_FIELD)
        if not isinstance(path, str) or not path:
            raise EklError(f"plugin {n}: launcher pid {s.get('launcher_pid')} has no control socket "
                           f"(an ekl without control commands); restart that launcher")
        by_socket.setdefault(path, []).append(n)
    ok = True
    for path, group in by_socket.items():
        reply = request(path, op, group, timeout=timeout)
        if reply.get("error"):
            print(f"ekl: {op} {', '.join(group)}: {reply['error']}", file=err)
            ok = False
            continue
        for r in reply.get("results") or []:
            if r.get("ok"):
                print(f"{r.get('plugin')}: {r.get('state')}", file=out)
            else:
                print(f"ekl: {op} {r.get('plugin')}: {r.get('error') or r.get('state')}", file=err)
                ok = False
    return 0 if ok else 1
