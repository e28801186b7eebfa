"""Feedback for work that takes a while: a spinner or bar on a terminal, plain lines otherwise.

Everything goes to stderr, so ``--json`` output on stdout stays machine-readable. On a
terminal a step shows a spinner with the elapsed time and ends as one line (``✓``/``✗``);
in a pipe or a CI log each step prints one plain line when it starts (no control
characters, nothing rewritten). ``EKL_PROGRESS`` overrides the detection: ``tty`` forces
the animated form, ``plain`` the line form, ``off`` silences both.
"""

from __future__ import annotations

import contextlib
import os
import sys
import threading
import time

TYPE_CHECKING = False  # typing is not loaded at run time on the start path (docs/architecture.md)
if TYPE_CHECKING:
    from typing import IO, Iterator, Optional

PROGRESS_ENV = "EKL_PROGRESS"
FRAMES = "⠋⠙⠹⠸⠼⠴⠦⠧⠇⠏"
FRAME_S = 0.1


def _mode(stream: IO[str]) -> str:
    forced = os.environ.get(PROGRESS_ENV, "").strip().lower()
    if forced in ("tty", "plain", "off"):
        return forced
    try:
        return "tty" if stream.isatty() and os.environ.get("TERM") != "dumb" else "plain"
    except (AttributeError, ValueError):
        return "plain"


class Progress:
    """Steps (spinner) and counted work (bar) for one command run."""

    def __init__(self, stream: Optional[IO[str]] = None, quiet: bool = False) -> None:
        self.stream: IO[str] = stream or sys.stderr
        self.mode = "off" if quiet else _mode(self.stream)

    # --- output primitives ---------------------------------------------------------------

    def _write(self, text: str) -> None:
        try:
            self.stream.write(text)
            self.stream.flush()
        except (OSError, ValueError):
            pass  # a closed stderr must not break the command

    def line(self, text: str) -> None:
        """A plain message line (both modes)."""
        if self.mode != "off":
            self._write(f"ekl: {text}\n")

    # --- a step with a spinner ---------------------------------------------------------

    @contextlib.contextmanager
    def step(self, text: str, tty_only: bool = False) -> Iterator[None]:
        """Show ``text`` while the block runs; on a terminal, a spinner and the time taken.

        ``tty_only``: a step that usually takes no time and may end in a one-line error
        (bad input) shows only as a spinner, never as a plain line before that error.
        """
        if self.mode == "off" or (tty_only and self.mode == "plain"):
            yield
            return
        if self.mode == "plain":
            self._write(f"ekl: {text} ...\n")
            yield
            return
        t0 = time.monotonic()
        done = threading.Event()

        def spin() -> None:
            i = 0
            while not done.wait(FRAME_S):
                i += 1
                self._write(f"\r\x1b[K{FRAMES[i % len(FRAMES)]} {text} "
                            f"({time.monotonic() - t0:.1f} s)")

        self._write(f"{FRAMES[0]} {text}")
        t = threading.Thread(target=spin, name="ekl-spinner", daemon=True)
        t.start()
        ok = False
        try:
            yield
            ok = True
        finally:
            done.set()
            t.join()
            mark = "✓" if ok else "✗"
            self._write(f"\r\x1b[K{mark} {text} ({time.monotonic() - t0:.1f} s)\n")

    # --- counted work ------------------------------------------------------------------

    def bar(self, total: int, text: str) -> Bar:
        return Bar(self, total, text)


class Bar:
    """``[#####.....] 12/40 text: current item`` on a terminal; one start line otherwise."""

    WIDTH = 24

    def __init__(self, progress: Progress, total: int, text: str) -> None:
        self.p = progress
        self.total = max(total, 0)
        self.text = text
        self.n = 0
        self._last = 0.0
        if progress.mode == "plain":
            progress._write(f"ekl: {text} ({total} item{'s' if total != 1 else ''}) ...\n")

    def advance(self, label: str = "", n: int = 1) -> None:
        self.n += n
        if self.p.mode != "tty":
            return
        now = time.monotonic()
        if now - self._last < 0.05 and self.n < self.total:
            return  # at most 20 redraws a second
        self._last = now
        filled = int(self.WIDTH * self.n / self.total) if self.total else self.WIDTH
        bar = "#" * filled + "." * (self.WIDTH - filled)
        self.p._write(f"\r\x1b[K[{bar}] {self.n}/{self.total} {self.text}: {label[-40:]}")

    def close(self, ok: bool = True) -> None:
        if self.p.mode == "tty":
            self.p._write(f"\r\x1b[K{'✓' if ok else '✗'} {self.text}: {self.n}/{self.total}\n")

    def __enter__(self) -> Bar:
        return self

    def __exit__(self, exc_type: object, *_: object) -> None:
        self.close(ok=exc_type is None)
