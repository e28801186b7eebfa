"""The early start: the plugin spawned before the launcher has loaded, from a recorded start.

Why: a plugin's own interpreter and SDK take about as long to boot as ``ekl-python`` or
``ekl call`` take to load the launcher (logging, typing, the transport, argparse...).
Done one after the other, every start costs both (issue 16: ``ekl-python`` at 2.3x the
bare plugin, ``ekl call`` at 2.6x). Here the entry point, having imported nothing but
``os`` and ``sys``, looks for a *record* of an earlier identical start, and if it finds one
whose files are unchanged it spawns the plugin at once; the launcher then loads while
the plugin boots. Disabled with ``EKL_EARLY_START=0``.

It is a prediction, never a decision. The normal start path still decides everything
(``start.prepare``, ``PluginInstance.spawn``) and, at the point where it would spawn,
compares what it decided (argv, folder, environment, control socket) with what was
spawned: equal, it adopts the process and the listening control socket as if it had
started them; different, the early process tree is killed and the plugin started anew.
A verb that ends before spawning anything (bad input, ``--help``) kills it too. So the
one visible difference a wrong prediction can make is a plugin process that ran its
imports and was killed, which only happens after a start of the very same command line.

A record (``early-KEY`` in the launch cache folder, written by the normal path after it
spawned) is keyed on: the program (``ekl``/``ekl-python``), its arguments (for
``ekl call``, ``tail`` and ``source`` names and JSON arguments after the plugin are left
out, see ``arm``), the current folder, every environment variable but the volatile ones,
the interpreter and ekl's version. It is valid while the files the launch cache recorded
for the start (plugin JSON, interpreter, environment prefix, lent SDK...) keep their
mtime, size and inode. It is NUL-separated text, read without ``json``: this module must
not import anything that costs time (``tests/test_relay_start.py`` checks).

Containment holds from the first instant: the plugin gets its own session and
containment token, and the lifeline watchdog is spawned right after it with the plugin's
group, token and private folder in its argv (parked in a shell until it is needed, see
``watchdog_argv``); the launcher's ``Lifeline`` adopts that watchdog when it is first
used, so a SIGKILLed launcher leaves nothing behind at any moment. Not available before
the launcher loads: the child subreaper (``ctypes``); it is set when the process is
adopted, and until then the token scan finds what a double-fork hides.
"""

from __future__ import annotations

import os
import sys

from . import __version__

TYPE_CHECKING = False  # not typing's: importing typing alone costs 3-5 ms at every start
if TYPE_CHECKING:
    from typing import Callable, Dict, List, Mapping, Optional, Sequence, Tuple

    #: (mtime_ns, size, inode) of a recorded file, or None when it was missing.
    Sig = Optional[Tuple[int, int, int]]

#: ``EKL_EARLY_START=0`` turns the early start off (records are neither read nor written).
DISABLE_ENV = "EKL_EARLY_START"
#: Same as ``process.containment.TOKEN_ENV`` (a test checks): importing that module is
#: what this one avoids.
TOKEN_ENV = "EKL_CONTAINMENT"
#: Variables that differ between identical calls and that resolution never reads; neither
#: the early key nor the launch cache's (``start/cache.py``) includes them. The containment
#: token is new at every start of a process ekl supervises: an ``ekl-python`` run by ekl
#: (or a plugin that runs ``ekl call``) inherits it, and with it in a key every start missed.
VOLATILE_ENV = frozenset({"_", "PWD", "OLDPWD", TOKEN_ENV})
#: The launch cache's folder: ``$EKL_CACHE_DIR``, else ``$XDG_CACHE_HOME/ekl`` or
#: ``~/.cache/ekl`` (the same variables as ``ekl.envs.probe.cache_dir``; tests check).
CACHE_ENV = "EKL_CACHE_DIR"
CACHE_SUBDIR = "launch"
RECORD_PREFIX = "early-"
#: Bump when the record's layout or its key changes.
FORMAT = 1
MAGIC = b"ekl-early"
#: A record is a few kilobytes; anything larger is not one of ours.
MAX_RECORD_BYTES = 1024 * 1024
#: The private socket folders' name prefix in /tmp (``host.ipc.private_ipc_dir``).
PRIVATE_PREFIX = "ekl-"
#: The lifeline watchdog's script, beside the process package.
WATCHDOG = os.path.join(os.path.dirname(os.path.abspath(__file__)), "process", "watchdog.py")

try:  # CPython's built-in SHA-256: hashlib would load OpenSSL on every start just for this
    from _sha2 import sha256 as sha256  # type: ignore[import-not-found]  # 3.12+
except ImportError:
    try:
        from _sha256 import sha256 as sha256  # type: ignore[import-not-found,no-redef]
    except ImportError:
        from hashlib import sha256 as sha256  # type: ignore[assignment]


def cache_root(environ: Optional[Mapping[str, str]] = None) -> str:
    env = os.environ if environ is None else environ
    return env.get(CACHE_ENV) or os.path.join(
        env.get("XDG_CACHE_HOME") or os.path.expanduser("~/.cache"), "ekl")


def record_folder() -> str:
    return os.path.join(cache_root(), CACHE_SUBDIR)


def signature(path: str) -> Sig:
    try:
        st = os.stat(path)
    except OSError:
        return None
    return (st.st_mtime_ns, st.st_size, st.st_ino)


def safe_folder(folder: str) -> bool:
    """Our own real folder, writable by nobody else (a record names a program to run); the
    rule of ``fsafe.ensure_private_dir``, checked without creating anything."""
    try:
        st = os.lstat(folder)
    except OSError:
        return False
    return ((st.st_mode & 0o170000) == 0o040000 and st.st_uid == os.geteuid()
            and not st.st_mode & 0o022)


def make_private_dir(prefix: str = PRIVATE_PREFIX,
                     claim: Optional[Callable[[str], None]] = None,
                     unclaim: Optional[Callable[[str], None]] = None) -> Optional[str]:
    """A new 0700 folder in ``/tmp`` (not ``$TMPDIR``: socket paths must stay under 107
    bytes), as ``tempfile.mkdtemp`` makes one (a random name, ``mkdir`` failing on a taken
    one, tried again) without importing it; None when 100 names were all taken.

    ``claim(path)`` runs before each ``mkdir`` and ``unclaim(path)`` after one that failed.
    ``Lifeline.private_dir`` passes its watchdog's registration, so the watchdog knows of
    the folder before it exists and a launcher SIGKILLed at any instant leaves none
    behind. The early start passes none: its watchdog gets the folder in its argv, spawned
    about a millisecond after the folder is made (docs/launcher.md)."""
    for _ in range(100):
        d = f"/tmp/{prefix}{os.urandom(5).hex()}"
        if claim is not None:
            claim(d)
        try:
            os.mkdir(d, 0o700)
        except FileExistsError:
            if unclaim is not None:
                unclaim(d)
            continue
        os.chmod(d, 0o700)  # mkdir's 0700 is still subject to an odd umask such as 0277
        return d
    return None


def new_token() -> str:
    return os.urandom(16).hex()  # as uuid4().hex, without importing uuid (and platform)


#: The shell a new watchdog waits in ("parked") before its Python starts.
PARK_SHELL = "/bin/sh"
#: A parked watchdog: ``read`` takes the first line (the wake-up line, ``Lifeline`` opens
#: every write with one) or the pipe's EOF (the launcher died), then ``exec`` runs the
#: Python watchdog, which reads the rest; SIGTERM while parked execs it with ``now``
#: (clean up at once, as its own SIGTERM handler does); SIGINT is ignored, as it ignores
#: it. dash and bash read a pipe a byte at a time, so nothing past that line is taken.
PARK_SCRIPT = 'trap "" INT; trap \'exec "$@" now\' TERM; read -r _; exec "$@"'


def watchdog_argv(registry: Sequence[str]) -> List[str]:
    """The lifeline watchdog's command line, parked in ``PARK_SHELL`` where there is one.

    Why parked: its Python (``-S -E``: it needs nothing from site) takes about 8 ms of CPU
    to start, and it was spawned while the plugin boots and the launcher loads, the two
    things a start waits for: on 2 cores that CPU came out of the start (1.5-3 ms of
    ``ekl-python``'s, measured). A shell starts in about 1 ms and then only waits; the
    Python starts when the launcher first has something to tell it (after the start, in
    practice: adopted registries are not written again), or when it is needed. The
    registry is in the argv either way, so a launcher SIGKILLed at any moment is covered.
    """
    dog = [sys.executable, "-S", "-E", WATCHDOG, *registry]
    if not os.access(PARK_SHELL, os.X_OK):
        return dog
    return [PARK_SHELL, "-c", PARK_SCRIPT, "ekl-watchdog", *dog]


#: The watchdog's nice value. Its interpreter's start (about 8 ms of CPU) may come while
#: plugins boot; niced, it takes a core they leave idle. Its job (a blocking read, then
#: kill calls) needs next to no CPU, and a nice-10 process still gets a tenth of a busy
#: core.
WATCHDOG_NICE = 10


def nice_watchdog(pid: int) -> None:
    try:
        os.setpriority(os.PRIO_PROCESS, pid, WATCHDOG_NICE)
    except (OSError, AttributeError):
        pass  # already gone, or no setpriority here: it runs at the launcher's priority


# --- the key ----------------------------------------------------------------------------


def _enc(text: str) -> bytes:
    return text.encode("utf-8", "surrogateescape")


class _Key:
    """The key of this process's start, but for the arguments: computed once at entry."""

    def __init__(self, program: str, argv: Sequence[str]) -> None:
        self.program = program
        self.argv = list(argv)
        h = sha256()
        for part in (f"format={FORMAT}", f"program={program}", f"ekl={__version__}",
                     f"executable={sys.executable}", f"cwd={os.getcwd()}"):
            h.update(_enc(part) + b"\0")
        env = os.environ
        for k in sorted(env):
            if k not in VOLATILE_ENV:
                h.update(_enc(f"{k}={env[k]}") + b"\0")
        self._base = h

    def of(self, n: int) -> str:
        """The key when the first ``n`` arguments are what decides the start."""
        h = self._base.copy()
        for a in self.argv[:n]:
            h.update(b"arg=" + _enc(a) + b"\0")
        h.update(_enc(f"args={n}"))
        return h.hexdigest()[:40]


# --- records ----------------------------------------------------------------------------


class Record:
    """One recorded start: what the normal path spawned, with its private folder's name."""

    def __init__(self, key: str, argv: Sequence[str], cwd: str, env: Mapping[str, str],
                 unset: Sequence[str], control: str, private: str,
                 deps: Sequence[Tuple[str, Sig]]) -> None:
        self.key = key
        self.argv = list(argv)
        self.cwd = cwd
        #: the plugin's environment as changes to the caller's (set, then ``unset``): the
        #: key covers the caller's, so they rebuild it exactly, and what the caller's
        #: environment holds (tokens, passwords) is never written to the cache
        self.env = dict(env)
        self.unset = list(unset)
        self.control = control
        self.private = private
        self.deps = list(deps)

    def encode(self) -> bytes:
        fields = [MAGIC.decode(), str(FORMAT), self.key, self.cwd, self.control, self.private,
                  str(len(self.argv)), *self.argv,
                  str(len(self.env)), *(f"{k}={v}" for k, v in sorted(self.env.items())),
                  str(len(self.unset)), *self.unset, str(len(self.deps))]
        for path, sig in self.deps:
            fields += [path, "-" if sig is None else ":".join(str(x) for x in sig)]
        return b"\0".join(_enc(f) for f in fields)

    @classmethod
    def decode(cls, raw: bytes) -> Optional[Record]:
        """The record, or None for anything not shaped as ours (a miss, never an error)."""
        try:
            parts = [p.decode("utf-8", "surrogateescape") for p in raw.split(b"\0")]
            it = iter(parts)
            if next(it) != MAGIC.decode() or next(it) != str(FORMAT):
                return None
            key, cwd, control, private = next(it), next(it), next(it), next(it)
            argv = [next(it) for _ in range(int(next(it)))]
            env: Dict[str, str] = {}
            for _ in range(int(next(it))):
                k, sep, v = next(it).partition("=")
                if not sep or not k:
                    return None
                env[k] = v
            unset = [next(it) for _ in range(int(next(it)))]
            deps: List[Tuple[str, Sig]] = []
            for _ in range(int(next(it))):
                path, sig = next(it), next(it)
                if sig == "-":
                    deps.append((path, None))
                else:
                    m, s, i = sig.split(":")
                    deps.append((path, (int(m), int(s), int(i))))
            if next(it, None) is not None or not argv or not os.path.isabs(argv[0]):
                return None
        except (StopIteration, ValueError):
            return None
        if not (os.path.isabs(cwd) and os.path.isabs(control) and os.path.isabs(private)
                and control.startswith(private + "/")):
            return None
        return cls(key, argv, cwd, env, unset, control, private, deps)

    def fresh(self) -> bool:
        return all(signature(path) == sig for path, sig in self.deps)


def _read(path: str) -> Optional[bytes]:
    try:
        fd = os.open(path, os.O_RDONLY | getattr(os, "O_NOFOLLOW", 0) | os.O_CLOEXEC)
    except OSError:
        return None
    try:
        raw = os.read(fd, MAX_RECORD_BYTES + 1)
    except OSError:
        return None
    finally:
        os.close(fd)
    return raw if len(raw) <= MAX_RECORD_BYTES else None


def find(key: _Key) -> Optional[Record]:
    """The record for this command line: the longest argument prefix that has one."""
    folder = record_folder()
    if not safe_folder(folder):
        return None
    for n in range(len(key.argv), -1, -1):
        k = key.of(n)
        raw = _read(os.path.join(folder, RECORD_PREFIX + k))
        if raw is None:
            continue
        rec = Record.decode(raw)
        return rec if rec is not None and rec.key == k and rec.fresh() else None
    return None


# --- a child started here, with the part of Popen's interface ekl uses -------------------


class Child:
    """A process spawned by ``os.posix_spawn`` (``subprocess`` costs more to import than
    the whole early start), answering the calls ekl makes on a ``subprocess.Popen``:
    ``pid``, ``returncode``, ``poll``, ``wait``, ``send_signal``, ``kill`` and the pipes."""

    def __init__(self, pid: int, args: Sequence[str], stdin: object = None,
                 stdout: object = None, stderr: object = None) -> None:
        import _thread

        self.pid = pid
        self.args = list(args)
        self.stdin = stdin
        self.stdout = stdout
        self.stderr = stderr
        self.returncode: Optional[int] = None
        self._lock = _thread.allocate_lock()  # as Popen's: one waitpid at a time

    def _reaped(self, status: int) -> None:
        self.returncode = os.waitstatus_to_exitcode(status)

    def poll(self) -> Optional[int]:
        if self.returncode is None and self._lock.acquire(False):
            try:
                if self.returncode is None:
                    pid, status = os.waitpid(self.pid, os.WNOHANG)
                    if pid == self.pid:
                        self._reaped(status)
            except ChildProcessError:
                self.returncode = 0  # reaped elsewhere (as Popen answers then)
            finally:
                self._lock.release()
        return self.returncode

    def wait(self, timeout: Optional[float] = None) -> int:
        import time

        if timeout is None:
            while self.returncode is None:
                with self._lock:
                    if self.returncode is not None:
                        break
                    try:
                        _, status = os.waitpid(self.pid, 0)
                        self._reaped(status)
                    except ChildProcessError:
                        self.returncode = 0
                    except InterruptedError:
                        continue
            return self.returncode
        end = time.monotonic() + timeout
        delay = 0.0005
        while self.poll() is None:
            left = end - time.monotonic()
            if left <= 0:
                import subprocess

                raise subprocess.TimeoutExpired(self.args, timeout)
            delay = min(delay * 2, left, 0.05)
            time.sleep(delay)
        assert self.returncode is not None
        return self.returncode

    def send_signal(self, sig: int) -> None:
        self.poll()
        if self.returncode is None:
            try:
                os.kill(self.pid, sig)
            except ProcessLookupError:
                pass

    def kill(self) -> None:
        self.send_signal(9)

    def terminate(self) -> None:
        self.send_signal(15)


def _close_inherited_fds() -> None:
    """What ``close_fds=True`` does for a Popen child: descriptors this process inherited
    without close-on-exec (from a shell, a careless parent) must not reach the plugin.
    ``posix_spawn`` cannot close them in the child, so they are marked here; every
    descriptor Python itself opens is close-on-exec already, and every later child of
    ekl is started with ``close_fds=True`` anyway."""
    try:
        fds = [int(n) for n in os.listdir("/proc/self/fd") if n.isdigit()]
    except OSError:
        return
    for fd in fds:
        if fd > 2:
            try:
                os.set_inheritable(fd, False)
            except OSError:
                pass  # the listdir's own descriptor, closed since


def _spawn(argv: Sequence[str], env: Mapping[str, str], cwd: Optional[str],
           actions: list) -> int:
    """``posix_spawn`` in ``cwd``, in a new session; nothing else runs in this process yet,
    so changing the folder around the call is safe."""
    here = None
    if cwd is not None:
        here = os.getcwd()
        os.chdir(cwd)
    import _signal  # the built-in half of signal (signal.py itself loads enum)

    # As Popen's restore_signals: Python ignores SIGPIPE and SIGXFSZ, and an ignored
    # signal stays ignored across exec. The mask is emptied: ``start`` blocks signals.
    default = [getattr(_signal, n) for n in ("SIGPIPE", "SIGXFZ", "SIGXFSZ")
               if hasattr(_signal, n)]
    try:
        return os.posix_spawn(argv[0], list(argv), dict(env), file_actions=actions,
                              setsid=True, setsigdef=default, setsigmask=())
    finally:
        if here is not None:
            os.chdir(here)


# --- this process's early start ---------------------------------------------------------


class Early:
    """What the early start made: the plugin, its listening control socket, its private
    folder and the watchdog. Each part is handed over once (``take``, ``claim_dir``,
    ``take_watchdog``) or ended by ``discard``."""

    def __init__(self, record: Record, private: str, control: str, listener: object,
                 inode: int, child: Child, token: str, argv: List[str],
                 env: Dict[str, str], watchdog: Optional[Child]) -> None:
        self.record = record
        self.private = private
        self.control = control
        #: a bound and listening ``_socket.socket`` (``sp.provide_listener`` hands it over)
        self.listener: object = listener
        self.inode = inode
        self.child = child
        self.token = token
        #: what was spawned: the record's, with this start's folder and token
        self.argv = argv
        self.env = env
        self.watchdog = watchdog
        self.dir_claimed = False
        self.taken = False

    def matches(self, argv: Sequence[str], cwd: str, env: Mapping[str, str],
                control: str) -> bool:
        """Whether the start the normal path decided is the one that was spawned."""
        mine = {k: v for k, v in self.env.items() if k != TOKEN_ENV}
        theirs = {k: v for k, v in env.items() if k != TOKEN_ENV}
        return (list(argv) == self.argv and cwd == self.record.cwd and mine == theirs
                and control == self.control)

    def kill(self) -> None:
        """SIGKILL the early process group (unused: nothing was asked of it yet) and reap
        it. What left the group carries the token: the watchdog kills that when this
        process ends, and ``PluginProcess.kill_tree`` does at once when the launcher has
        loaded (``host.instance`` on a mismatch)."""
        try:
            os.killpg(self.child.pid, 9)
        except (ProcessLookupError, PermissionError):
            pass
        self.child.kill()
        self.child.wait()
        self.close_pipes()

    def close_pipes(self) -> None:
        for stream in (self.child.stdout, self.child.stderr):
            try:
                stream.close()  # type: ignore[attr-defined]
            except (AttributeError, OSError):
                pass

    def close_listener(self) -> None:
        sock, self.listener = self.listener, None
        if sock is None:
            return
        try:
            sock.close()  # type: ignore[attr-defined]
        except OSError:
            pass
        try:
            os.unlink(self.control)
        except OSError:
            pass

    def discard(self) -> None:
        """End whatever was not handed over (atexit, and on a mismatch)."""
        if not self.taken:
            self.taken = True
            self.kill()
            self.close_listener()
        dog, self.watchdog = self.watchdog, None
        if dog is not None:  # never adopted: its EOF kills what the plugin left, if anything
            try:
                dog.stdin.close()  # type: ignore[attr-defined]
            except (AttributeError, OSError):
                pass
            try:
                dog.wait(3.0)
            except Exception:  # noqa: BLE001 - TimeoutExpired: do not hang an exit on it
                dog.kill()
        if not self.dir_claimed:  # nothing but the control socket (closed above) was in it
            self.dir_claimed = True
            _rmdir(self.private)


def _rmdir(path: str) -> None:
    try:
        os.rmdir(path)
    except OSError:
        pass  # the watchdog removes it at its EOF if it is not empty


class Session:
    """This process's start: its key, what the early start made, whether to record."""

    def __init__(self, program: str, argv: Sequence[str]) -> None:
        self.key = _Key(program, argv)
        self.early: Optional[Early] = None
        #: how many leading arguments decide the start (``arm``); None: do not record
        self.armed: Optional[int] = None
        #: the first spawn asked ``take`` (later spawns are restarts: no early start)
        self.asked = False
        #: ``take`` found no early start to adopt: the spawn that follows may be recorded
        self.recordable = False


_session: Optional[Session] = None


def start(program: str, argv: Sequence[str]) -> None:
    """Called by the entry points before anything else: spawn from a record, if one fits.

    Never raises: a failure here only means the normal (later) spawn."""
    global _session
    if os.environ.get(DISABLE_ENV) == "0" or _session is not None:
        return
    try:
        session = Session(program, argv)
    except OSError:  # the current folder is gone: no key
        return
    _session = session
    import _signal

    # Ctrl-C or SIGTERM between a spawn and the bookkeeping that ends it on exit would
    # leave a plugin behind: they wait the few milliseconds this takes, then arrive
    stop = {getattr(_signal, n) for n in ("SIGINT", "SIGTERM", "SIGHUP") if hasattr(_signal, n)}
    try:
        old = _signal.pthread_sigmask(_signal.SIG_BLOCK, stop)
    except (AttributeError, OSError):
        old = None
    try:
        rec = find(session.key)
        if rec is not None:
            session.early = _start(rec)
    except Exception:  # noqa: BLE001 - anything odd here is a miss, never a failed start
        session.early = None
    finally:
        if old is not None:
            _signal.pthread_sigmask(_signal.SIG_SETMASK, old)


def _start(rec: Record) -> Optional[Early]:
    import _socket
    import atexit

    private = make_private_dir()
    if private is None:
        return None
    control = private + rec.control[len(rec.private):]
    sub = dict(os.environ)
    for k in rec.unset:
        sub.pop(k, None)
    sub.update({k: (v.replace(rec.private, private) if rec.private in v else v)
                for k, v in rec.env.items()})
    argv = [a.replace(rec.private, private) for a in rec.argv]
    token = new_token()
    sub[TOKEN_ENV] = token
    listener = _socket.socket(_socket.AF_UNIX, _socket.SOCK_STREAM)
    pipes: List[int] = []
    try:
        listener.bind(control)
        listener.listen(128)
        ino = os.stat(control).st_ino
        _close_inherited_fds()
        out_r, out_w = os.pipe()
        err_r, err_w = os.pipe()
        pipes = [out_r, out_w, err_r, err_w]
        pid = _spawn(argv, sub, rec.cwd, [
            (os.POSIX_SPAWN_OPEN, 0, os.devnull, os.O_RDONLY, 0),
            (os.POSIX_SPAWN_DUP2, out_w, 1), (os.POSIX_SPAWN_DUP2, err_w, 2)])
    except BaseException:
        listener.close()
        for fd in pipes:
            os.close(fd)
        for leftover in (control, private):
            try:
                (os.rmdir if leftover == private else os.unlink)(leftover)
            except OSError:
                pass
        raise
    os.close(out_w)
    os.close(err_w)
    child = Child(pid, argv, None, open(out_r, "rb"), open(err_r, "rb"))
    dog = None
    try:
        dog_r, dog_w = os.pipe()
        try:
            dpid = _spawn(watchdog_argv([f"+{pid}", f"+={token}", f"+{private}"]),
                          os.environ, None, [
                              (os.POSIX_SPAWN_DUP2, dog_r, 0),
                              (os.POSIX_SPAWN_OPEN, 1, os.devnull, os.O_WRONLY, 0),
                              (os.POSIX_SPAWN_OPEN, 2, os.devnull, os.O_WRONLY, 0)])
        finally:
            os.close(dog_r)
        nice_watchdog(dpid)
        dog = Child(dpid, ["watchdog"], open(dog_w, "w", buffering=1))
    except OSError:
        pass  # the Lifeline starts its own when first used, and registers the plugin then
    early = Early(rec, private, control, listener, ino, child, token, argv, sub, dog)
    atexit.register(early.discard)
    return early


# --- the normal path's side ---------------------------------------------------------------


def arm(payload: Sequence[str] = ()) -> None:
    """The normal path, once it knows this command starts one plugin: record its spawn
    (if it is not the early one) for the next identical command line.

    ``payload``: the trailing arguments that do not change how the plugin starts (a
    function's name and arguments); when the command line ends with them, the record is
    keyed on what precedes them, so ``ekl call P f 1`` and ``ekl call P f 2`` share one.
    """
    s = _session
    if s is None or s.asked:
        return
    n = len(s.key.argv)
    p = list(payload)
    if p and len(p) <= n and s.key.argv[n - len(p):] == p:
        n -= len(p)
    s.armed = n


def claim_dir() -> Optional[str]:
    """The early start's private folder, for the start path's first private folder."""
    s = _session
    early = s.early if s is not None else None
    if early is None or early.dir_claimed:
        return None
    early.dir_claimed = True
    return early.private


def take_watchdog() -> Optional[Tuple[Child, Tuple[int, ...], Tuple[str, ...], Tuple[str, ...]]]:
    """The early watchdog with its registry (groups, tokens, paths), for the Lifeline."""
    s = _session
    early = s.early if s is not None else None
    if early is None or early.watchdog is None:
        return None
    dog, early.watchdog = early.watchdog, None
    return dog, (early.child.pid,), (early.token,), (early.private,)


def take() -> Optional[Early]:
    """The early start, for the first spawn of this process (later spawns are restarts):
    the caller adopts it if ``matches`` says it is the start it decided, else kills it
    (with the whole-tree kill the launcher has by then) and ``forget``s it."""
    s = _session
    if s is None or s.asked:
        return None
    s.asked = True
    early, s.early = s.early, None
    s.recordable = early is None
    if early is not None:
        early.taken = True
    return early


def forget(early: Early) -> None:
    """After a mismatch: the caller killed the process; release the rest, and let the
    start that replaces it write a new record."""
    early.close_listener()
    early.close_pipes()
    if _session is not None:
        _session.recordable = True


def record(argv: Sequence[str], cwd: str, env: Mapping[str, str],
           deps: Sequence[Tuple[str, Sig]], control: str,
           private: str) -> Optional[Tuple[str, bytes]]:
    """This start's record and where it goes, if it is to be written: the normal path
    spawned it (not adopted), ``arm`` was called, and it is the kind an early start can
    repeat (a launch cache entry behind it, an absolute program, the control socket in the
    private folder, the native transport, whose listener can be handed over)."""
    s = _session
    if s is None or not s.recordable:
        return None
    s.recordable = False
    if (s.armed is None or not deps or not control.startswith(private + "/")
            or not argv or not os.path.isabs(argv[0]) or os.environ.get(DISABLE_ENV) == "0"):
        return None
    from ekuiper.transport import transport_name

    if transport_name() != "native":
        return None
    key = s.key.of(s.armed)
    caller = os.environ
    rec = Record(key, argv, cwd,
                 {k: v for k, v in env.items() if k != TOKEN_ENV and caller.get(k) != v},
                 sorted(k for k in caller if k not in env and k != TOKEN_ENV),
                 control, private, deps)
    return os.path.join(record_folder(), RECORD_PREFIX + key), rec.encode()
