"""The gap a rule's source sees when the plugin crashes under ``ekl-python``.

A host that behaves like eKuiper (listens first, stale-handshake rule, journal) starts the
pysam plugin with ``pythonBin = ekl-python``, starts a source emitting every millisecond,
SIGKILLs the real plugin (not ekl-python) and measures the time between the last message
before the crash and the first one after. Baseline, same run: a cold start of the plugin
process to its first message under plain python (what eKuiper would need at best to
restart it, if it restarted plugins at all).

Run: ``.venv/bin/python bench/bench_relay.py [--rounds 10]``
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import sys
import tempfile
import time
from pathlib import Path

import psutil

from ekl.launcher.host.instance import PluginInstance
from ekl.launcher.process import LaunchSpec
from ekl.launcher.settings import HostSettings
from ekuiper import protocol
from ekuiper.protocol import Meta

REPO = Path(__file__).resolve().parent.parent
PYSAM = REPO / "examples" / "pysam"
EKL_PYTHON = str(Path(sys.executable).with_name("ekl-python"))


def plugin_copy(root: str) -> Path:
    """pysam with an ``ekl`` section: the bench crashes it more often than the start limit."""
    dest = Path(root) / "pysam"
    shutil.copytree(PYSAM, dest, ignore=shutil.ignore_patterns("__pycache__"))
    manifest = json.loads((dest / "pysam.json").read_text())
    # Crashes further apart than startsecs are isolated ones: no back-off between them.
    manifest["ekl"] = {"start_limit": 1000, "startsecs": 0.5}
    (dest / "pysam.json").write_text(json.dumps(manifest))
    return dest


def host(python_bin: str, ipc: str, folder: Path) -> PluginInstance:
    spec = LaunchSpec("pysam", (python_bin, "-u", str(folder / "pysam.py"),
                                protocol.encode_portable_config(1000)), str(folder),
                      dict(os.environ, EKL_STATUS_DIR=ipc, EKUIPER_IPC_DIR=ipc))
    return PluginInstance(spec, HostSettings(ipc_dir=ipc), ipc_dir=ipc, control_dir=ipc)


def cold_start(ipc: str, folder: Path) -> float:
    inst = host(sys.executable, ipc, folder)
    try:
        t0 = time.perf_counter()
        inst.start_process()
        s = inst.start_source("pyjson", Meta("bench", "cold", 0), "", {"interval": 0.001})
        s.recv(10)
        return time.perf_counter() - t0
    finally:
        inst.close()


def crash_gaps(rounds: int, ipc: str, folder: Path) -> list:
    inst = host(EKL_PYTHON, ipc, folder)
    gaps = []
    try:
        inst.start_process()
        stream = inst.start_source("pyjson", Meta("bench", "src", 0), "", {"interval": 0.001})
        stream.recv(10)
        for _ in range(rounds):
            kids = [c for c in psutil.Process(inst.pid).children()
                    if "pysam.py" in " ".join(c.cmdline())]
            while not kids:
                time.sleep(0.01)
                kids = [c for c in psutil.Process(inst.pid).children()
                        if "pysam.py" in " ".join(c.cmdline())]
            stream.drain(0.005)
            last = time.perf_counter()
            kids[0].kill()
            while True:
                msg = stream.recv(15)
                now = time.perf_counter()
                if msg.message and msg.message["value"] <= 2022:  # counts restart: new process
                    gaps.append(now - last)
                    break
                last = now
            time.sleep(0.8)
    finally:
        inst.process.popen.kill()  # eKuiper's stop
        inst.process.popen.wait()
        inst.close()
    return gaps


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--rounds", type=int, default=10)
    a = ap.parse_args()
    ipc = tempfile.mkdtemp(prefix="eklb-")
    try:
        folder = plugin_copy(ipc)
        cold = [cold_start(ipc, folder) for _ in range(a.rounds)]
        gaps = crash_gaps(a.rounds, ipc, folder)
    finally:
        shutil.rmtree(ipc, ignore_errors=True)
    mc, mg = statistics.median(cold), statistics.median(gaps)
    print(f"cold start to first message (plain python)     median {mc * 1000:7.1f} ms")
    print(f"ekl-python: source gap across a plugin SIGKILL  median {mg * 1000:7.1f} ms "
          f"(min {min(gaps) * 1000:.1f}, max {max(gaps) * 1000:.1f})   ratio {mg / mc:.2f}x "
          f"a cold start; eKuiper itself never sees the crash")


if __name__ == "__main__":
    main()
