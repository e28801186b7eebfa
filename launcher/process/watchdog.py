"""A watchdog that kills the launcher's plugins when the launcher dies, even by SIGKILL.

The launcher starts this file as a separate process (not a child of any plugin) with a
pipe on its stdin, and writes ``+PGID`` / ``-PGID`` lines as plugins start and stop, and
``+/path`` / ``-/path`` lines for files and private folders to remove if it dies. When the
pipe reaches EOF the launcher is gone: every registered process group gets SIGTERM, then
SIGKILL after a short grace, so nothing outlives the launcher by more than ~1 s; then the
registered paths are removed, so a SIGKILLed launcher leaves no socket files behind.

This file must stay runnable on its own (no package imports): it starts on every launch.
"""

import os
import signal
import sys
import time

GRACE_S = 0.8


def _alive(pgid):
    try:
        os.killpg(pgid, 0)
        return True
    except (ProcessLookupError, PermissionError):
        return False


def main():
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # the terminal's Ctrl-C is the launcher's
    groups = set()
    paths = set()
    for line in sys.stdin:
        line = line.rstrip("\n")
        if len(line) < 2 or line[0] not in "+-":
            continue
        if line[1] == "/":
            (paths.add if line[0] == "+" else paths.discard)(line[1:])
        elif line[1:].isdigit():
            (groups.add if line[0] == "+" else groups.discard)(int(line[1:]))
    live = [g for g in groups if _alive(g)]
    for g in live:
        try:
            os.killpg(g, signal.SIGTERM)
        except OSError:
            pass
    end = time.monotonic() + GRACE_S
    while live and time.monotonic() < end:
        time.sleep(0.05)
        live = [g for g in live if _alive(g)]
    for g in live:
        try:
            os.killpg(g, signal.SIGKILL)
        except OSError:
            pass
    for path in paths:
        _remove(path)


def _remove(path):
    """A registered file, or a private folder with the files in it (never a tree)."""
    try:
        if os.path.isdir(path) and not os.path.islink(path):
            for name in os.listdir(path):
                try:
                    os.unlink(os.path.join(path, name))
                except OSError:
                    pass
            os.rmdir(path)
        else:
            os.unlink(path)
    except OSError:
        pass


if __name__ == "__main__":
    main()
