"""Containment: every process a plugin started dies with it, like systemd's
``KillMode=control-group``.

A process group is not enough: a ``setsid`` child leaves it, and a double-forked daemon
leaves both the group and the process tree (its parent exits, it is re-parented). So each
plugin start gets a unique token in its environment (``EKL_CONTAINMENT``), which every
descendant inherits, and the launcher makes itself a child subreaper
(``PR_SET_CHILD_SUBREAPER``), so orphans come back to it instead of to init. Stopping a
plugin kills its tree, its process group and every process carrying its token; the
watchdog does the same from its registry when the launcher dies.

Modes, reported in the status file's ``containment`` field (the mode actually active):

- ``subreaper``: Linux: token scan + child subreaper + process group.
- ``token``: no ``prctl`` (not Linux): the token scan and the process group alone.

A cgroup v2 per plugin (systemd's own mechanism) is not used yet: ``cgroup_v2_writable``
detects whether the launcher could create one (a delegated or writable subtree), but
killing through ``cgroup.kill`` and ``memory.max`` cannot be tested on the cgroup v1
machines ekl is developed on, so this version does not switch to it (docs/launcher.md).

Limit: a descendant that clears its environment (``env -i``) and leaves the process
group escapes the token; the subreaper still brings it back to the launcher while the
launcher lives.
"""

from __future__ import annotations

import ctypes
import os

# The variable every plugin start gets (TOKEN_ENV), its value unique per start (new_token):
# both defined in early.py, which needs them before this module loads.
from ..early import TOKEN_ENV, new_token

TYPE_CHECKING = False  # typing is not loaded at run time on the start path (docs/architecture.md)
if TYPE_CHECKING:
    from typing import Iterable, List, Optional, Set

__all__ = ["TOKEN_ENV", "new_token", "become_subreaper", "mode", "members", "reap",
           "cgroup_v2_writable"]

_PR_SET_CHILD_SUBREAPER = 36

_subreaper: Optional[bool] = None


def become_subreaper() -> bool:
    """Make this process a child subreaper (once); False where prctl is missing."""
    global _subreaper
    if _subreaper is None:
        try:
            libc = ctypes.CDLL(None, use_errno=True)
            _subreaper = libc.prctl(_PR_SET_CHILD_SUBREAPER, 1, 0, 0, 0) == 0
        except (OSError, AttributeError):
            _subreaper = False
    return _subreaper


def cgroup_v2_writable() -> bool:
    """True when this process's cgroup v2 folder exists and we may create cgroups in it."""
    try:
        with open("/proc/self/cgroup") as f:
            lines = f.read().splitlines()
    except OSError:
        return False
    rel = next((ln[3:] for ln in lines if ln.startswith("0::")), None)
    if rel is None or not os.path.exists("/sys/fs/cgroup/cgroup.controllers"):
        return False
    folder = os.path.join("/sys/fs/cgroup", rel.lstrip("/"))
    return os.access(folder, os.W_OK) and os.access(os.path.join(folder, "cgroup.procs"),
                                                    os.W_OK)


_mode: Optional[str] = None


def mode() -> str:
    """The containment mode this launcher runs in (see the module docstring); decided once."""
    global _mode
    if _mode is None:
        _mode = "subreaper" if become_subreaper() else "token"
    return _mode


def _environ_has(pid: int, needles: Iterable[bytes]) -> Optional[bytes]:
    try:
        with open(f"/proc/{pid}/environ", "rb") as f:
            env = f.read(1 << 20)
    except OSError:
        return None
    for n in needles:
        if n in env:
            return n
    return None


def _pgid(pid: int) -> Optional[int]:
    try:
        with open(f"/proc/{pid}/stat", "rb") as f:
            stat = f.read()
        return int(stat[stat.rindex(b")") + 2:].split()[2])
    except (OSError, ValueError, IndexError):
        return None


def members(token: Optional[str], pgid: Optional[int] = None) -> List[int]:
    """Pids (not ours) carrying ``token`` in their environment or in process group ``pgid``.

    Reads /proc once; only the final kill of a plugin pays for it, never a health check.
    """
    me = os.getpid()
    needle = [f"{TOKEN_ENV}={token}\0".encode()] if token else []
    out: List[int] = []
    try:
        names = os.listdir("/proc")
    except OSError:
        return out
    for name in names:
        if not name.isdigit():
            continue
        pid = int(name)
        if pid == me:
            continue
        if pgid is not None and _pgid(pid) == pgid:
            out.append(pid)
        elif needle and _environ_has(pid, needle):
            out.append(pid)
    return out


def reap(pids: Set[int]) -> None:
    """Collect the exit status of killed orphans the subreaper adopted (no zombies pile up)."""
    for pid in pids:
        try:
            os.waitpid(pid, os.WNOHANG)
        except (ChildProcessError, OSError):
            pass
