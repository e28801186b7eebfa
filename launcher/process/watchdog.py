"""A watchdog that kills the launcher's plugins when the launcher dies, even by SIGKILL.

The launcher starts this file as a separate process (not a child of any plugin) with a
pipe on its stdin, and writes ``+PGID`` / ``-PGID`` lines as plugins start and stop, and
``+/path`` / ``-/path`` lines for files and private folders to remove if it dies, and
``+=TOKEN`` / ``-=TOKEN`` lines for each plugin start's containment token. When the pipe
reaches EOF the launcher is gone: every registered process group and every process whose
environment carries a registered token (``setsid`` children, double-forked daemons) gets
SIGTERM, then SIGKILL after a short grace, so nothing outlives the launcher by more than
~1 s; then the registered paths are removed, so a SIGKILLed launcher leaves no socket
files behind. It is no child subreaper: it starts no process, and the plugins are not its
descendants (their orphans go to the launcher, a subreaper, and once it is dead to init or
an outer subreaper, where the token scan finds them); ``ctypes`` for that ``prctl`` was a
fifth of this process's start, which every plugin start pays.

It is started parked (``early.watchdog_argv``): a shell holds the pipe until the first
line (the launcher opens every write with an empty one) or EOF, then execs this file with
the registry in its argv, so its Python's start (about 8 ms of CPU) is not spent while
a plugin boots; SIGTERM while parked execs it with ``now`` (clean up at once).

This file must stay runnable on its own (no package imports): it starts on every launch.
"""

import os
import sys
import time

try:  # the built-in half of signal: signal.py loads enum, a third of this process's start
    import _signal as signal
except ImportError:  # not CPython
    import signal

GRACE_S = 0.8
TOKEN_ENV = "EKL_CONTAINMENT"  # process/containment.py's TOKEN_ENV


def _tagged(tokens):
    """Pids whose environment carries one of ``tokens`` (read from /proc)."""
    if not tokens:
        return []
    needles = [f"{TOKEN_ENV}={t}\0".encode() for t in tokens]
    me = os.getpid()
    out = []
    try:
        names = os.listdir("/proc")
    except OSError:
        return out
    for name in names:
        if not name.isdigit() or int(name) == me:
            continue
        try:
            with open(f"/proc/{name}/environ", "rb") as f:
                env = f.read(1 << 20)
        except OSError:
            continue
        if any(n in env for n in needles):
            out.append(int(name))
    return out


def _kill_tagged(tokens, sig):
    pids = _tagged(tokens)
    for pid in pids:
        try:
            os.kill(pid, sig)
        except OSError:
            pass
    return pids


def _alive(pgid):
    try:
        os.killpg(pgid, 0)
        return True
    except (ProcessLookupError, PermissionError):
        return False


class _Terminated(Exception):
    pass


def _on_term(_signum, _frame):
    raise _Terminated()


def main():
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # the terminal's Ctrl-C is the launcher's
    # SIGTERM (an outer launcher stopping the tree this launcher runs in) means the same as
    # the launcher's death: clean up now, before a SIGKILL can follow
    signal.signal(signal.SIGTERM, _on_term)
    groups = set()
    tokens = set()
    paths = set()

    def apply(line):
        if len(line) < 2 or line[0] not in "+-":
            return
        if line[1] == "/":
            (paths.add if line[0] == "+" else paths.discard)(line[1:])
        elif line[1] == "=":
            (tokens.add if line[0] == "+" else tokens.discard)(line[2:])
        elif line[1:].isdigit():
            (groups.add if line[0] == "+" else groups.discard)(int(line[1:]))

    # The registry a respawned watchdog inherits comes in its argv, so it holds from the
    # moment the process exists (written to the pipe after the spawn, it would be lost if
    # the launcher died in between); later changes come on stdin.
    for arg in sys.argv[1:]:
        apply(arg)
    # ``now``: SIGTERM came while this watchdog was parked in its shell (early.py's
    # PARK_SCRIPT), which execs it with this word: clean up without reading on
    if "now" not in sys.argv[1:]:
        try:
            for line in sys.stdin:  # the empty line opening each write is ignored
                apply(line.rstrip("\n"))
        except _Terminated:
            pass
    signal.signal(signal.SIGTERM, signal.SIG_IGN)
    for path in paths:  # first: a SIGKILL may end the watchdog during the grace below
        _remove(path)
    live = [g for g in groups if _alive(g)]
    for g in live:
        try:
            os.killpg(g, signal.SIGTERM)
        except OSError:
            pass
    tagged = _kill_tagged(tokens, signal.SIGTERM)
    end = time.monotonic() + GRACE_S
    while (live or tagged) and time.monotonic() < end:
        time.sleep(0.05)
        live = [g for g in live if _alive(g)]
        tagged = [p for p in tagged if _pid_alive(p)]
    for g in live:
        try:
            os.killpg(g, signal.SIGKILL)
        except OSError:
            pass
    for _ in range(3):  # a daemon may fork while it is being killed
        if not _kill_tagged(tokens, signal.SIGKILL):
            break
        time.sleep(0.05)
    for path in paths:  # again: a dying plugin may have left a socket file since
        _remove(path)


def _pid_alive(pid):
    try:
        with open(f"/proc/{pid}/stat", "rb") as f:
            stat = f.read()
        return stat[stat.rindex(b")") + 2:][:1] != b"Z"
    except (OSError, ValueError):
        return False


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
