"""An event a signal handler may set while the main thread waits on it.

Python runs signal handlers in the main thread, between two bytecodes of whatever it was
doing. ``threading.Event.wait`` holds its condition's lock for a moment around the actual
wait; a handler that lands in that moment and calls ``Event.set`` (or ``clear``) blocks on
a lock its own thread holds: the process hangs for good. It was seen: ``ekl supervise``
hung on SIGTERM in a CI run, its main thread in ``Event.set`` inside ``Event.wait``.
``SignalEvent.set`` is an assignment and one non-blocking pipe write, and ``wait`` polls
the pipe, so a handler never waits for anything the interrupted code holds. Both the
plugin runtime and ekl's launcher use it for the stop their signal handlers request.
"""

from __future__ import annotations

import os
import select

TYPE_CHECKING = False  # typing is not loaded at run time on the start path (docs/architecture.md)
if TYPE_CHECKING:
    from typing import Optional


class SignalEvent:
    """``set``/``is_set``/``wait``/``clear`` as ``threading.Event``; safe to ``set`` from a
    signal handler in the thread that waits. ``clear`` is for the waiting thread only."""

    def __init__(self) -> None:
        self._flag = False
        self._r, self._w = os.pipe()  # close-on-exec: no child inherits them
        os.set_blocking(self._r, False)
        os.set_blocking(self._w, False)

    def is_set(self) -> bool:
        return self._flag

    def set(self) -> None:
        self._flag = True
        try:
            os.write(self._w, b"x")  # wakes every poll; a full pipe is awake already
        except OSError:
            pass  # full (BlockingIOError) or closed

    def clear(self) -> None:
        self._flag = False
        try:
            while os.read(self._r, 4096):
                pass
        except OSError:
            pass  # drained (BlockingIOError) or closed

    def wait(self, timeout: Optional[float] = None) -> bool:
        """True once set; False when ``timeout`` seconds pass first."""
        if self._flag:
            return True
        poll = select.poll()
        poll.register(self._r, select.POLLIN)
        try:
            poll.poll(None if timeout is None else max(0, int(timeout * 1000)))
        except InterruptedError:
            pass  # a signal: its handler has run; the flag says whether it set us
        return self._flag

    def close(self) -> None:
        for fd in (self._r, self._w):
            try:
                os.close(fd)
            except OSError:
                pass
