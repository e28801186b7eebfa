"""Launcher timings, all measured in one run on this machine:

1. start-to-handshake of a plugin under ekl, against a bare ``python -c "import pynng"``;
2. recovery: SIGKILL of the plugin to the first source message after the journal replay;
3. the launcher's own CPU while supervising N idle plugins at a 1 s health interval.

Run: ``.venv/bin/python bench/bench_launcher.py [--rounds 10] [--idle 20] [--idle-seconds 10]``
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

import psutil

from ekl.launcher.plugin import load
from ekl.launcher.settings import SupervisorSettings
from ekl.launcher.start import prepare
from ekl.launcher.start.resolve import resolve
from ekl.launcher.supervise.states import State
from ekl.launcher.supervise.watcher import Watcher
from ekuiper.protocol import Meta

REPO = Path(__file__).resolve().parent.parent
PYSAM = REPO / "examples" / "pysam"


def median_ms(xs):
    return statistics.median(xs) * 1000


def bare_import_pynng(rounds: int) -> list:
    out = []
    for _ in range(rounds):
        t0 = time.perf_counter()
        subprocess.run([sys.executable, "-c", "import pynng"], check=True)
        out.append(time.perf_counter() - t0)
    return out


def start_to_handshake(rounds: int) -> list:
    m = load(PYSAM)
    spec = resolve(m)
    out = []
    for _ in range(rounds):
        inst = prepare(m, spec=spec)
        t0 = time.perf_counter()
        inst.start_process()
        out.append(time.perf_counter() - t0)
        inst.close()
    return out


def recovery(rounds: int) -> list:
    inst = prepare(load(PYSAM))
    w = Watcher(inst, SupervisorSettings(backoff_initial_s=0.0, health_interval_s=1.0,
                                         start_limit=10_000))
    w.start(fail_fast=True)
    out = []
    try:
        stream = inst.start_source("pyjson", Meta("bench", "src", 0), "", {"interval": 0.001})
        stream.recv(5)
        for _ in range(rounds):
            old = inst.pid
            stream.drain(0.01)
            t0 = time.perf_counter()
            os.kill(old, signal.SIGKILL)
            while True:  # the first message from the new process (messages carry no pid:
                msg = stream.recv(10)  # new counts restart at the configured start)
                if inst.pid != old and msg.message and msg.message["value"] <= 2022:
                    break
            out.append(time.perf_counter() - t0)
            assert w.state == State.RUNNING
    finally:
        w.stop()
    return out


def idle_cpu(n: int, seconds: float) -> tuple:
    tmp = Path(tempfile.mkdtemp(prefix="eklb-"))
    try:
        folders = []
        for i in range(n):
            d = tmp / f"idle{i}"
            shutil.copytree(PYSAM, d, ignore=shutil.ignore_patterns("__pycache__"))
            os.replace(d / "pysam.json", d / f"idle{i}.json")
            (d / "pysam.py").write_text((d / "pysam.py").read_text().replace(
                'PluginConfig("pysam"', f'PluginConfig("idle{i}"'))
            folders.append(str(d))
        status = tmp / "status.json"
        proc = subprocess.Popen([sys.executable, "-m", "ekl.launcher.cli", "-q", "supervise",
                                 *folders, "--health-interval", "1", "--status-file",
                                 str(status)], stdout=subprocess.DEVNULL,
                                stderr=subprocess.DEVNULL)
        p = psutil.Process(proc.pid)
        time.sleep(max(3.0, n * 0.25))  # all started
        c0 = p.cpu_times()
        t0 = time.monotonic()
        time.sleep(seconds)
        c1 = p.cpu_times()
        wall = time.monotonic() - t0
        proc.send_signal(signal.SIGTERM)
        proc.wait(60)
        cpu = (c1.user + c1.system) - (c0.user + c0.system)
        return cpu, wall
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--rounds", type=int, default=10)
    ap.add_argument("--idle", type=int, default=20)
    ap.add_argument("--idle-seconds", type=float, default=10.0)
    a = ap.parse_args()
    base, start = [], []
    for _ in range(a.rounds):  # alternate, so machine noise hits both alike
        base += bare_import_pynng(1)
        start += start_to_handshake(1)
    print(f"bare python -c 'import pynng'    median {median_ms(base):7.1f} ms")
    print(f"ekl start-to-handshake (pysam)   median {median_ms(start):7.1f} ms   "
          f"ratio {statistics.median(start) / statistics.median(base):.2f}x the bare import")
    rec = recovery(a.rounds)
    print(f"SIGKILL -> first source message after replay: median {median_ms(rec):7.1f} ms "
          f"(min {min(rec) * 1000:.1f}, max {max(rec) * 1000:.1f})   "
          f"ratio {statistics.median(rec) / statistics.median(start):.2f}x a cold start")
    cpu, wall = idle_cpu(a.idle, a.idle_seconds)
    print(f"launcher CPU supervising {a.idle} idle plugins at 1 s health interval: "
          f"{cpu / wall * 100:.2f}% of one core ({cpu * 1000 / wall / a.idle:.2f} ms CPU per "
          f"plugin per second)")


if __name__ == "__main__":
    main()
