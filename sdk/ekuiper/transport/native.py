"""A pure-Python transport: SP REQ, PUSH, PULL and REP over ``ipc://`` Unix stream sockets.

Why it exists: with pynng, nng hands every message across several threads, which costs a
plugin most of its CPU per message; and pynng needs a compiled wheel that some edge
platforms lack. Here a send is one ``send`` system call and a REQ socket's receive one
blocking ``recv`` bounded by ``SO_RCVTIMEO`` (a PULL socket's: ``poll`` plus ``recv``), in
the caller's own thread. Threads exist only for connection set-up: a
dialer thread that runs while a dialed socket has no peer (so a restarted host is picked
up in the background, as nng re-dials), and one accepting thread per listening socket.

Semantics follow nng's (and pynng's, as ``pynng_transport`` maps them):

* REQ: each ``send`` starts a new request with a fresh 32-bit id (high bit set) and
  cancels the previous one; replies carrying another id are dropped. ``recv`` after a
  timeout, or without a ``send``, raises TransportTimeout (nng's protocol-state error). A
  peer that goes away while a request is outstanding makes ``recv`` raise TransportError
  (nng's "connection reset"). ``send`` waits up to the send timeout for a peer.
* PUSH: ``send`` waits up to the send timeout for a peer; a message the peer's end
  interrupts half-way is lost, as nng loses what a broken pipe had taken.
* PULL: listens, takes any number of PUSH peers and receives from them in turn; it
  negotiates with all new peers at once (a silent one holds up nobody).
* REP (the host's end of the control and function channels): listens like PULL, takes
  REQ peers; ``recv`` returns the next request from any of them and makes it the
  outstanding one, ``send`` replies to that one on its own connection (TransportStateError
  when none is outstanding; dropped silently when that peer has gone). Its send timeout
  bounds the whole reply, not just its start (see ``sp.Connection.send_whole_by``).
* Every connection refuses a message over ``$EKUIPER_MAX_MSG_SIZE`` (nng's receive size
  limit) by dropping the peer, and takes memory for a big message only as it arrives.
* Peers whose SP protocol is not the partner's are refused; ``close`` from another thread
  makes a blocked ``send``/``recv`` raise TransportClosed.

``send`` and ``recv`` of one socket are meant for one thread at a time (the runtime
serves each socket from one thread); ``close`` and ``connected`` may come from any thread.
"""

from __future__ import annotations

import os
import select
import threading
import time

from .. import lazylog
from . import sp
from .base import (
    PUSH_COALESCE_MAX_BYTES,
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
    push_coalesce_s,
)

TYPE_CHECKING = False  # typing is not loaded at run time on the start path (docs/architecture.md)
if TYPE_CHECKING:
    from typing import Callable, Dict, List, Optional, Tuple, TypeVar
    L = TypeVar("L", bound="_Listener")
    D = TypeVar("D", bound="_Dialed")

#: the largest body a send passes to ``Connection.send_frame`` (its frame, with the SP
#: header and a REQ's request id, must fit sp.FAST_FRAME); larger ones go the long way
_FAST_PUSH = sp.FAST_FRAME - 9
_FAST_REQ = sp.FAST_FRAME - 13
_pack = sp.pack_header
_NOSIGNAL = sp.NOSIGNAL
_pack_req = sp.pack_req_header
_monotonic = time.monotonic

#: background re-dial back-off: a refused connect on a Unix socket costs next to nothing,
#: and the runtime gives a vanished host only 2 s before it stops the plugin.
RECONNECT_MIN_S = 0.01
RECONNECT_MAX_S = 0.1
#: how long ``close`` waits for operations and threads that it woke up to leave.
CLOSE_WAIT_S = 1.0


#: connections accepted per wake-up of the accepting thread, before it looks at the others
ACCEPT_BATCH = 64
#: peers that connected but have not sent their connection header yet, per listening
#: socket; beyond it the oldest is dropped, so a flood of silent connections cannot pile up.
MAX_PENDING_PEERS = 128
#: at most one warning per this many seconds about dropped peers, per socket
WARN_INTERVAL_S = 5.0

log = lazylog.getLogger("ekuiper")


class _RateLimitedLog:
    """Warnings about what peers do, bounded: a peer that reconnects and misbehaves in a
    loop must not fill the log."""

    def __init__(self) -> None:
        self._last = 0.0
        self._suppressed = 0

    def warn(self, fmt: str, *args: object) -> None:
        now = time.monotonic()
        if now - self._last < WARN_INTERVAL_S:
            self._suppressed += 1
            return
        if self._suppressed:
            fmt += " (and %d more since the last such warning)"
            args = args + (self._suppressed,)
        self._last, self._suppressed = now, 0
        log.warning(fmt, *args)


class _Socket:
    """Closed flag, wake pipe, and the bookkeeping that lets ``close`` release descriptors
    only once no other thread can still be polling them."""

    def __init__(self, path: str) -> None:
        self._path = path
        #: read from $EKUIPER_MAX_MSG_SIZE when the socket is made
        self._max_size = max_msg_size()
        self._lock = threading.Lock()
        self._cond = threading.Condition(self._lock)
        self._closed = False
        self._closed_evt = threading.Event()
        #: one entry per send/recv in progress: list.append and list.pop are atomic under
        #: the GIL, so entering and leaving take no lock (see ``_enter``)
        self._ops: List[None] = []
        self._release_pending = False
        self._released = False
        self._threads: List[threading.Thread] = []
        self._wake_r, self._wake_w = os.pipe()

    def _enter(self) -> None:
        # Register first, then look at the flag; ``close`` sets the flag first, then looks
        # at the registrations: one of the two always sees the other (each step is atomic
        # under the GIL), so no operation can start on descriptors close has released.
        self._ops.append(None)
        if self._closed:
            self._leave()
            raise TransportClosed("socket closed")

    def _leave(self) -> None:
        self._ops.pop()
        if self._closed:
            self._leave_closed()

    def _leave_closed(self) -> None:
        with self._lock:
            if self._ops:
                return
            self._cond.notify_all()
            late = self._release_pending
            self._release_pending = False
        if late:
            self._release()

    def _spawn(self, target: Callable[[], None], name: str) -> None:
        t = threading.Thread(target=target, name=name, daemon=True)
        self._threads = [x for x in self._threads if x.is_alive()]
        self._threads.append(t)
        t.start()

    def close(self) -> None:
        with self._lock:
            if self._closed:
                return
            self._closed = True
            self._cond.notify_all()
        self._closed_evt.set()
        try:
            os.write(self._wake_w, b"x")  # stays readable: every poller wakes, now and later
        except OSError:
            pass
        self._interrupt()
        me = threading.current_thread()
        for t in list(self._threads):
            if t is not me:
                t.join(CLOSE_WAIT_S)
        with self._lock:
            end = time.monotonic() + CLOSE_WAIT_S
            while self._ops:
                left = end - time.monotonic()
                if left <= 0:
                    # Still inside a send/recv (e.g. close called from that very thread):
                    # the last one out releases the descriptors.
                    self._release_pending = True
                    return
                self._cond.wait(left)
        self._release()

    def _release(self) -> None:
        if self._released:
            return
        self._released = True
        self._release_resources()
        for fd in (self._wake_r, self._wake_w):
            try:
                os.close(fd)
            except OSError:
                pass

    def _release_resources(self) -> None:
        raise NotImplementedError

    def _interrupt(self) -> None:
        """Wake operations blocked in a system call rather than in ``poll`` (on close)."""


class _Dialed(_Socket):
    """A socket with one dialed connection, re-dialled in the background when it ends."""

    proto = 0
    peer_proto = 0

    def __init__(self, path: str) -> None:
        super().__init__(path)
        self._conn: Optional[sp.Connection] = None
        self._dead: List[sp.Connection] = []
        self._dialing = False

    def _dial_sync(self, url: str, retries: int, interval_s: float) -> None:
        last: Optional[BaseException] = None
        for i in range(retries + 1):
            try:
                conn = sp.dial(self._path, self.proto, self.peer_proto, self._wake_r,
                               max_size=self._max_size)
            except TransportClosed:
                raise
            except (OSError, sp.PeerGone, TransportTimeout) as e:
                last = e
            else:
                with self._lock:
                    self._conn = conn
                return
            if i < retries and self._closed_evt.wait(interval_s):
                raise TransportClosed("socket closed")
        raise TransportError(f"cannot dial {url}: {last}")

    def _lost(self, conn: sp.Connection) -> None:
        """Forget a connection that ended and start re-dialling. The connection is closed
        later by the socket's own I/O thread (another thread may be polling it now)."""
        with self._lock:
            conn.dead = True
            if conn is self._conn:
                self._conn = None
                self._dead.append(conn)
            self._start_dialer_locked()

    def _discard(self, conn: sp.Connection) -> None:
        """Close a connection that ended, from the thread that sends and receives on it
        (nng closes a pipe on any error), and start re-dialling."""
        with self._lock:
            conn.dead = True
            if conn is self._conn:
                self._conn = None
            elif conn in self._dead:
                self._dead.remove(conn)
            conn.close()  # under the lock: ``connected`` polls only under it
            self._start_dialer_locked()

    def _start_dialer_locked(self) -> None:
        if self._dialing or self._closed or self._conn is not None:
            return
        self._dialing = True
        self._spawn(self._redial, f"ekuiper-dial {self._path}")

    def _redial(self) -> None:
        delay = RECONNECT_MIN_S
        conn: Optional[sp.Connection] = None
        try:
            while not self._closed:
                try:
                    conn = sp.dial(self._path, self.proto, self.peer_proto, self._wake_r,
                                   max_size=self._max_size)
                    break
                except TransportClosed:
                    return
                except (OSError, sp.PeerGone, TransportTimeout):
                    # Nobody there yet, or a peer of the wrong protocol: try again later.
                    if self._closed_evt.wait(delay):
                        return
                    delay = min(delay * 2, RECONNECT_MAX_S)
        finally:
            with self._lock:
                self._dialing = False
                if conn is not None:
                    if self._closed:
                        conn.close()
                    else:
                        self._conn = conn
                self._cond.notify_all()

    def _await_conn(self, deadline: Optional[float]) -> sp.Connection:
        """The current connection, waiting up to the deadline for the dialer to make one."""
        with self._lock:
            while True:
                if self._closed:
                    raise TransportClosed("socket closed")
                conn = self._conn
                if conn is not None:
                    return conn
                self._start_dialer_locked()
                if deadline is None:
                    self._cond.wait()
                    continue
                left = deadline - time.monotonic()
                if left <= 0:
                    raise TransportTimeout("timed out: no peer to send to")
                self._cond.wait(left)

    def _interrupt(self) -> None:
        with self._lock:  # under the lock: _discard closes connections only under it
            conns = list(self._dead)
            if self._conn is not None:
                conns.append(self._conn)
        for c in conns:
            c.interrupt()

    def _reap(self) -> None:
        """Close connections that ended (only from the thread that sends)."""
        with self._lock:
            dead, self._dead = self._dead, []
            for c in dead:
                c.close()

    @property
    def connected(self) -> bool:
        """Whether a peer is attached; checks the connection so a vanished peer shows at
        once even while nobody sends or receives, and starts the re-dial."""
        conn = self._conn
        if conn is None:
            return False
        with self._lock:
            if conn is not self._conn or self._closed:
                return False
            gone = conn.peer_closed()
        if gone:
            self._lost(conn)
            return False
        return True

    def _release_resources(self) -> None:
        with self._lock:
            conns = list(self._dead)
            if self._conn is not None:
                conns.append(self._conn)
            self._conn, self._dead = None, []
        for c in conns:
            c.close()


class NativeReq(_Dialed, ReqSocket):
    proto = sp.PROTO_REQ
    peer_proto = sp.PROTO_REP

    def __init__(self, path: str, recv_timeout_ms: Optional[int],
                 send_timeout_ms: Optional[int]) -> None:
        super().__init__(path)
        self._recv_timeout = recv_timeout_ms
        self._send_timeout = send_timeout_ms
        #: the SO_RCVTIMEO of the usual receive, one blocking recv (0: none, wait for
        #: ever); None when the receive timeout is 0, which never blocks: polling only
        self._block_ms: Optional[int] = (None if recv_timeout_ms == 0 else
                                         recv_timeout_ms if recv_timeout_ms is not None
                                         and recv_timeout_ms > 0 else 0)
        # a random start, as nng's, across restarts (os.urandom: the random module costs
        # every plugin and host start several ms to import)
        self._next_id = int.from_bytes(os.urandom(4), "big") >> 1
        self._rid: Optional[int] = None
        self._rconn: Optional[sp.Connection] = None
        self._reset = False

    def send(self, data: bytes) -> None:
        self._enter()  # (the per-call path, ``exchange``, inlines it; this is the long one)
        try:
            # A new request cancels the previous one (its late reply will be dropped).
            self._rid = None
            self._reset = False
            if self._dead:
                self._rconn = None
                self._reap()
            self._next_id = (self._next_id + 1) & 0x7FFFFFFF
            rid = self._next_id | 0x80000000
            if type(data) is not bytes:
                data = bytes(data)
            conn = self._conn
            if conn is not None:  # the usual case: one send, no clock reading
                try:
                    n = len(data)
                    if conn.fast_send_ms == self._send_timeout and n <= _FAST_REQ:
                        # (a function call's usual send goes through ``exchange`` instead)
                        conn.send_frame(_pack_req(1, n + 4, rid) + data)  # 1: MSG_TYPE
                    else:  # (the first send sets SO_SNDTIMEO; big ones are sent in parts)
                        conn.send_within(*sp.req_frame(rid, data), self._send_timeout)
                except sp.PeerGone as e:
                    self._discard(conn)
                    if e.started:
                        self._reset = True
                        return
                else:
                    self._rid, self._rconn = rid, conn
                    return
            header, body = sp.req_frame(rid, data)
            deadline = sp.deadline_after(self._send_timeout)
            while True:
                conn = self._conn or self._await_conn(deadline)
                try:
                    conn.send(header, body, deadline)
                except sp.PeerGone as e:
                    self._discard(conn)
                    if not e.started:
                        continue  # nothing went out: wait for the next peer
                    self._reset = True  # torn request: nng reports a reset at recv
                    return
                self._rid, self._rconn = rid, conn
                return
        finally:
            self._leave()

    def recv(self) -> bytes:
        self._enter()
        try:
            rid, conn = self._rid, self._rconn
            if rid is None or conn is None:
                if self._reset:
                    self._reset = False
                    raise TransportError("connection reset: the peer went away before "
                                         "the request was sent")
                raise TransportTimeout("protocol state: no outstanding request "
                                       "(send first)")
            return self._await_reply(conn, rid)
        finally:
            self._leave()

    def _await_reply(self, conn: sp.Connection, rid: int) -> bytes:
        """The body of the reply to request ``rid`` on ``conn`` (``recv`` after its state
        checks; the caller has entered the socket)."""
        try:
            # Usually the reply arrives whole and alone: one blocking recv, bounded by
            # SO_RCVTIMEO, returns it. Anything else goes on below, polling until the
            # deadline (which then runs from here).
            if self._block_ms is not None:
                try:
                    body = conn.read_reply(rid, self._block_ms)
                except sp.ReplyPending:
                    body = None
                if body is not None:
                    self._rid = None
                    return body
            return self._poll_reply(conn, rid)
        except (TransportTimeout, sp.PeerGone) as e:
            raise self._failed(conn, e) from None

    def _poll_reply(self, conn: sp.Connection, rid: int) -> bytes:
        """The reply the long way: frame by frame from the buffer, polling for more until
        the receive timeout (which runs from here)."""
        deadline = sp.deadline_after(self._recv_timeout)
        while True:
            frame = conn.next_frame()
            if frame is None:
                conn.wait_readable(deadline)
                conn.fill()
                continue
            buf, start, end = frame
            if end - start < 4:
                raise sp.ProtocolViolation("reply without a request id")
            if sp.read_u32(buf, start) == rid:
                self._rid = None
                return sp.take(buf, start + 4, end)
            # else: a late reply to a cancelled request, dropped as nng does

    def _failed(self, conn: sp.Connection, e: Exception) -> Exception:
        """What a receive (or an exchange's request) that failed with ``e`` raises, the
        request state updated: the request is abandoned (recv again needs a send), and a
        broken connection is dropped."""
        self._rid = None
        if isinstance(e, TransportTimeout):
            return e
        self._rconn = None
        if self._closed:  # close() woke the blocking recv (shutdown)
            return TransportClosed("socket closed")
        self._discard(conn)
        if getattr(e, "started", False):  # torn request: what send() then recv() report
            return TransportError("connection reset: the peer went away before the request "
                                  "was sent")
        return TransportError(f"connection reset: {e}")

    def exchange(self, data: bytes) -> Optional[bytes]:
        """``send(data)`` then ``recv()`` in one call, for serving loops that answer each
        order with their next request (``reqloop.serve_inverted``): the reply, or None
        when the request cannot go out the usual way (no peer, the connection's first
        send, over 64 KiB, a closed socket, a full buffer until the send timeout, a broken
        connection). Nothing was sent then: the caller uses ``send`` and ``recv``, which
        handle each of those cases. Once the request is out, it raises what ``recv``
        raises. Every function call comes here: one frame of this socket's and one of the
        connection's (``Connection.read_reply``, which sends too) between the serving
        loop and the system calls."""
        conn = self._conn
        if (conn is None or self._dead or type(data) is not bytes
                or conn.fast_send_ms != self._send_timeout or len(data) > _FAST_REQ
                or self._block_ms is None):
            return None
        ops = self._ops  # _enter(), inlined
        ops.append(None)
        try:
            if self._closed:
                return None  # send raises TransportClosed
            # send(), its usual case: a new request (cancelling any earlier one)
            self._next_id = nid = (self._next_id + 1) & 0x7FFFFFFF
            rid = nid | 0x80000000
            self._rid, self._rconn, self._reset = rid, conn, False
            try:
                body = conn.read_reply(rid, self._block_ms,
                                       _pack_req(1, len(data) + 4, rid) + data)  # 1: MSG_TYPE
            except sp.ReplyPending:  # the request is out; the reply comes the long way
                return self._await_reply(conn, rid)
            except (TransportTimeout, sp.PeerGone) as e:
                raise self._failed(conn, e) from None
            if body is None:  # nothing went out (or was read): send() and recv() do it
                self._rid = self._rconn = None
                return None
            self._rid = None
            return body
        finally:
            ops.pop()  # _leave(), inlined
            if self._closed:
                self._leave_closed()


class NativePush(_Dialed, PushSocket):
    """PUSH, with the messages of a burst written together (``EKUIPER_PUSH_COALESCE_US``).

    A message that follows the last write by at least the coalescing window is written
    by ``send`` itself, as before. One that comes sooner is queued, and a writer thread
    writes the queue as one buffer a window later: at tens of thousands of messages a
    second that is one system call for dozens of them (a write costs 3-4 us here, a
    third of a source message's cost; docs/performance.md). Order is kept: a write
    waits for the one before it. Messages are queued only while a peer is connected and
    taking them; otherwise ``send`` writes after what is queued and, as without a queue,
    waits at most its send timeout for a peer that takes it (what was queued goes to the
    next peer, as nng's queue goes to the next pipe). A write that fails otherwise is
    raised by the next ``send``, as a failed write of nng's I/O thread is never seen by
    the send that queued it. ``send`` waits (at most the send timeout) while
    ``PUSH_COALESCE_MAX_BYTES`` are queued. ``close`` writes what is queued first.
    """

    proto = sp.PROTO_PUSH
    peer_proto = sp.PROTO_PULL

    def __init__(self, path: str, send_timeout_ms: Optional[int]) -> None:
        super().__init__(path)
        self._send_timeout = send_timeout_ms
        self._window = push_coalesce_s()
        self._plock = threading.Lock()
        self._pcond = threading.Condition(self._plock)
        self._queue: List[bytes] = []
        self._queued = 0  # bytes in _queue
        self._writing = False  # a write (send's own or the writer's) is under way
        self._last = -1e9  # when the last write began (monotonic)
        self._failure: Optional[TransportError] = None
        #: the writer's last batch was not taken (no peer, or one that stopped reading):
        #: until one is, a send waits for the queue as a send without a queue would wait
        self._stalled = False
        self._writer = False  # the writer thread runs
        self._closing = False

    def send(self, data: bytes) -> None:
        if type(data) is not bytes:
            data = bytes(data)
        window = self._window
        if window <= 0:
            return self._send_now(data)
        n = len(data)
        with self._plock:  # mid-burst (the usual case under load): join the queue
            q = self._queue
            if q and n <= _FAST_PUSH and self._queued + n <= PUSH_COALESCE_MAX_BYTES \
                    and self._failure is None and not self._closing and not self._stalled \
                    and self._conn is not None:
                q.append(data)
                self._queued += n
                return None
        now = _monotonic()
        with self._plock:
            failure = self._failure
            if failure is not None:
                self._failure = None
                raise failure
            if (not self._queue and not self._writing and now - self._last >= window) \
                    or n > _FAST_PUSH or self._closing or self._stalled \
                    or self._conn is None:
                # (big ones, a closing socket's, and while no peer is there or takes them:
                # after what is queued, and within the send timeout, as without a queue)
                inline = True
                self._await_space_locked(now, 0)
                self._writing = True
                self._last = now
            else:
                inline = False
                self._await_space_locked(now, n)
                self._queue.append(data)
                self._queued += n
                if not self._writer:
                    self._writer = True
                    self._spawn(self._write_queued, f"ekuiper-push {self._path}")
                elif len(self._queue) == 1:
                    self._pcond.notify_all()
        if inline:
            try:
                self._send_now(data)
            finally:
                with self._plock:
                    self._writing = False
                    self._pcond.notify_all()

    def _await_space_locked(self, start: float, need: int) -> None:
        """Wait (``_plock`` held) until the queue has room for ``need`` bytes (0: until it
        is empty and no write is under way), at most the send timeout."""
        timeout = self._send_timeout
        while (self._queued + need > PUSH_COALESCE_MAX_BYTES if need
               else self._queue or self._writing):
            if self._closed:
                raise TransportClosed("socket closed")
            left = None if timeout is None or timeout < 0 else start + timeout / 1000 - _monotonic()
            if left is not None and left <= 0:
                raise TransportTimeout("timed out: the peer takes no messages")
            self._pcond.wait(left)

    def _write_queued(self) -> None:
        """The writer thread: each window's queue in one write, until close."""
        cond = self._pcond
        while True:
            with cond:
                while not self._queue and not self._closing:
                    cond.wait()
                if not self._queue:
                    self._writer = False
                    return
                closing = self._closing
            if not closing:
                self._closed_evt.wait(self._window)  # let the burst fill the queue
            with cond:
                while self._writing:
                    cond.wait()
                batch, self._queue, self._queued = self._queue, [], 0
                self._writing = True
                self._last = _monotonic()
                cond.notify_all()  # room for senders waiting on a full queue
            left: List[bytes] = []
            try:
                left = self._send_batch(batch)
            except TransportClosed:
                pass  # closed under us: the rest is dropped, as a send would raise
            except TransportError as e:
                with cond:
                    self._failure = e
            except Exception as e:  # noqa: BLE001 - a bug must not end the writer silently
                log.error("ekuiper: push writer %s: %s", self._path, e)
            finally:
                with cond:
                    if left:  # not taken within the send timeout: first in line again
                        self._queue[:0] = left
                        self._queued += sum(map(len, left))
                    self._stalled = bool(left)
                    self._writing = False
                    cond.notify_all()

    def _send_batch(self, batch: List[bytes]) -> List[bytes]:
        """Write ``batch`` in order; returns what the peer did not take in time (to be
        written again), raises what a send would raise otherwise."""
        conn = self._conn
        if len(batch) > 1 and conn is not None and conn.fast_send_ms == self._send_timeout:
            frames = b"".join([_pack(1, len(d)) + d for d in batch])
            self._enter()
            try:
                try:
                    sent = conn.sock.send(frames, _NOSIGNAL)
                except BlockingIOError:
                    return batch  # none of it went: the peer is not reading
                except OSError as e:
                    self._discard(conn)
                    if self._conn is None and not self._closed:
                        return batch  # not started: sent again once re-dialled
                    raise TransportError(f"send failed: {e}") from None
                if sent != len(frames):
                    try:
                        conn._finish(frames, sent, None)  # committed: see send_frame
                    except sp.PeerGone:
                        self._discard(conn)  # lost with the pipe, as in nng
                return []
            finally:
                self._leave()
        for i, data in enumerate(batch):
            try:
                self._send_now(data)
            except TransportTimeout:
                return batch[i:]
        return []

    def close(self) -> None:
        """Write what is queued (within the send timeout), then close."""
        with self._plock:
            self._closing = True
            self._pcond.notify_all()
            end = _monotonic() + CLOSE_WAIT_S
            while (self._queue or self._writing) and self._writer and not self._closed:
                left = end - _monotonic()
                if left <= 0:
                    break
                self._pcond.wait(left)
        super().close()
        with self._plock:  # a send waiting for room in the queue ends now
            self._pcond.notify_all()

    def _send_now(self, data: bytes) -> None:
        ops = self._ops  # _enter(), inlined on the hot path
        ops.append(None)
        if self._closed:
            self._leave()
            raise TransportClosed("socket closed")
        try:
            if self._dead:
                self._reap()
            conn = self._conn
            if conn is not None:  # the usual case: one send, no clock reading
                try:
                    n = len(data)
                    if conn.fast_send_ms == self._send_timeout and n <= _FAST_PUSH:
                        # Connection.send_frame, inlined: every source message comes here
                        frame = _pack(1, n) + data  # 1: MSG_TYPE
                        try:
                            sent = conn.sock.send(frame, _NOSIGNAL)
                        except BlockingIOError:
                            raise TransportTimeout("timed out") from None
                        except OSError as e:
                            raise sp.PeerGone(f"send failed: {e}") from None
                        if sent != n + 9:
                            conn._finish(frame, sent, None)  # committed: see send_frame
                    else:  # (the first send sets SO_SNDTIMEO; big ones are sent in parts)
                        conn.send_within(sp.frame_header(len(data)), data, self._send_timeout)
                    return
                except sp.PeerGone as e:
                    self._discard(conn)
                    if e.started:
                        return  # committed and lost with the pipe, as in nng
            header = sp.frame_header(len(data))
            deadline = sp.deadline_after(self._send_timeout)
            while True:
                conn = self._conn or self._await_conn(deadline)
                try:
                    conn.send(header, data, deadline)
                    return
                except sp.PeerGone as e:
                    self._discard(conn)
                    if e.started:
                        return  # committed and lost with the pipe, as in nng
        finally:
            ops.pop()  # _leave(), inlined
            if self._closed:
                self._leave_closed()


class _Listener(_Socket):
    """Listens; an accepting thread negotiates with each new peer and hands it over, and
    the receiving thread takes complete messages from all peers in turn. PULL and REP
    differ only in their protocol ids and in what they make of a message."""

    proto = 0
    peer_proto = 0

    def __init__(self, path: str, recv_timeout_ms: Optional[int]) -> None:
        self._listener, self._ino = sp.listen(path)  # first: nothing to undo if it fails
        super().__init__(path)
        #: read at each recv, so a caller may change it between calls
        self.recv_timeout_ms = recv_timeout_ms
        self._notify_r, self._notify_w = os.pipe()
        os.set_blocking(self._notify_r, False)
        os.set_blocking(self._notify_w, False)
        self._incoming: List[sp.Connection] = []
        # Owned by the receiving thread:
        self._conns: List[sp.Connection] = []
        self._byfd: Dict[int, sp.Connection] = {}
        self._next = 0
        self._poll = select.poll()
        self._poll.register(self._wake_r, select.POLLIN)
        self._poll.register(self._notify_r, select.POLLIN)
        self._warn = _RateLimitedLog()
        #: the connection the last message from ``_buffered`` came from
        self._from: Optional[sp.Connection] = None
        self._spawn(self._accept_loop, f"ekuiper-accept {path}")

    def _accept_loop(self) -> None:
        """Accept peers and exchange connection headers with all of them at once.

        Nothing here waits on one peer: each new connection gets our header at once and
        joins a poll set until its own header arrives (then it is handed to ``recv``) or
        its deadline passes, so a peer that connects and stays silent cannot hold up the
        next one."""
        lfd = self._listener.fileno()
        poll = select.poll()
        poll.register(lfd, select.POLLIN)
        poll.register(self._wake_r, select.POLLIN)
        #: fd -> (connection, handshake deadline), oldest first
        pending: Dict[int, Tuple[sp.Connection, float]] = {}

        def forget(fd: int) -> sp.Connection:
            conn, _ = pending.pop(fd)
            try:
                poll.unregister(fd)
            except KeyError:
                pass
            return conn

        try:
            while not self._closed:
                timeout = None
                if pending:
                    first = min(d for _, d in pending.values())
                    timeout = max(0, int((first - time.monotonic()) * 1000.0) + 1)
                events = poll.poll(timeout)
                for fd, _ev in events:
                    if fd == self._wake_r:
                        return
                    if fd == lfd:
                        if not self._accept_some(poll, pending, forget):
                            return
                        continue
                    if fd not in pending:
                        continue
                    conn = pending[fd][0]
                    try:
                        conn.fill()
                        if not conn.take_peer_header(self.peer_proto):
                            continue
                    except (sp.PeerGone, OSError):
                        forget(fd).close()  # wrong protocol, not SP, or gone: refused
                        continue
                    forget(fd)
                    if not self._hand_over(conn):
                        return
                now = time.monotonic()
                for fd in [fd for fd, (_, d) in pending.items() if d <= now]:
                    forget(fd).close()  # no header in time (nng gives 10 s too)
        finally:
            for conn, _ in pending.values():
                conn.close()
            pending.clear()

    def _accept_some(self, poll: select.poll,
                     pending: Dict[int, Tuple[sp.Connection, float]],
                     forget: Callable[[int], sp.Connection]) -> bool:
        """Take what the backlog holds; False once the socket is closed."""
        for _ in range(ACCEPT_BATCH):
            try:
                s, _addr = self._listener.accept()
            except BlockingIOError:
                return True
            except OSError:
                # e.g. out of descriptors: the peer stays in the backlog; do not spin
                return not self._closed_evt.wait(0.05)
            conn = sp.Connection(s, self._wake_r, self._max_size)
            try:
                conn.send_header_now(self.proto)
            except (sp.PeerGone, OSError):
                conn.close()
                continue
            if len(pending) >= MAX_PENDING_PEERS:
                forget(next(iter(pending))).close()  # the oldest silent one goes
            pending[conn.fd] = (conn, time.monotonic() + sp.NEGOTIATE_TIMEOUT_S)
            poll.register(conn.fd, select.POLLIN)
        return True

    def _hand_over(self, conn: sp.Connection) -> bool:
        """Give a negotiated peer to the receiving side; False once the socket is closed."""
        with self._lock:
            if self._closed:
                conn.close()
                return False
            self._incoming.append(conn)
        try:
            os.write(self._notify_w, b"\0")
        except (BlockingIOError, OSError):
            pass  # already signalled
        return True

    def _take_incoming(self) -> None:
        try:
            while os.read(self._notify_r, 4096):
                pass
        except (BlockingIOError, OSError):
            pass
        with self._lock:
            new, self._incoming = self._incoming, []
        for c in new:
            self._conns.append(c)
            self._byfd[c.fd] = c
            self._poll.register(c.fd, select.POLLIN)

    def _drop(self, conn: sp.Connection) -> None:
        self._forget_fd(conn)
        try:
            self._conns.remove(conn)
        except ValueError:
            pass
        conn.close()

    def _forget_fd(self, conn: sp.Connection) -> None:
        conn.dead = True
        if self._byfd.pop(conn.fd, None) is not None:
            try:
                self._poll.unregister(conn.fd)
            except KeyError:
                pass

    def _buffered(self) -> Optional[Tuple[sp.Buffer, int, int]]:
        """A complete message from any peer, taking peers in turn, as (buffer, start,
        end); ``self._from`` is then the connection it came from (a REP socket replies on
        it). Peers that ended (and are drained) or broke the framing are dropped after the
        scan, not by recursion: a thousand peers gone at once must not exhaust the stack."""
        conns = self._conns
        n = len(conns)
        found = None
        gone: Optional[List[sp.Connection]] = None
        i = 0
        while i < n:
            k = (self._next + i) % n
            conn = conns[k]
            i += 1
            try:
                frame = conn.next_frame()
            except sp.ProtocolViolation as e:
                self._warn.warn("%s: dropped a peer: %s", self._path, e)
                gone = [conn] if gone is None else gone + [conn]
                continue
            if frame is not None:
                self._next = k + 1
                self._from = conn
                found = frame
                break
            if conn.dead:  # ended and drained
                gone = [conn] if gone is None else gone + [conn]
        if gone is not None:
            for conn in gone:
                self._drop(conn)
        return found

    def _next_message(self, timeout_ms: Optional[int]) -> Tuple[sp.Buffer, int, int]:
        """The receive loop both listeners share: wait up to ``timeout_ms`` for a complete
        message from any peer (its connection in ``self._from``), taking in new peers as
        the accepting thread hands them over. TransportTimeout when the time is up,
        TransportClosed on close. The clock is read only when a wait is needed."""
        msg = self._buffered()
        if msg is not None:
            return msg
        deadline = sp.deadline_after(timeout_ms)
        while True:
            left = None if deadline is None else max(
                0, int((deadline - time.monotonic()) * 1000.0 + 0.999))
            events = self._poll.poll(left)
            if not events and deadline is not None and time.monotonic() >= deadline:
                raise TransportTimeout("timed out")
            for fd, _ev in events:
                if fd == self._wake_r:
                    raise TransportClosed("socket closed")
                if fd == self._notify_r:
                    self._take_incoming()
                    continue
                conn = self._byfd.get(fd)
                if conn is None:
                    continue
                try:
                    conn.fill()
                except sp.PeerGone:
                    self._forget_fd(conn)  # keep what it sent until it is taken
            msg = self._buffered()
            if msg is not None:
                return msg

    def _release_resources(self) -> None:
        try:
            if os.stat(self._path).st_ino == self._ino:
                os.unlink(self._path)  # as nng removes its socket file on close
        except OSError:
            pass
        self._listener.close()
        with self._lock:
            conns = self._conns + self._incoming
            self._conns, self._incoming = [], []
        for c in conns:
            c.close()
        for fd in (self._notify_r, self._notify_w):
            try:
                os.close(fd)
            except OSError:
                pass


class NativePull(_Listener, PullSocket):
    """PULL: takes any number of PUSH peers and receives from them in turn."""

    proto = sp.PROTO_PULL
    peer_proto = sp.PROTO_PUSH

    def recv(self) -> bytes:
        self._enter()
        try:
            buf, start, end = self._next_message(self.recv_timeout_ms)
            return sp.take(buf, start, end)
        finally:
            self._leave()


class NativeRep(_Listener, RepSocket):
    """REP, as nng's rep0 (the host's end of the control and function channels).

    Each request starts with its backtrace: the 4-byte words up to and including the
    first with the high bit set (one word, the request id, from a REQ peer; more only
    through devices). ``recv`` strips it and keeps it with the connection; ``send`` puts
    it in front of the reply, so the reply reaches the peer that asked and that peer can
    match it to its request. As in nng: a message whose words run out first (not SP
    REQ) drops its peer; one with no marked word among its first ``sp.MAX_HOPS`` is
    dropped alone; a reply to a peer that has gone is dropped silently (the REQ side
    re-sends, so nothing is waiting for it).
    """

    proto = sp.PROTO_REP
    peer_proto = sp.PROTO_REQ

    def __init__(self, path: str, recv_timeout_ms: Optional[int],
                 send_timeout_ms: Optional[int]) -> None:
        super().__init__(path, recv_timeout_ms)
        #: read at each send
        self.send_timeout_ms = send_timeout_ms
        #: the outstanding request: its connection and backtrace (None: none outstanding)
        self._req: Optional[Tuple[sp.Connection, bytes]] = None

    def recv(self) -> bytes:
        self._enter()
        try:
            timeout = self.recv_timeout_ms
            deadline = sp.deadline_after(timeout)
            while True:
                buf, start, end = self._next_message(timeout)
                conn = self._from
                assert conn is not None
                try:
                    n = sp.backtrace_len(buf, start, end)
                except sp.ProtocolViolation as e:
                    self._warn.warn("%s: dropped a peer: %s", self._path, e)
                    self._drop(conn)
                else:
                    if n >= 0:
                        # A later request replaces one that got no reply (nng's rep0).
                        self._req = (conn, sp.take(buf, start, start + n))
                        return sp.take(buf, start + n, end)
                    self._warn.warn("%s: dropped a request with more than %d words before "
                                    "its request id", self._path, sp.MAX_HOPS - 1)
                if deadline is not None:  # a dropped message does not extend the wait
                    timeout = max(0, int((deadline - time.monotonic()) * 1000.0))
        finally:
            self._leave()

    def send(self, data: bytes) -> None:
        self._enter()
        try:
            req, self._req = self._req, None  # replied or failed: no longer outstanding
            if req is None:
                raise TransportStateError(
                    "protocol state: no request to reply to (receive one first)")
            conn, backtrace = req
            if conn.dead:
                return  # the peer went away: nobody waits for this reply (nng drops it)
            if type(data) is not bytes:
                data = bytes(data)
            header = sp.frame_header(len(backtrace) + len(data)) + backtrace
            try:
                # Bounded as a whole: a peer that asks and never reads must not hold the
                # host (nng's send returns once its pipe has the message).
                conn.send_whole_by(header, data, sp.deadline_after(self.send_timeout_ms))
            except sp.PeerGone:
                conn.dead = True  # gone: the reply is lost with it, as in nng
        finally:
            self._leave()


class NativeTransport(Transport):
    """The pure-Python SP transport (``EKUIPER_TRANSPORT=native``)."""

    name = "native"

    def dial_req(self, url: str, *, recv_timeout_ms: int, send_timeout_ms: int,
                 retries: int, interval_s: float) -> ReqSocket:
        return _dialed(NativeReq(sp.ipc_path(url), recv_timeout_ms, send_timeout_ms), url,
                       retries, interval_s)

    def dial_push(self, url: str, *, send_timeout_ms: int, retries: int,
                  interval_s: float) -> PushSocket:
        return _dialed(NativePush(sp.ipc_path(url), send_timeout_ms), url, retries,
                       interval_s)

    def listen_pull(self, url: str, *, retries: int, interval_s: float,
                    recv_timeout_ms: Optional[int] = None) -> PullSocket:
        return _listen(url, retries, interval_s, lambda path: NativePull(path, recv_timeout_ms))

    def listen_rep(self, url: str, *, retries: int, interval_s: float,
                   recv_timeout_ms: Optional[int] = None,
                   send_timeout_ms: Optional[int] = None) -> RepSocket:
        return _listen(url, retries, interval_s,
                       lambda path: NativeRep(path, recv_timeout_ms, send_timeout_ms))


def _dialed(sock: D, url: str, retries: int, interval_s: float) -> D:
    """``sock`` once its first connection is up (with retries); closed, and the error
    raised, when none comes."""
    try:
        sock._dial_sync(url, retries, interval_s)
    except BaseException:
        sock.close()
        raise
    return sock


def _listen(url: str, retries: int, interval_s: float, make: Callable[[str], L]) -> L:
    """Bind with retries (as eKuiper's host does); the last OSError is the cause, so an
    address held by a live listener shows as errno EADDRINUSE."""
    path = sp.ipc_path(url)
    last: Optional[OSError] = None
    for i in range(retries + 1):
        try:
            return make(path)
        except OSError as e:
            last = e
        if i < retries:
            time.sleep(interval_s)
    raise TransportError(f"cannot listen on {url}: {last}") from last
