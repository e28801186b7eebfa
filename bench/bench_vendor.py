"""What vendoring ekl's SDK costs, measured in one run on this machine:

1. zip size: the skeleton plugin packaged plain and with ``--vendor-sdk``;
2. start to first function reply on a bare interpreter (``venv --without-pip``, nothing in
   it): the vendored zip (its own ``ekuiper/``, nothing on PYTHONPATH), against the plain
   zip with ekl hosting its SDK on PYTHONPATH (the baseline); medians, bytecode allowed;
3. the generated install.sh finding a conda env by name with /bin/sh alone (``env -i``,
   nothing to install), against ``python3 -c pass`` (the baseline).

Run: ``.venv/bin/python bench/bench_vendor.py [--rounds 10]``
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
import zipfile
from pathlib import Path

from ekl.launcher.authoring.package import write_zip
from ekl.launcher.authoring.scaffold import init_plugin
from ekl.launcher.plugin import load
from ekl.launcher.settings import HostSettings, LaunchOptions
from ekl.launcher.start import prepare


def unpack(zpath: Path, dest: Path) -> Path:
    with zipfile.ZipFile(zpath) as zf:
        zf.extractall(dest)
    return dest


def start_to_reply(folder: Path, python: str, ipc: str, rounds: int) -> float:
    m = load(folder)
    times = []
    for _ in range(rounds):
        inst = prepare(m, LaunchOptions(python=python), HostSettings(ipc_dir=ipc))
        t0 = time.perf_counter()
        try:
            inst.start_process()
            assert inst.start_function("bench_upper").exec(["x"]) == "X"
            times.append(time.perf_counter() - t0)
        finally:
            inst.close()
    return statistics.median(times) * 1000


def timed(argv, rounds: int, **kw) -> float:
    times = []
    for _ in range(rounds):
        t0 = time.perf_counter()
        subprocess.run(argv, check=True, capture_output=True, **kw)
        times.append(time.perf_counter() - t0)
    return statistics.median(times) * 1000


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--rounds", type=int, default=10)
    a = ap.parse_args()
    # as under eKuiper: the plugin folder is writable, so the first start leaves bytecode
    # behind for the next ones (with PYTHONDONTWRITEBYTECODE every start compiles the SDK)
    os.environ.pop("PYTHONDONTWRITEBYTECODE", None)
    with tempfile.TemporaryDirectory(prefix="eklb-", dir="/tmp") as tmp:
        t = Path(tmp)
        init_plugin("bench", t / "src" / "bench")
        m = load(t / "src" / "bench")
        plain = write_zip(m, t / "plain.zip")
        vend = write_zip(m, t / "vendored.zip", vendor_sdk=True)
        print(f"zip size: plain {plain.size} B, vendored {vend.size} B "
              f"(+{vend.size - plain.size} B, x{vend.size / plain.size:.2f})")

        subprocess.run([sys.executable, "-m", "venv", "--without-pip", str(t / "bare")],
                       check=True)
        py = str(t / "bare" / "bin" / "python")
        hosted = start_to_reply(unpack(t / "plain.zip", t / "p" / "bench"), py, tmp, a.rounds)
        own = start_to_reply(unpack(t / "vendored.zip", t / "v" / "bench"), py, tmp, a.rounds)
        print(f"start to first reply, bare interpreter: vendored {own:.0f} ms, ekl-hosted "
              f"{hosted:.0f} ms (baseline); ratio {own / hosted:.2f}")

        root = t / "home" / "miniforge3"
        env = root / "envs" / "plugenv"
        (env / "conda-meta").mkdir(parents=True)
        (env / "bin").mkdir()
        (env / "bin" / "python").symlink_to(os.path.realpath(sys.executable))
        (root / "conda-meta").mkdir()
        folder = t / "v" / "bench"
        j = folder / "bench.json"
        doc = json.loads(j.read_text())
        doc["ekl"] = {"virtualEnvType": "conda", "env": "plugenv"}
        j.write_text(json.dumps(doc))
        sh = timed(["/usr/bin/env", "-i", "PATH=/usr/bin:/bin", f"HOME={t / 'home'}",
                    "/bin/sh", str(folder / "install.sh")], a.rounds)
        base = timed(["python3", "-c", "pass"], a.rounds)
        print(f"install.sh finding a conda env by name (nothing to install): {sh:.0f} ms; "
              f"python3 -c pass {base:.0f} ms (baseline); ratio {sh / base:.2f}")


if __name__ == "__main__":
    main()
