"""Folders and files other local users must not be able to tamper with.

ekl writes status files, unpacked plugins and sockets into folders that may live in
``/tmp``, where any local user can create a name first. A root-run ``ekl-python`` that
writes into a folder someone else made, or through a symlink someone else planted, can be
made to overwrite any file. So every shared folder ekl uses goes through
``ensure_private_dir`` (created 0700 whatever the umask; an existing one must be ours, not a
symlink, not writable by others) and every file through ``atomic_write`` (a fresh temporary
file opened with ``O_CREAT|O_EXCL|O_NOFOLLOW`` under an unguessable name, then renamed).

Standard library only: the launcher, ``ekl-python`` and the cache all use it.
"""

from __future__ import annotations

import os
import stat
from pathlib import Path

from .errors import EklError

TYPE_CHECKING = False  # typing is not loaded at run time on the start path (docs/architecture.md)
if TYPE_CHECKING:
    from typing import Callable, List, Optional, Union
    StrPath = Union[str, "os.PathLike[str]"]


STATUS_DIR_ENV = "EKL_STATUS_DIR"
#: How many random temporary names ``atomic_write`` tries before giving up: each try
#: fails only if the name exists, so reaching this means someone is filling the folder.
TEMP_TRIES = 100

_O_NOFOLLOW = getattr(os, "O_NOFOLLOW", 0)
_O_CLOEXEC = getattr(os, "O_CLOEXEC", 0)
_O_DIRECTORY = getattr(os, "O_DIRECTORY", 0)


def _owner(uid: int) -> str:
    try:
        import pwd

        return f"{pwd.getpwuid(uid).pw_name} (uid {uid})"
    except (ImportError, KeyError):
        return f"uid {uid}"


def _mkdir_private(path: Path) -> None:
    """Create ``path`` and any missing parents 0700 (``os.makedirs`` gives parents umask modes)."""
    missing: List[Path] = []
    p = path
    while not os.path.lexists(p):
        missing.append(p)
        if p.parent == p:
            break
        p = p.parent
    for d in reversed(missing):
        try:
            os.mkdir(d, 0o700)
        except FileExistsError:
            continue  # someone else was quicker; the checks below judge what is there
        fd = os.open(d, os.O_RDONLY | _O_DIRECTORY | _O_NOFOLLOW | _O_CLOEXEC)
        try:
            os.fchmod(fd, 0o700)  # the umask may have taken bits away
        finally:
            os.close(fd)


def ensure_private_dir(path: StrPath, what: str, env: Optional[str] = None) -> Path:
    """Return ``path`` as a folder only the current user can write, creating it 0700.

    An existing folder is accepted only if it is a real folder (not a symlink), owned by the
    effective user and not group/world-writable; otherwise EklError names the folder, what
    is wrong and the fix (``env`` is the variable that moves it elsewhere, if any). Existing
    folders are never chmod-ed: one that is wrong was made by someone else or on purpose.
    """
    p = Path(path)
    elsewhere = f" or set {env} to a folder of your own" if env else ""
    try:
        _mkdir_private(p)
    except OSError as e:
        raise EklError(f"{what} {p}: cannot create it: {e.strerror}; create it yourself "
                       f"(mkdir -m 700 {p}){elsewhere}") from None
    try:
        fd = os.open(p, os.O_RDONLY | _O_DIRECTORY | _O_NOFOLLOW | _O_CLOEXEC)
    except OSError:
        fd = -1
    try:
        st = os.fstat(fd) if fd >= 0 else os.lstat(p)
    except OSError as e:
        raise EklError(f"{what} {p}: cannot read it: {e.strerror}; remove it{elsewhere}") from None
    finally:
        if fd >= 0:
            os.close(fd)
    if stat.S_ISLNK(st.st_mode):
        raise EklError(f"{what} {p} is a symbolic link (to {os.readlink(p)}); ekl does not "
                       f"write through links someone may have planted: remove it (rm {p})"
                       f"{elsewhere}")
    if not stat.S_ISDIR(st.st_mode):
        raise EklError(f"{what} {p} exists and is not a folder; remove it (rm {p}){elsewhere}")
    me = os.geteuid()
    if st.st_uid != me:
        raise EklError(f"{what} {p} belongs to {_owner(st.st_uid)}, not to you "
                       f"({_owner(me)}), who could read or replace what ekl writes there: "
                       f"remove it (as its owner or root: rm -r {p}){elsewhere}")
    if st.st_mode & 0o022:
        raise EklError(f"{what} {p} can be written by other users (mode "
                       f"{stat.S_IMODE(st.st_mode):04o}); make it private: chmod 700 {p}"
                       f"{elsewhere}")
    return p


def _temp_name(path: Path) -> Path:
    """An unguessable sibling name (64 random bits), so nobody can plant a link there first."""
    return path.with_name(f".{path.name}.{os.urandom(8).hex()}.tmp")


def atomic_write(path: StrPath, data: bytes, mode: int = 0o600, fsync: bool = False) -> None:
    """Replace ``path`` with ``data`` so readers see the old or the new content, never a part.

    The data goes to a fresh file in the same folder, created with
    ``O_CREAT|O_EXCL|O_NOFOLLOW`` (it never opens an existing file or follows a link at the
    temporary name; a taken name is retried with another random one) and ``fchmod``-ed to
    ``mode`` whatever the umask, then ``os.replace``-d over ``path`` (which replaces a link
    at ``path`` rather than writing through it). ``fsync=False`` by default: status files
    are rewritten every few seconds and lose nothing in a crash; pass True for files that
    must survive a power cut. Safe under any number of threads and processes at once (the
    last rename wins). Raises OSError; the temporary file is removed on every error.
    """
    p = Path(path)
    flags = os.O_WRONLY | os.O_CREAT | os.O_EXCL | _O_NOFOLLOW | _O_CLOEXEC
    for _ in range(TEMP_TRIES):
        tmp = _temp_name(p)
        try:
            fd = os.open(tmp, flags, mode & 0o777)
            break
        except FileExistsError:
            continue
    else:
        raise FileExistsError(f"{p.parent}: {TEMP_TRIES} random temporary names were all taken")
    try:
        try:
            os.fchmod(fd, mode & 0o777)
            view = memoryview(data)
            while view:
                view = view[os.write(fd, view):]
            if fsync:
                os.fsync(fd)
        finally:
            os.close(fd)
        os.replace(tmp, p)
    except BaseException:
        try:
            os.unlink(tmp)
        except OSError:
            pass
        raise


def check_output_path(path: StrPath, option: str) -> None:
    """An option naming a file ekl will write: its folder exists and it is not a folder.

    One line now (naming the option) instead of a traceback at the first write.
    """
    folder = os.path.dirname(os.path.abspath(path))
    if not os.path.isdir(folder):
        raise EklError(f"{option} {path}: folder {folder} does not exist; create it or give "
                       f"another path")
    if os.path.isdir(path):
        raise EklError(f"{option} {path}: is a folder; give a file path")


def default_status_dir() -> str:
    """Where ``ekl-python`` writes status: per user, so nobody else can own or read it.

    ``$EKL_STATUS_DIR`` if set, else ``$XDG_RUNTIME_DIR/ekl`` (a per-user tmpfs on systemd
    machines), else ``/tmp/ekl-status-<uid>``.
    """
    explicit = os.environ.get(STATUS_DIR_ENV)
    if explicit:
        return explicit
    runtime = os.environ.get("XDG_RUNTIME_DIR")
    if runtime:
        return os.path.join(runtime, "ekl")
    return f"/tmp/ekl-status-{os.geteuid()}"


def status_dir_candidates() -> List[str]:
    """The folders ``ekl status`` should read, most specific first.

    eKuiper often runs as a service without ``XDG_RUNTIME_DIR`` while the user asking for
    status has it, so unless ``$EKL_STATUS_DIR`` pins one folder both defaults are read.
    """
    explicit = os.environ.get(STATUS_DIR_ENV)
    if explicit:
        return [explicit]
    out = []
    runtime = os.environ.get("XDG_RUNTIME_DIR")
    if runtime:
        out.append(os.path.join(runtime, "ekl"))
    out.append(f"/tmp/ekl-status-{os.geteuid()}")
    return out


def prune_folder(folder: str, keep: int) -> None:
    """Keep the ``keep`` newest files of a cache folder (by mtime): caches whose keys
    change with what they record (a file's signature, an environment) never overwrite
    an old entry, so without this they would only grow."""
    try:
        names = os.listdir(folder)
    except OSError:
        return
    if len(names) <= keep:
        return
    aged = []
    for n in names:
        p = os.path.join(folder, n)
        try:
            aged.append((os.stat(p).st_mtime_ns, p))
        except OSError:
            pass
    aged.sort()
    for _, p in aged[:len(aged) - keep]:
        try:
            os.unlink(p)
        except OSError:
            pass


def file_clock_ns() -> int:
    """Now, on the clock the kernel stamps file times with (coarse on Linux): a file whose
    mtime is at or after a reading's start may have changed while it was read."""
    import time

    coarse = getattr(time, "CLOCK_REALTIME_COARSE", None)
    return time.clock_gettime_ns(coarse) if coarse is not None else time.time_ns()


def private_tmp_dir(prefix: str = "ekl-", claim: Optional[Callable[[str], None]] = None,
                    unclaim: Optional[Callable[[str], None]] = None) -> str:
    """A new folder in ``/tmp`` (not ``$TMPDIR``: socket paths must stay under 107 bytes), 0700.

    ``claim``/``unclaim``: see ``early.make_private_dir`` (``Lifeline.private_dir`` passes
    its watchdog's registration, so the folder is known before it exists)."""
    from .early import make_private_dir  # the early start makes its folder the same way

    d = make_private_dir(prefix, claim, unclaim)
    if d is None:
        raise EklError(f"/tmp/{prefix}*: 100 random folder names were all taken; something "
                       f"is filling /tmp: look at what is in it")
    return d
