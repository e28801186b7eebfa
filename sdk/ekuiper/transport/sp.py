"""The SP (scalability protocols) wire format over Unix stream sockets, as nng speaks ipc://.

Written from the protocol as nng and mangos put it on the wire:

* Connection header, sent by both ends at once and checked by both:
  ``00 'S' 'P' 00``, the sender's 16-bit big-endian protocol id, two zero bytes.
* Then each message: a one-byte message type (1), the 64-bit big-endian length of what
  follows, then the message (protocol header such as a REQ request id, then the body).

:class:`Connection` owns one connected socket. Its descriptor is in blocking mode, but
every operation passes ``MSG_DONTWAIT`` and waits, when it must, by polling the socket
together with the owning socket's *wake* descriptor, which becomes readable (and stays
readable) once that socket is closed: that is how ``close`` from another thread unblocks a
``send`` or ``recv`` at once, without closing a descriptor another thread may still be
polling. The two exceptions are the hot paths: :meth:`Connection.read_reply`, a single
blocking ``recv`` bounded by ``SO_RCVTIMEO`` (a REQ socket waiting for its reply: one
system call per message instead of ``poll`` plus ``recv``), and
:meth:`Connection.send_within`, a single blocking ``send`` bounded by ``SO_SNDTIMEO``;
``close`` unblocks both with :meth:`Connection.interrupt` (``shutdown``).
"""

from __future__ import annotations

import errno
import math
import os
import select
import socket
import stat
import struct
import time

from .base import MAX_MSG_SIZE_ENV, TransportClosed, TransportError, TransportTimeout

TYPE_CHECKING = False  # typing is not loaded at run time on the start path (docs/architecture.md)
if TYPE_CHECKING:
    from typing import Dict, List, Optional, Tuple, Union
    Buffer = Union[bytes, bytearray]

PROTO_REQ = 0x30
PROTO_REP = 0x31
PROTO_PUSH = 0x50
PROTO_PULL = 0x51

PROTO_NAMES = {0x10: "pair0", 0x11: "pair1", 0x20: "pub", 0x21: "sub", PROTO_REQ: "req",
               PROTO_REP: "rep", PROTO_PUSH: "push", PROTO_PULL: "pull", 0x62: "surveyor",
               0x63: "respondent", 0x70: "bus"}

#: nng gives a peer 10 s to complete the connection header exchange.
NEGOTIATE_TIMEOUT_S = 10.0
#: nng's default maximum TTL (NNG_OPT_MAXTTL): the words a request's backtrace may hold.
MAX_HOPS = 8

MSG_TYPE = 1
_HEADER = struct.Struct(">BQ")  # message type, length
_HEADER_LEN = _HEADER.size  # 9
_REQ_HEADER = struct.Struct(">BQI")  # message type, length, request id
_REQ_HEADER_LEN = _REQ_HEADER.size  # 13
#: ``pack(MSG_TYPE, len(body))`` and ``pack(MSG_TYPE, len(body) + 4, request_id)``: the
#: hot paths join these with the body into one frame themselves
pack_header = _HEADER.pack
pack_req_header = _REQ_HEADER.pack
_U32 = struct.Struct(">I")
_U64 = struct.Struct(">Q")

#: messages whose frame is larger than this are received into pieces of their own instead
#: of through the small read buffer.
_BIG = 1 << 16
_CHUNK = 1 << 16
#: the size of those pieces: memory is taken as bytes arrive, never for what a header
#: merely claims (a 9-byte header can claim 2**64 bytes).
_PIECE = 1 << 20
#: above this, a send hands header and body to the kernel separately (no concatenation).
_GATHER = 1 << 16
#: the largest frame (header included) :meth:`Connection.send_frame` takes
FAST_FRAME = _GATHER
#: no SO_SNDTIMEO set yet (``Connection.fast_send_ms``): equal to no timeout value
_UNSET = object()

_NOSIGNAL = getattr(socket, "MSG_NOSIGNAL", 0)
NOSIGNAL = _NOSIGNAL
_DONTWAIT = socket.MSG_DONTWAIT
_SEND_FLAGS = _NOSIGNAL | _DONTWAIT
_TIMEVAL = struct.Struct("@ll")  # struct timeval, for SO_RCVTIMEO
_POLLIN = select.POLLIN
_POLLOUT = select.POLLOUT
_POLLGONE = (select.POLLHUP | select.POLLERR | select.POLLNVAL
             | getattr(select, "POLLRDHUP", 0))



class PeerGone(Exception):
    """The connection ended or broke; ``started`` tells whether a send was half done."""

    def __init__(self, why: str, started: bool = False) -> None:
        super().__init__(why)
        self.started = started


class ProtocolViolation(PeerGone):
    """The peer sent something that is not SP; nng closes such a pipe, and so do we."""


class ReplyPending(Exception):
    """:meth:`Connection.read_reply` read something other than the lone reply it waited
    for (a split or late frame): what it read is buffered, and the reply is to be read
    the long way (:meth:`Connection.next_frame`). Rare, hence an exception: the per-call
    path then tests one return value only."""


def proto_name(proto: int) -> str:
    return f"0x{proto:02x} ({PROTO_NAMES.get(proto, 'unknown')})"


def connection_header(proto: int) -> bytes:
    return bytes((0, ord("S"), ord("P"), 0, proto >> 8, proto & 0xFF, 0, 0))


def parse_connection_header(head: bytes) -> int:
    """Return the peer's protocol id, or raise ProtocolViolation when it is not SP."""
    if len(head) != 8 or head[0:4] != b"\x00SP\x00" or head[6:8] != b"\x00\x00":
        raise ProtocolViolation(f"not an SP connection header: {head!r}")
    return (head[4] << 8) | head[5]


def ipc_path(url: str) -> str:
    """The socket path of an ``ipc://`` URL (``ipc:///tmp/x.ipc`` -> ``/tmp/x.ipc``)."""
    if not url.startswith("ipc://"):
        raise TransportError(f"the native transport speaks only ipc:// URLs, not {url!r}")
    path = url[len("ipc://"):]
    if not path:
        raise TransportError(f"empty ipc path in {url!r}")
    return path


def deadline_after(ms: Optional[int]) -> Optional[float]:
    """A monotonic deadline; ``None`` or a negative time means wait for ever (as nng's -1)."""
    if ms is None or ms < 0:
        return None
    return time.monotonic() + ms / 1000.0


def _remaining_ms(deadline: Optional[float]) -> Optional[int]:
    if deadline is None:
        return None
    return max(0, int(math.ceil((deadline - time.monotonic()) * 1000.0)))


def take(buf: Buffer, start: int, end: int) -> bytes:
    """Copy one message out of a receive buffer, once."""
    if type(buf) is bytes:
        return buf[start:end]
    return bytes(memoryview(buf)[start:end])


def frame_header(length: int) -> bytes:
    return _HEADER.pack(MSG_TYPE, length)


def req_frame(request_id: int, body: bytes) -> Tuple[bytes, bytes]:
    """Header (with the request id) and body of a REQ message."""
    return _REQ_HEADER.pack(MSG_TYPE, len(body) + 4, request_id), body


def read_u32(buf: Buffer, offset: int) -> int:
    return _U32.unpack_from(buf, offset)[0]


def backtrace_len(buf: Buffer, start: int, end: int) -> int:
    """The length in bytes of the backtrace at the front of a request (REP side), as nng's
    rep0 reads it: 4-byte words up to and including the first with the high bit set (a
    request id; the words before it are hops through devices). -1 when more than
    ``MAX_HOPS`` words come before it (the message is dropped, the peer kept);
    ProtocolViolation when the message ends first (nng closes such a pipe)."""
    pos = start
    for _ in range(MAX_HOPS):
        if end - pos < 4:
            raise ProtocolViolation("a request without a request id (not SP REQ)")
        if buf[pos] & 0x80:
            return pos + 4 - start
        pos += 4
    return -1


class Connection:
    """One SP pipe: a connected Unix stream socket with its read buffer.

    Only one thread at a time may send and one may receive; :meth:`peer_closed` may be
    called from any thread.
    """

    __slots__ = ("sock", "fd", "peer", "dead", "max_size", "_wake", "_rpoll", "_wpoll",
                 "_data", "_off", "_need", "_parts", "_piece", "_pieceview", "_piecepos",
                 "_rcvtimeo", "_sndtimeo", "fast_send_ms")

    def __init__(self, sock: socket.socket, wake_fd: int, max_size: int = 0) -> None:
        # Blocking descriptor; all but read_reply and send_within pass MSG_DONTWAIT.
        sock.setblocking(True)
        self.sock = sock
        self.fd = sock.fileno()
        self.peer = -1
        #: set once anyone saw the connection end; the owner closes it later
        self.dead = False
        self._wake = wake_fd
        self._rpoll = select.poll()
        self._rpoll.register(self.fd, _POLLIN)
        self._rpoll.register(wake_fd, _POLLIN)
        self._wpoll: Optional[select.poll] = None
        #: the largest message accepted (0: any); a larger one ends the connection
        self.max_size = max_size
        self._data: bytes = b""
        self._off = 0
        # A big message in progress: bytes still to come, pieces received so far, and the
        # piece being filled (None between pieces and outside a big message).
        self._need = 0
        self._parts: Optional[List[Buffer]] = None
        self._piece: Optional[bytearray] = None
        self._pieceview: Optional[memoryview] = None
        self._piecepos = 0
        #: the SO_RCVTIMEO in force, in ms (0: none, the kernel's default)
        self._rcvtimeo = 0
        self._sndtimeo = 0
        #: the send timeout (as callers pass it) whose SO_SNDTIMEO is in force, once
        #: :meth:`send_within` has set it: while a caller's timeout equals it, a frame of
        #: at most FAST_FRAME bytes may go straight to :meth:`send_frame` (no checks)
        self.fast_send_ms: object = _UNSET

    # --- waiting ---------------------------------------------------------------------

    def _wait(self, poll: select.poll, deadline: Optional[float]) -> None:
        """Wait until the socket is ready; TransportTimeout at the deadline, Closed on wake."""
        while True:
            events = poll.poll(_remaining_ms(deadline))
            if not events:
                if deadline is not None and time.monotonic() >= deadline:
                    raise TransportTimeout("timed out")
                continue
            for fd, _ev in events:
                if fd == self._wake:
                    raise TransportClosed("socket closed")
            return

    def wait_readable(self, deadline: Optional[float]) -> None:
        self._wait(self._rpoll, deadline)

    def wait_writable(self, deadline: Optional[float]) -> None:
        if self._wpoll is None:
            self._wpoll = select.poll()
            self._wpoll.register(self.fd, _POLLOUT)
            self._wpoll.register(self._wake, _POLLIN)
        self._wait(self._wpoll, deadline)

    # --- sending ---------------------------------------------------------------------

    def send(self, header: bytes, body: bytes, deadline: Optional[float]) -> None:
        """Write one message. The deadline applies until the first byte is written: after
        that the message is committed (as nng commits a message once a pipe takes it) and
        only a close or the peer's end interrupts it, so the stream is never left torn
        because of a timeout."""
        sock = self.sock
        total = len(header) + len(body)
        sent = 0
        try:
            if total <= _GATHER:
                data = header + body
                try:
                    sent = sock.send(data, _SEND_FLAGS)
                except BlockingIOError:
                    sent = 0
                if sent == total:
                    return
                self._finish(data, sent, deadline)
                return
            hview, bview = memoryview(header), memoryview(body)
            hlen = len(header)
            while sent < total:
                parts = [hview[sent:], bview] if sent < hlen else [bview[sent - hlen:]]
                try:
                    sent += sock.sendmsg(parts, (), _SEND_FLAGS)
                except BlockingIOError:
                    pass
                if sent < total:
                    self.wait_writable(deadline if sent == 0 else None)
        except (TransportTimeout, TransportClosed):
            raise  # (TransportTimeout is an OSError too: keep it out of the next clause)
        except OSError as e:
            raise PeerGone(f"send failed: {e}", started=sent > 0) from None

    def send_whole_by(self, header: bytes, body: bytes, deadline: Optional[float]) -> None:
        """Write one message, all of it before ``deadline``. For a REP's reply: nng hands
        it to the pipe and returns, so a peer that asks and never reads cannot hold the
        host; here the caller waits, so the wait is bounded instead. TransportTimeout
        when the deadline passes: if part of the message was written, the connection is
        ended too (``dead``, shut down: the peer must not take half a message for a
        whole). PeerGone when the connection broke."""
        view = memoryview(header + body) if len(body) <= _GATHER else None
        hview, bview = memoryview(header), memoryview(body)
        hlen, total = len(header), len(header) + len(body)
        sent = 0
        try:
            while True:
                try:
                    if view is not None:
                        sent += self.sock.send(view[sent:], _SEND_FLAGS)
                    else:
                        parts = [hview[sent:], bview] if sent < hlen else [bview[sent - hlen:]]
                        sent += self.sock.sendmsg(parts, (), _SEND_FLAGS)
                except BlockingIOError:
                    pass
                if sent >= total:
                    return
                self.wait_writable(deadline)
        except TransportTimeout:
            if sent:
                self.dead = True
                self.interrupt()
                raise TransportTimeout(f"timed out with {sent} of {total} bytes written; "
                                       "the connection is ended") from None
            raise
        except TransportClosed:
            raise
        except OSError as e:
            raise PeerGone(f"send failed: {e}", started=sent > 0) from None

    def send_within(self, header: bytes, body: bytes, timeout_ms: Optional[int]) -> None:
        """:meth:`send` with a timeout instead of a deadline, for messages up to 64 KiB:
        one blocking ``send`` bounded by SO_SNDTIMEO (set only when it changes), so a
        full socket buffer (a host that reads slower than we write) costs no ``poll``,
        no exception and no clock reading. SO_SNDTIMEO expiring with nothing written is
        the timeout; once part is written the rest follows without one (see
        :meth:`send`). ``close`` wakes a blocked call through :meth:`interrupt`."""
        if len(header) + len(body) > _GATHER or timeout_ms == 0:
            self.send(header, body, deadline_after(timeout_ms))
            return
        ms = timeout_ms if timeout_ms is not None and timeout_ms > 0 else 0  # 0: for ever
        if ms != self._sndtimeo and (self._sndtimeo == -1
                                     or not self._set_timeout(socket.SO_SNDTIMEO, ms)):
            self.send(header, body, deadline_after(timeout_ms))
            return
        self.fast_send_ms = timeout_ms
        self.send_frame(header + body)

    def send_frame(self, frame: bytes) -> None:
        """The end of :meth:`send_within`: one frame (header and body joined, at most
        FAST_FRAME bytes) in one blocking ``send`` bounded by the SO_SNDTIMEO in force.
        Hot paths call it directly while their timeout equals :attr:`fast_send_ms` (the
        one send_within set), saving the checks and the join of a second call."""
        try:
            sent = self.sock.send(frame, _NOSIGNAL)
        except BlockingIOError:
            raise TransportTimeout("timed out") from None
        except OSError as e:
            raise PeerGone(f"send failed: {e}") from None
        if sent != len(frame):
            self._finish(frame, sent, None)  # committed: the rest goes without a deadline

    def _finish(self, data: bytes, sent: int, deadline: Optional[float]) -> None:
        """Write the rest of ``data`` from ``sent`` on; the deadline holds only while
        nothing is written (see :meth:`send`). PeerGone for a broken connection."""
        view = memoryview(data)
        total = len(data)
        while sent < total:
            self.wait_writable(deadline if sent == 0 else None)
            try:
                sent += self.sock.send(view[sent:], _SEND_FLAGS)
            except BlockingIOError:
                pass
            except OSError as e:
                raise PeerGone(f"send failed: {e}", started=sent > 0) from None

    # --- receiving -------------------------------------------------------------------

    def next_frame(self) -> Optional[Tuple[Buffer, int, int]]:
        """A complete buffered message as (buffer, start, end), or None for more input.

        ProtocolViolation for a frame that is not SP or is over ``max_size``."""
        parts = self._parts
        if parts is not None:
            if self._need:
                return None
            self._parts = None
            msg = b"".join(parts)
            return msg, 0, len(msg)
        data, off = self._data, self._off
        have = len(data) - off
        if have < _HEADER_LEN:
            return None
        if data[off] != MSG_TYPE:
            raise ProtocolViolation(f"unknown SP message type {data[off]}")
        length = _U64.unpack_from(data, off + 1)[0]
        if self.max_size and length > self.max_size:
            raise ProtocolViolation(
                f"a message of {length} bytes is over the {self.max_size}-byte limit "
                f"(set {MAX_MSG_SIZE_ENV} to raise it)")
        end = off + _HEADER_LEN + length
        if end <= len(data):
            self._off = end
            return data, off + _HEADER_LEN, end
        if _HEADER_LEN + length > _BIG:
            # Receive the rest into pieces of its own, each taken only as bytes arrive.
            first = data[off + _HEADER_LEN:]
            self._parts = [first]
            self._need = length - len(first)
            self._data, self._off = b"", 0
        return None

    def fill(self) -> None:
        """Read what the kernel has (one call); PeerGone at the end of the stream."""
        try:
            if self._parts is not None:
                piece = self._piece
                if piece is None:
                    piece = self._piece = bytearray(min(self._need, _PIECE))
                    self._pieceview = memoryview(piece)
                    self._piecepos = 0
                assert self._pieceview is not None
                n = self.sock.recv_into(self._pieceview[self._piecepos:], 0, _DONTWAIT)
                if n:
                    self._piecepos += n
                    self._need -= n
                    if self._piecepos == len(piece):
                        self._parts.append(piece)
                        self._pieceview.release()
                        self._piece = self._pieceview = None
                    return
            else:
                chunk = self.sock.recv(_CHUNK, _DONTWAIT)
                if chunk:
                    if self._off >= len(self._data):
                        self._data = chunk
                    else:
                        self._data = self._data[self._off:] + chunk
                    self._off = 0
                    return
        except BlockingIOError:
            return
        except OSError as e:
            raise PeerGone(f"receive failed: {e}") from None
        raise PeerGone("the peer closed the connection")

    def read_reply(self, request_id: int, timeout_ms: int,
                   frame: Optional[bytes] = None) -> Optional[bytes]:
        """A REQ socket's usual receive in one blocking ``recv``, with ``frame`` (a whole
        request of at most FAST_FRAME bytes, while :attr:`fast_send_ms` is in force) sent
        first in one ``send``: a function call's send and receive in one method.

        The body of the reply to ``request_id`` when exactly that frame arrives alone.
        None when nothing happened: something was buffered before, ``timeout_ms`` cannot
        be set, or the send wrote nothing (its timeout passed, or the peer is gone); the
        caller then takes its long paths, which handle each case. Once something was read,
        :class:`ReplyPending` when it is not that lone reply (it is buffered for
        :meth:`next_frame`). TransportTimeout when ``timeout_ms`` (> 0; 0 waits for ever)
        passes first; PeerGone at the end of the stream, which is also what
        :meth:`interrupt` (``close`` from another thread) makes of a blocked call, and,
        with ``started``, for a request cut short by the peer going away."""
        if self._off < len(self._data) or self._parts is not None:
            return None
        if timeout_ms != self._rcvtimeo and (self._rcvtimeo == -1 or not self._set_timeout(
                socket.SO_RCVTIMEO, timeout_ms)):
            return None
        sock = self.sock
        if frame is not None:
            try:
                sent = sock.send(frame, _NOSIGNAL)
            except OSError:  # SO_SNDTIMEO passed with nothing written, or a broken pipe
                return None
            if sent != len(frame):
                self._finish(frame, sent, None)  # committed: see send
        try:
            chunk = sock.recv(_CHUNK)
        except BlockingIOError:
            raise TransportTimeout("timed out") from None
        except OSError as e:
            raise PeerGone(f"receive failed: {e}") from None
        n = len(chunk)
        if n >= _REQ_HEADER_LEN:
            kind, length, rid = _REQ_HEADER.unpack_from(chunk)
            if (kind == MSG_TYPE and length == n - _HEADER_LEN and rid == request_id
                    and (not self.max_size or length <= self.max_size)):
                return chunk[_REQ_HEADER_LEN:]
        elif not chunk:
            raise PeerGone("the peer closed the connection")
        self._data, self._off = chunk, 0
        raise ReplyPending

    def _set_timeout(self, option: int, ms: int) -> bool:
        """Set SO_RCVTIMEO or SO_SNDTIMEO (``ms`` 0: none). False if the system refuses
        it (a ``struct timeval`` of another layout, as with 64-bit time on some 32-bit
        systems): the connection then keeps to the polling paths for good (-1 cached)."""
        try:
            self.sock.setsockopt(socket.SOL_SOCKET, option,
                                 _TIMEVAL.pack(ms // 1000, (ms % 1000) * 1000))
        except (OSError, OverflowError, struct.error):
            self._rcvtimeo = self._sndtimeo = -1
            self.fast_send_ms = _UNSET
            return False
        if option == socket.SO_RCVTIMEO:
            self._rcvtimeo = ms
        else:
            self._sndtimeo = ms
            self.fast_send_ms = _UNSET  # send_within sets it for the new timeout
        return True

    def interrupt(self) -> None:
        """Wake a :meth:`read_reply` blocked in another thread (any thread may call it):
        the descriptor stays open (no other thread can get its number) until ``close``."""
        try:
            self.sock.shutdown(socket.SHUT_RDWR)
        except OSError:
            pass  # closed already, or never connected

    def read_frame(self, deadline: Optional[float]) -> Tuple[Buffer, int, int]:
        while True:
            frame = self.next_frame()
            if frame is not None:
                return frame
            self.wait_readable(deadline)
            self.fill()

    # --- connection setup and teardown -----------------------------------------------

    def handshake(self, proto: int, expect: int, deadline: Optional[float]) -> None:
        """Exchange SP connection headers; refuse a peer of any protocol but ``expect``.

        Bytes the peer sent right after its header (its first message) stay buffered."""
        self.send(connection_header(proto), b"", deadline)
        while not self.take_peer_header(expect):
            self.wait_readable(deadline)
            self.fill()

    def send_header_now(self, proto: int) -> None:
        """Send our connection header without waiting (a listener must not wait on one
        peer): 8 bytes always fit the empty buffer of a new connection."""
        head = connection_header(proto)
        try:
            n = self.sock.send(head, _SEND_FLAGS)
        except BlockingIOError:
            n = 0
        except OSError as e:
            raise PeerGone(f"send failed: {e}") from None
        if n != len(head):
            raise PeerGone("the connection header did not fit the socket buffer")

    def take_peer_header(self, expect: int) -> bool:
        """True once the peer's header has arrived (and matches ``expect``), False while
        fewer than 8 bytes are buffered; ProtocolViolation for anything else."""
        if len(self._data) - self._off < 8:
            return False
        head = self._data[self._off:self._off + 8]
        self._off += 8
        self.peer = parse_connection_header(head)
        if self.peer != expect:
            raise ProtocolViolation(f"peer speaks SP protocol {proto_name(self.peer)}, "
                                    f"expected {proto_name(expect)}")
        return True

    def peer_closed(self) -> bool:
        """Whether the peer has gone, without consuming anything (any thread)."""
        if self.dead:
            return True
        p = select.poll()
        try:
            p.register(self.fd, _POLLIN | getattr(select, "POLLRDHUP", 0))
            events = p.poll(0)
        except (OSError, ValueError):
            return True
        if not events:
            return False
        ev = events[0][1]
        if ev & _POLLGONE:
            return True
        try:  # readable: data or end of stream? Peek to tell (portable fallback).
            return self.sock.recv(1, socket.MSG_PEEK | _DONTWAIT) == b""
        except BlockingIOError:
            return False
        except OSError:
            return True

    def close(self) -> None:
        self.dead = True
        try:
            self.sock.close()
        except OSError:
            pass


def dial(path: str, proto: int, expect: int, wake_fd: int,
         timeout_s: float = NEGOTIATE_TIMEOUT_S, max_size: int = 0) -> Connection:
    """Connect to a listener and negotiate. Raises OSError, PeerGone, TransportClosed,
    TransportTimeout; the caller decides whether to retry."""
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    try:
        sock.setblocking(False)
        # A Unix-socket connect completes or fails at once; EAGAIN means a full backlog.
        sock.connect(path)
    except BaseException:
        sock.close()
        raise
    conn = Connection(sock, wake_fd, max_size)
    try:
        conn.handshake(proto, expect, time.monotonic() + timeout_s)
    except BaseException:
        conn.close()
        raise
    return conn


def remove_stale(path: str) -> None:
    """Unlink a socket file nobody listens on any more, as nng does before it binds.

    Only a socket file is removed, and only when a connect to it is refused."""
    try:
        if not stat.S_ISSOCK(os.lstat(path).st_mode):
            return
    except OSError:
        return
    probe = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    try:
        probe.setblocking(False)
        probe.connect(path)
    except ConnectionRefusedError:
        try:
            os.unlink(path)
        except OSError:
            pass
    except OSError:
        pass
    finally:
        probe.close()


#: Listening sockets bound before the transport was loaded, by path (ekl binds a plugin's
#: control socket before its launcher has loaded, so the plugin can dial at once); the next
#: ``listen`` on that path takes the socket instead of binding a new one.
_provided: Dict[str, Tuple[socket.socket, int]] = {}


def provide_listener(path: str, sock: socket.socket, ino: int) -> None:
    """Hand ``listen`` a socket already bound (to the file with inode ``ino``) and
    listening on ``path``; one-shot, and only while that file is still there."""
    _provided[path] = (sock, ino)


def listen(path: str, backlog: int = 128) -> Tuple[socket.socket, int]:
    """Bind and listen on ``path``; returns the socket and the file's inode (so that close
    removes the file only while it is still ours)."""
    given = _provided.pop(path, None)
    if given is not None:
        sock, ino = given
        try:
            if os.stat(path).st_ino == ino:
                sock.setblocking(False)
                return sock, ino
        except OSError:
            pass
        sock.close()  # its file was removed or replaced: bind anew
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    try:
        try:
            sock.bind(path)
        except OSError as e:
            if e.errno not in (errno.EADDRINUSE, errno.EEXIST):
                raise
            remove_stale(path)
            sock.bind(path)
        sock.listen(backlog)
        sock.setblocking(False)
        ino = os.stat(path).st_ino
    except BaseException:
        sock.close()
        raise
    return sock, ino
