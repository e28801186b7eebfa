"""ekuiper.sigevent.SignalEvent: set from a signal handler in the thread that waits on it.

threading.Event can hang there for good (its wait holds a lock the handler's set needs;
``ekl supervise`` hung on SIGTERM that way in a CI run). Real signals, in this process.
"""

from __future__ import annotations

import signal
import threading
import time

import pytest

from ekuiper.sigevent import SignalEvent


@pytest.fixture
def alarm():
    """SIGALRM every ``interval`` seconds calling ``fn``; stopped afterwards."""
    old = signal.getsignal(signal.SIGALRM)

    def start(fn, interval: float) -> None:
        signal.signal(signal.SIGALRM, lambda *_: fn())
        signal.setitimer(signal.ITIMER_REAL, interval, interval)

    yield start
    signal.setitimer(signal.ITIMER_REAL, 0)
    signal.signal(signal.SIGALRM, old)


def test_a_handler_wakes_the_thread_it_interrupts(alarm):
    ev = SignalEvent()
    try:
        alarm(ev.set, 0.05)
        t0 = time.monotonic()
        assert ev.wait(10)
        assert time.monotonic() - t0 < 5 and ev.is_set()
    finally:
        ev.close()


def test_a_storm_of_handlers_in_a_wait_and_clear_loop_never_hangs(alarm):
    """The arbiter's loop: wait, clear, look; a signal every 0.2 ms lands in every part."""
    ev = SignalEvent()
    seen = 0
    try:
        alarm(ev.set, 0.0002)
        end = time.monotonic() + 1.0
        while time.monotonic() < end:
            if ev.wait(0.01):
                seen += 1
            ev.clear()
    finally:
        ev.close()
    assert seen > 10


def test_it_behaves_as_an_event_across_threads():
    ev = SignalEvent()
    try:
        assert not ev.is_set() and not ev.wait(0.05)
        threading.Timer(0.05, ev.set).start()
        assert ev.wait(10) and ev.wait(0) and ev.is_set()
        ev.set()  # twice: still one event
        ev.clear()
        assert not ev.is_set() and not ev.wait(0.01)
    finally:
        ev.close()
