"""``ekl status`` exit codes and ``ekl status --check NAME...`` for probes and monitoring.

The LSB/systemctl convention, which monitoring tools and Kubernetes probes already read:
0 when every plugin asked about is RUNNING, 3 when one is not, 4 when there is no status at
all (nothing running, or a wrong --status-file). ``--check`` prints nothing on success and
one line per problem on failure (a probe's output shows in ``kubectl describe pod``).
"""

from __future__ import annotations

import sys
from typing import Any, Dict, List, Mapping, Optional, Sequence, TextIO, Tuple

from .metrics import collector_for

EXIT_OK = 0
EXIT_NOT_RUNNING = 3
EXIT_NO_STATUS = 4


def _plugins(statuses: Sequence[Mapping[str, Any]]) -> Dict[str, Mapping[str, Any]]:
    """Name -> plugin; a live launcher's entry wins over a stale file's (as in metrics)."""
    out: Dict[str, Mapping[str, Any]] = {}
    ordered = sorted((s for s in statuses if not s.get("error")),
                     key=lambda s: not s.get("launcher_alive", True))
    for s in ordered:
        for p in s.get("plugins") or []:
            if isinstance(p, Mapping) and isinstance(p.get("name"), str):
                out.setdefault(p["name"], p)
    return out


def _why(p: Mapping[str, Any]) -> str:
    why = p.get("fatal_reason") or p.get("last_exit") or ""
    return f"plugin {p.get('name')} is {p.get('state')}" + (f": {why}" if why else "")


def exit_code(statuses: Sequence[Mapping[str, Any]]) -> int:
    """What plain ``ekl status`` exits with: 0 all RUNNING, 3 any not, 4 no plugin known."""
    plugins = _plugins(statuses)
    if not plugins:
        return EXIT_NO_STATUS
    return EXIT_OK if all(p.get("state") == "RUNNING" for p in plugins.values()) else EXIT_NOT_RUNNING


def check(statuses: Sequence[Mapping[str, Any]], names: Sequence[str]) -> Tuple[int, List[str]]:
    """(exit code, problem lines) for ``--check NAMES``; no lines when all are RUNNING.

    A name no status file knows is exit 4 (there is no status for it), unless another name
    is merely not RUNNING, which is the more specific answer (3).
    """
    plugins = _plugins(statuses)
    lines: List[str] = []
    missing = not_running = False
    for name in names:
        p = plugins.get(name)
        if p is None:
            known = ", ".join(sorted(plugins)[:20]) or "none"
            lines.append(f"no status for plugin {name}; the status files know: {known}")
            missing = True
        elif p.get("state") != "RUNNING":
            lines.append(_why(p))
            not_running = True
    code = EXIT_NOT_RUNNING if not_running else EXIT_NO_STATUS if missing else EXIT_OK
    return code, lines


def main_check(names: Sequence[str], status_sources: Optional[Sequence[str]] = None,
               err: Optional[TextIO] = None) -> int:
    """``ekl status --check NAME...``: silent on success, one ``ekl:`` line per problem."""
    statuses = collector_for(status_sources)()
    code, lines = check(statuses, names)
    out = err or sys.stderr
    for line in lines:
        print(f"ekl: {line}", file=out)
    return code
