"""The plugin's OS processes: start one, stream its output, kill its whole tree.

Owns everything about processes and nothing about the protocol: ``LaunchSpec`` (what to
start), ``PluginProcess`` (one started plugin) and the lifeline watchdog that kills the
plugins when the launcher itself dies (``lifeline``, ``watchdog``).
"""

from __future__ import annotations

import os
import signal
import threading
import time
from collections import deque

from ekuiper import lazylog
from ekuiper.record import field, record

from ..errors import EklError, PluginStartError
from ..fsafe import check_output_path
from ..settings import ERROR_TEXT_MAX_CHARS, OUTPUT_LINE_MAX_BYTES
from . import containment
from .lifeline import Lifeline

TYPE_CHECKING = False  # typing is not loaded at run time on the start path (docs/architecture.md)
if TYPE_CHECKING:
    from typing import IO, Any, Callable, Deque, Dict, List, Mapping, Optional, Tuple

if TYPE_CHECKING:  # psutil and subprocess are imported where used: an adopted early start
    import logging  # needs neither (issue 16), and logging loads at the first record
    import subprocess  # (ekuiper.lazylog)

    import psutil

log = lazylog.getLogger("ekl")

#: How many of the plugin's last stderr lines an error message may quote.
TAIL_LINES = 20
#: Appended to an output line cut at OUTPUT_LINE_MAX_BYTES.
CUT_MARKER = " [ekl: line cut at {limit} bytes; {skipped} more bytes skipped]"


def cap_text(text: Optional[str], limit: int = ERROR_TEXT_MAX_CHARS) -> Optional[str]:
    """An error text at most ``limit`` characters long (status files stay small)."""
    if text is None or len(text) <= limit:
        return text
    mark = " [ekl: text cut]"
    return text[:limit - len(mark)] + mark


def check_writable_file(path: str, option: str) -> None:
    """A file option the launcher will write to: one line now instead of a traceback later."""
    check_output_path(path, option)
    try:
        with open(path, "a"):  # the file is written soon anyway; root passes os.access
            pass
    except OSError as e:
        raise EklError(f"{option} {path}: cannot write it ({e.strerror}); give a path you "
                       f"can write") from None


@record(frozen=True)
class LaunchSpec:
    """Everything needed to start the plugin process, decided before it starts.

    Frozen, with ``env`` a read-only mapping: the start path computes every variable the
    plugin gets (environment activation, hosted SDK, socket folder) in one place, and
    nothing may add to it later.
    """

    name: str
    argv: Tuple[str, ...]
    cwd: str
    env: Mapping[str, str]
    interpreter: Optional[str] = None
    environment: Optional[str] = None
    #: where the interpreter choice came from (for messages)
    origin: str = ""
    #: the SDK the plugin will run: "ekl" (installed), "hosted" (ekl's, lent by ekl),
    #: "vendored" (ekl's, inside the plugin), "official", or None (Go, unknown wrapper)
    sdk: Optional[str] = None
    log_file: Optional[str] = None
    log_max_bytes: int = 10 * 1024 * 1024
    log_backups: int = 3
    #: the files the launch cache recorded this spec's resolution from, with their
    #: (mtime_ns, size, inode) or None when missing; empty when it did not come through the
    #: cache. Provenance, not part of the start: the early start's record keeps them.
    deps: Tuple[Tuple[str, Optional[Tuple[int, int, int]]], ...] = field(default=(),
                                                                          compare=False)

    @property
    def ekl_sdk(self) -> bool:
        """ekl's SDK honours EKUIPER_IPC_DIR and EKUIPER_CONTROL_URL; the official one does not."""
        return self.sdk in ("ekl", "hosted", "vendored")


def is_gone(p: psutil.Process | int) -> bool:
    """Dead, or a zombie waiting for a parent that is not us (PID 1 may never reap it)."""
    import psutil

    try:
        proc = p if isinstance(p, psutil.Process) else psutil.Process(p)
        return proc.status() == psutil.STATUS_ZOMBIE
    except psutil.NoSuchProcess:
        return True


class PluginProcess:
    """The plugin's process in its own process group, output streamed line by line."""

    def __init__(self, spec: LaunchSpec, lifeline: Optional[Lifeline] = None) -> None:
        self.spec = spec
        self.lifeline = lifeline
        #: a ``subprocess.Popen``, or the early start's ``Child`` (the same interface)
        self.popen: Optional[subprocess.Popen] = None
        self.stderr_tail: Deque[str] = deque(maxlen=TAIL_LINES)
        self.started_at: Optional[float] = None
        self._readers: List[threading.Thread] = []
        #: set once ``_watch`` has started the readers (``flush_output`` waits for it)
        self._readers_started = threading.Event()
        self._out = lazylog.getLogger(f"ekl.plugin.{spec.name}")
        #: set the moment the process exits (a thread blocks in wait(), so nobody polls)
        self.exited = threading.Event()
        self._on_exit: List[Callable[[], None]] = []
        self._file_handler: Optional[logging.Handler] = None
        #: unique per start; every descendant inherits it (containment.py says why)
        self.token = containment.new_token()

    @property
    def pid(self) -> Optional[int]:
        return self.popen.pid if self.popen else None

    def _open_log(self) -> None:
        spec = self.spec
        if spec.log_file and self._file_handler is None:
            import logging
            import logging.handlers  # only with --log-file: it pulls in pickle and socket

            try:
                h = logging.handlers.RotatingFileHandler(
                    spec.log_file, maxBytes=spec.log_max_bytes, backupCount=spec.log_backups)
            except OSError as e:
                raise PluginStartError(f"--log-file {spec.log_file}: cannot write it "
                                       f"({e.strerror}); give a path you can write") from None
            h.setFormatter(logging.Formatter("%(asctime)s %(message)s"))
            self._out.addHandler(h)
            self._file_handler = h

    def start(self) -> PluginProcess:
        spec = self.spec
        self._open_log()
        import subprocess

        containment.become_subreaper()  # orphans of the plugin come back to us, not to init
        env = dict(spec.env)
        env[containment.TOKEN_ENV] = self.token
        try:
            self.popen = subprocess.Popen(
                list(spec.argv), cwd=spec.cwd, env=env, stdin=subprocess.DEVNULL,
                stdout=subprocess.PIPE, stderr=subprocess.PIPE, start_new_session=True,
                close_fds=True)
        except OSError as e:
            raise PluginStartError(f"plugin {spec.name}: cannot run {spec.argv[0]}: "
                                   f"{e.strerror}") from None
        self._started()
        return self

    def adopt(self, child: Any, token: str) -> PluginProcess:
        """Take over the process the early start spawned for this spec (``early.py``):
        the same session, pipes and environment ``start`` gives, with ``token`` as its
        containment token; from here on nothing tells the two apart. Raises
        PluginStartError before taking it when ``--log-file`` cannot be written (the
        caller still owns ``child`` then)."""
        self._open_log()
        containment.become_subreaper()
        self.token = token
        self.popen = child
        self._started()
        return self

    def _started(self) -> None:
        assert self.popen is not None
        self.started_at = time.time()
        if self.lifeline is not None:
            self.lifeline.register(self.popen.pid, self.token)
        # One thread started here, which starts the two output readers and then waits for
        # the exit. Why not all three from here: ``Thread.start`` returns only once the new
        # thread runs, and while the plugin boots on the other core a new thread often
        # waits 1.3-1.5 ms for a CPU (perf sched, 2 cores); the start path paid that three
        # times (``ekl-python``'s first answer came 3 ms later).
        threading.Thread(target=self._watch, daemon=True,
                         name=f"{self.spec.name}-wait").start()

    def _watch(self) -> None:
        assert self.popen is not None
        try:
            for stream, is_err in ((self.popen.stdout, False), (self.popen.stderr, True)):
                t = threading.Thread(target=self._pump, args=(stream, is_err), daemon=True,
                                     name=f"{self.spec.name}-{'err' if is_err else 'out'}")
                t.start()
                self._readers.append(t)
        finally:  # even if a reader could not start: the exit must still be seen
            self._readers_started.set()
            self._wait()

    def _wait(self) -> None:
        assert self.popen is not None
        self.popen.wait()
        self.exited.set()
        for fn in list(self._on_exit):
            fn()

    def on_exit(self, fn: Callable[[], None]) -> None:
        """Call ``fn`` (from another thread) when the process exits; at once if it has."""
        self._on_exit.append(fn)
        if self.exited.is_set():
            fn()

    def _pump(self, stream: IO[bytes], is_err: bool) -> None:
        """Log each output line; a line longer than OUTPUT_LINE_MAX_BYTES is cut with a
        marker and the rest of it read in bounded chunks and dropped, never buffered."""
        prefix = f"[{self.spec.name}] "
        limit = OUTPUT_LINE_MAX_BYTES
        try:
            while True:
                raw = stream.readline(limit)
                if not raw:
                    break
                cut = ""
                if not raw.endswith(b"\n") and len(raw) >= limit:
                    skipped = 0
                    while True:  # skip to the end of this line, a chunk at a time
                        more = stream.readline(limit)
                        skipped += len(more)
                        if not more or more.endswith(b"\n"):
                            break
                    cut = CUT_MARKER.format(limit=limit, skipped=skipped)
                line = raw.decode("utf-8", "replace").rstrip("\n") + cut
                if is_err:
                    self.stderr_tail.append(line)
                self._out.info("%s%s", prefix, line)
        except (OSError, ValueError):
            pass  # the pipe was closed under us: nothing more to read
        finally:
            stream.close()

    def alive(self) -> bool:
        return self.popen is not None and self.popen.poll() is None

    @property
    def returncode(self) -> Optional[int]:
        return self.popen.poll() if self.popen else None

    def exit_description(self) -> str:
        rc = self.returncode
        if rc is None:
            return "running"
        if rc < 0:
            try:
                return f"killed by {signal.Signals(-rc).name}"
            except ValueError:
                return f"killed by signal {-rc}"
        return f"exited with code {rc}"

    def tail(self, n: int = 3) -> str:
        """The last stderr lines, joined on one line, for error messages."""
        self.flush_output()
        lines = [ln.strip() for ln in self.stderr_tail if ln.strip()][-n:]
        return cap_text(" | ".join(lines)) if lines else "(no output on stderr)"

    def flush_output(self, timeout: float = 1.0) -> None:
        """Wait for the output readers once the process is gone, so nothing is lost."""
        if self.alive():
            return
        end = time.monotonic() + timeout
        self._readers_started.wait(timeout)  # a process that died at once: its readers
        for t in self._readers:
            t.join(max(0.0, end - time.monotonic()))

    def tree(self, whole_group: bool = False) -> List[psutil.Process]:
        """The process and its descendants; with ``whole_group`` also every process left in
        its process group (orphans re-parented to init). The group scan reads every process
        on the machine, so health checks skip it and only the final kill pays for it.
        """
        import psutil

        if self.popen is None:
            return []
        procs: Dict[int, psutil.Process] = {}
        try:
            root = psutil.Process(self.popen.pid)
            procs[root.pid] = root
            for c in root.children(recursive=True):
                procs[c.pid] = c
        except psutil.NoSuchProcess:
            pass
        if not whole_group:
            return list(procs.values())
        pgid = self.popen.pid
        for p in psutil.process_iter(["pid"]):
            try:
                if p.pid not in procs and os.getpgid(p.pid) == pgid:
                    procs[p.pid] = p
            except (ProcessLookupError, psutil.Error, OSError):
                pass
        return list(procs.values())

    def kill_tree(self, stop_timeout: float = 5.0, sig: int = signal.SIGTERM) -> List[int]:
        """SIGTERM the tree, wait ``stop_timeout``, SIGKILL the rest; return the survivors.

        eKuiper SIGKILLs only the process it started, which orphans a ``conda run``
        wrapper's python child; here every descendant gets the signal.
        """
        import subprocess

        import psutil

        if self.popen is None:
            return []
        pgid = self.popen.pid
        procs = [p for p in self.tree() if p.pid != self.popen.pid]
        known = {p.pid for p in procs}
        for pid in containment.members(self.token, pgid):  # setsid children, daemons
            if pid not in known and pid != pgid:
                try:
                    procs.append(psutil.Process(pid))
                    known.add(pid)
                except psutil.Error:
                    pass
        for p in [*procs]:
            try:
                p.send_signal(sig)
            except psutil.Error:
                pass
        if self.popen.poll() is None:
            try:
                self.popen.send_signal(sig)
            except ProcessLookupError:
                pass
        end = time.monotonic() + stop_timeout
        try:
            self.popen.wait(max(0.0, end - time.monotonic()))
        except subprocess.TimeoutExpired:
            pass
        _, rest = psutil.wait_procs(procs, timeout=max(0.0, end - time.monotonic()))
        if self.popen.poll() is None:
            log.warning("plugin %s did not stop within %.1f s after %s; killing it",
                        self.spec.name, stop_timeout, signal.Signals(sig).name)
            self.popen.kill()
        for p in rest:
            try:
                p.kill()
            except psutil.Error:
                pass
        try:
            os.killpg(pgid, signal.SIGKILL)  # anything that appeared since
        except (ProcessLookupError, PermissionError):
            pass
        self.popen.wait()
        for _ in range(3):  # a daemon may have forked while we killed: until none is left
            late = [pid for pid in containment.members(self.token) if not is_gone(pid)]
            if not late:
                break
            for pid in late:
                try:
                    os.kill(pid, signal.SIGKILL)
                except OSError:
                    pass
                try:
                    rest.append(psutil.Process(pid))
                except psutil.Error:
                    pass
                known.add(pid)
        _, survivors = psutil.wait_procs(rest, timeout=1.0)
        survivors = [p for p in survivors if not is_gone(p)]
        containment.reap(known)  # orphans the subreaper adopted leave no zombie behind
        if self.lifeline is not None:
            self.lifeline.unregister(pgid, self.token)
        self.flush_output()
        return [p.pid for p in survivors]

    def close_log(self) -> None:
        if self._file_handler is not None:
            self._out.removeHandler(self._file_handler)
            self._file_handler.close()
            self._file_handler = None
