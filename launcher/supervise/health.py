"""Health of a plugin's process tree, read with psutil.

psutil is imported at the first sample, not with this module: the watcher (and so every
``ekl-python`` and ``ekl run``) imports this module on its start path, and a plugin's
first health check comes a health interval after its handshake.
"""

from __future__ import annotations

from ekuiper.record import field, record

from ..process import PluginProcess

TYPE_CHECKING = False  # typing is not loaded at run time on the start path (docs/architecture.md)
if TYPE_CHECKING:
    from typing import List, Optional


@record
class Health:
    alive: bool
    problem: Optional[str] = None          # set when the tree is unusable (restart)
    rss_bytes: int = 0
    cpu_percent: float = 0.0
    threads: int = 0
    open_files: int = 0
    processes: int = 0
    notes: List[str] = field(default_factory=list)


#: Finding descendants reads every process on the machine (where the kernel lacks
#: /proc/PID/task/TID/children); between such scans the known ones are sampled.
FULL_SCAN_EVERY = 10


class TreeSampler:
    """Keeps psutil.Process objects between checks so cpu_percent measures the interval."""

    def __init__(self) -> None:
        self._procs: dict = {}
        self._checks = 0

    def sample(self, proc: PluginProcess) -> Health:
        import psutil

        if not proc.alive():
            return Health(alive=False, problem=proc.exit_description())
        full = self._checks % FULL_SCAN_EVERY == 0 or proc.pid not in self._procs
        self._checks += 1
        if full:
            tree = proc.tree()
        else:
            tree = [p for p in self._procs.values() if p.is_running()]
        h = Health(alive=True, processes=len(tree))
        seen = {}
        for p in tree:
            p = self._procs.get(p.pid, p)
            seen[p.pid] = p
            try:
                with p.oneshot():
                    status = p.status()
                    if p.pid == proc.pid and status == psutil.STATUS_STOPPED:
                        h.problem = "the process is stopped (SIGSTOP); it cannot answer"
                    elif p.pid == proc.pid and status == psutil.STATUS_ZOMBIE:
                        h.problem = "the process is a zombie"
                    elif status == psutil.STATUS_ZOMBIE:
                        h.notes.append(f"descendant {p.pid} is a zombie")
                    elif status == psutil.STATUS_STOPPED:
                        h.notes.append(f"descendant {p.pid} is stopped")
                    h.rss_bytes += p.memory_info().rss
                    h.cpu_percent += p.cpu_percent(None)
                    h.threads += p.num_threads()
                    try:
                        h.open_files += len(p.open_files())
                    except psutil.AccessDenied:
                        pass
            except (psutil.NoSuchProcess, psutil.ZombieProcess):
                continue
            except psutil.AccessDenied:
                continue
        self._procs = seen
        return h


def tree_rss(sampler: TreeSampler, proc: PluginProcess) -> int:
    """Resident memory of the tree as the last full sample knew it: cheap enough to run
    every 0.1 s near ``max_rss`` (no process-table scan, one read per process)."""
    import psutil

    total = 0
    procs = dict(sampler._procs)
    if proc.pid is not None and proc.pid not in procs:
        try:
            procs[proc.pid] = psutil.Process(proc.pid)
        except psutil.Error:
            return 0
    for p in procs.values():
        try:
            total += p.memory_info().rss
        except psutil.Error:
            continue
    return total
