"""Fixtures for the transport tests: short socket paths, real peers, no strays.

Unix socket paths are limited to 107 bytes, so every test gets its own short folder
under /tmp (pytest's tmp_path is too long); that also lets tests run in parallel.
"""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import tempfile
import threading
import time
from typing import Callable, Iterator, List

import pytest

NNGCAT = shutil.which("nngcat")


def read_exact(c: socket.socket, n: int) -> bytes:
    """Exactly ``n`` bytes from a raw peer socket (its timeout bounds the wait)."""
    buf = b""
    while len(buf) < n:
        chunk = c.recv(n - len(buf))
        assert chunk, "peer closed"
        buf += chunk
    return buf


def read_until_quiet(c: socket.socket, quiet_s: float = 0.5) -> bytes:
    """Everything a raw peer socket receives until it is quiet for ``quiet_s`` or closed."""
    c.settimeout(quiet_s)
    data = b""
    try:
        while True:
            part = c.recv(1 << 20)
            if not part:
                break
            data += part
    except socket.timeout:
        pass
    return data


def closed_by_peer(c: socket.socket, timeout: float = 3.0) -> bool:
    """Whether the other end closed ``c`` (reads what it sends until end of stream)."""
    c.settimeout(timeout)
    try:
        while c.recv(65536):
            pass
    except socket.timeout:
        return False
    except OSError:
        return True
    return True


def in_thread(fn: Callable[[], object]) -> threading.Thread:
    t = threading.Thread(target=fn, daemon=True)
    t.start()
    return t


class Blocked:
    """``call`` running in a daemon thread until something ends it: the shape of every
    "close from another thread wakes a blocked send or recv" test. Start it, check that it
    blocks (``alive``), then ``ended_by(close, timeout)`` returns the one exception the
    call raised."""

    def __init__(self, call: Callable[[], object]) -> None:
        self.errors: List[BaseException] = []

        def run() -> None:
            try:
                call()
            except BaseException as e:  # the test looks at it
                self.errors.append(e)

        self.thread = in_thread(run)

    def alive(self) -> bool:
        return self.thread.is_alive()

    def ended_by(self, action: Callable[[], object], timeout: float) -> BaseException:
        """Run ``action``; the call must end within ``timeout``, by exactly one exception."""
        action()
        self.thread.join(timeout)
        assert not self.thread.is_alive()
        assert len(self.errors) == 1, self.errors
        return self.errors[0]


@pytest.fixture
def ipc_url() -> Iterator[Callable[[str], str]]:
    d = tempfile.mkdtemp(prefix="ekt", dir="/tmp")

    def url(name: str) -> str:
        return f"ipc://{d}/{name}.ipc"

    yield url
    shutil.rmtree(d, ignore_errors=True)


def wait_for(cond: Callable[[], object], timeout: float = 3.0, step: float = 0.01) -> bool:
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        if cond():
            return True
        time.sleep(step)
    return bool(cond())


@pytest.fixture(name="wait_for")
def wait_for_fixture() -> Callable[..., bool]:
    return wait_for


class Procs:
    """Child processes of one test; all of them are killed and reaped at its end."""

    def __init__(self) -> None:
        self.procs: List[subprocess.Popen] = []

    def start(self, argv: List[str], **kw: object) -> subprocess.Popen:
        p = subprocess.Popen(argv, stdout=kw.pop("stdout", subprocess.DEVNULL),
                             stderr=subprocess.PIPE, **kw)  # type: ignore[call-overload]
        self.procs.append(p)
        return p

    def nngcat(self, *args: str, listen_path: str = "", **kw: object) -> subprocess.Popen:
        if NNGCAT is None:
            pytest.skip("nngcat (Debian nng-utils) is not installed")
        p = self.start([NNGCAT, *args], **kw)
        if listen_path:
            assert wait_for(lambda: os.path.exists(listen_path) or p.poll() is not None), \
                "nngcat did not listen"
            assert p.poll() is None, p.stderr.read() if p.stderr else ""
        return p

    def kill(self, p: subprocess.Popen, sig: int = signal.SIGKILL) -> None:
        if p.poll() is None:
            p.send_signal(sig)
        p.wait(5)

    def close(self) -> None:
        for p in self.procs:
            if p.poll() is None:
                p.kill()
            p.wait(5)
            for s in (p.stdout, p.stderr):
                if s is not None:
                    s.close()


@pytest.fixture
def procs() -> Iterator[Procs]:
    ps = Procs()
    yield ps
    ps.close()
    assert all(p.returncode is not None for p in ps.procs)
