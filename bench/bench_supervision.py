"""Supervision figures, each against a baseline from the same run on this machine:

1. hang -> data flowing again: ``ekl run``'s pipeline with a function that hangs once
   (``hangonce`` of tests/plugins/hostile), against the same pipeline recovering from a
   SIGKILL of the plugin (the crash path it shares after the call timeout);
2. the launcher's RSS and CPU over N crash-restarts (default 100): growth after the first
   10 restarts (the baseline) to the last, and CPU per restart;
3. ``ekl supervise`` CPU with 20 idle plugins at the default 2 s health interval, against
   the same measurement of another ekl checkout (``--baseline-python``, e.g. main's
   .venv/bin/python) run alternately, so machine noise hits both alike.

Run: ``.venv/bin/python bench/bench_supervision.py [--restarts 100] [--idle 20]
[--idle-seconds 10] [--baseline-python /work/main/.venv/bin/python]``
"""

from __future__ import annotations

import argparse
import os
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import List, Optional

import psutil

from ekl.launcher.plugin import load
from ekl.launcher.settings import HostSettings, SupervisorSettings
from ekl.launcher.start import prepare
from ekl.launcher.supervise.pipeline import Pipeline
from ekl.launcher.supervise.states import State
from ekl.launcher.supervise.watcher import Watcher

REPO = Path(__file__).resolve().parent.parent
HOSTILE = REPO / "tests" / "plugins" / "hostile"
COMPAT = REPO / "tests" / "plugins" / "compat"
PYSAM = REPO / "examples" / "pysam"


def copy_plugin(src: Path, root: Path, name: str) -> Path:
    d = root / name
    shutil.copytree(src, d, ignore=shutil.ignore_patterns("__pycache__", "pids-*", "hung-once"))
    os.replace(d / f"{src.name}.json", d / f"{name}.json")
    py = d / f"{src.name}.py"
    if py.exists():  # pysam names itself in PluginConfig; the test plugins read their JSON
        py.write_text(py.read_text().replace(f'PluginConfig("{src.name}"',
                                             f'PluginConfig("{name}"'))
    return d


def pipeline_gap(root: Path, hang: bool, call_timeout: float) -> float:
    """Seconds between the record before the trouble and the first one after it."""
    folder = copy_plugin(HOSTILE, root, f"hb{os.getpid()}{int(hang)}{time.monotonic_ns() % 9999}")
    stamps: List[float] = []
    pipe: Optional[Pipeline] = None

    def out(_record: object) -> None:
        stamps.append(time.monotonic())
        if not hang and len(stamps) == 3 and pipe is not None and pipe.watcher is not None:
            os.kill(pipe.watcher.instance.pid, signal.SIGKILL)  # the crash baseline

    pipe = Pipeline(load(folder), source="counter", datasource="", config={"interval": 0.02},
                    function="hangonce" if hang else "echo", field=None, sink=None,
                    sink_config={}, count=6, out=out)
    pipe.run(None, HostSettings(function_timeout_s=call_timeout), supervise=True)
    gaps = [b - a for a, b in zip(stamps, stamps[1:])]
    return max(gaps)


def restarts(root: Path, n: int) -> dict:
    me = psutil.Process()
    folder = copy_plugin(COMPAT, root, f"rb{os.getpid()}")
    inst = prepare(load(folder))
    w = Watcher(inst, SupervisorSettings(backoff_initial_s=0.0, backoff_max_s=0.0,
                                         health_interval_s=0.5, start_limit=100_000))
    w.start(fail_fast=True)
    marks = {}
    try:
        for i in range(1, n + 1):
            old = inst.pid
            os.kill(old, signal.SIGKILL)
            end = time.monotonic() + 30
            while not (w.state == State.RUNNING and inst.pid not in (None, old)):
                if time.monotonic() > end:
                    raise SystemExit(f"restart {i} did not happen within 30 s")
                time.sleep(0.005)
            if i in (10, n):
                ct = me.cpu_times()
                marks[i] = (me.memory_info().rss, ct.user + ct.system, time.monotonic())
    finally:
        w.stop()
    (r10, c10, t10), (rn, cn, tn) = marks[10], marks[n]
    return {"rss10": r10, "rssn": rn, "cpu_per_restart": (cn - c10) / (n - 10),
            "wall_per_restart": (tn - t10) / (n - 10), "count": w.restart_count}


def idle_cpu(python: str, root: Path, n: int, seconds: float, tag: str) -> float:
    folders = [str(copy_plugin(PYSAM, root, f"idle{tag}{i}")) for i in range(n)]
    status = root / f"status-{tag}.json"
    proc = subprocess.Popen([python, "-m", "ekl.launcher.cli", "-q", "supervise", *folders,
                             "--status-file", str(status)], stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL)
    try:
        p = psutil.Process(proc.pid)
        time.sleep(max(5.0, n * 0.4))  # all started and settled
        c0 = p.cpu_times()
        t0 = time.monotonic()
        time.sleep(seconds)
        c1 = p.cpu_times()
        wall = time.monotonic() - t0
    finally:
        proc.send_signal(signal.SIGTERM)
        proc.wait(60)
    return ((c1.user + c1.system) - (c0.user + c0.system)) / wall * 100


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--restarts", type=int, default=100)
    ap.add_argument("--hang-rounds", type=int, default=3)
    ap.add_argument("--call-timeout", type=float, default=1.0)
    ap.add_argument("--idle", type=int, default=20)
    ap.add_argument("--idle-seconds", type=float, default=10.0)
    ap.add_argument("--idle-rounds", type=int, default=2)
    ap.add_argument("--baseline-python", default=None,
                    help="another checkout's interpreter for the idle baseline")
    a = ap.parse_args()
    root = Path(tempfile.mkdtemp(prefix="eklbs-"))
    try:
        hangs, crashes = [], []
        for _ in range(a.hang_rounds):  # alternate, so machine noise hits both alike
            hangs.append(pipeline_gap(root, True, a.call_timeout))
            crashes.append(pipeline_gap(root, False, a.call_timeout))
        h, c = statistics.median(hangs), statistics.median(crashes)
        print(f"hang -> data again: median {h * 1000:7.0f} ms with --call-timeout "
              f"{a.call_timeout:.1f} s ({(h - a.call_timeout) * 1000:.0f} ms after the "
              f"deadline); crash -> data again: median {c * 1000:.0f} ms; "
              f"(hang - timeout) / crash = {(h - a.call_timeout) / c:.2f}x")
        r = restarts(root, a.restarts)
        print(f"{r['count']} crash-restarts: launcher RSS {r['rss10'] / 1048576:.1f} MB after "
              f"10 -> {r['rssn'] / 1048576:.1f} MB after {a.restarts} "
              f"({(r['rssn'] - r['rss10']) / 1048576:+.1f} MB, ratio "
              f"{r['rssn'] / r['rss10']:.3f}); launcher CPU {r['cpu_per_restart'] * 1000:.1f} ms "
              f"per restart ({r['cpu_per_restart'] / r['wall_per_restart'] * 100:.0f}% of the "
              f"{r['wall_per_restart'] * 1000:.0f} ms each took)")
        mine, base = [], []
        for i in range(a.idle_rounds):
            mine.append(idle_cpu(sys.executable, root, a.idle, a.idle_seconds, f"m{i}"))
            if a.baseline_python:
                base.append(idle_cpu(a.baseline_python, root, a.idle, a.idle_seconds, f"b{i}"))
        line = (f"supervise {a.idle} idle plugins (2 s health interval): this checkout "
                f"{statistics.median(mine):.2f}% of one core")
        if base:
            line += (f"; baseline {a.baseline_python}: {statistics.median(base):.2f}% "
                     f"(ratio {statistics.median(mine) / statistics.median(base):.2f}x)")
        print(line)
    finally:
        shutil.rmtree(root, ignore_errors=True)


if __name__ == "__main__":
    main()
