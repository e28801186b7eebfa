"""Start-to-first-output of a Python in a conda-style env: ekl's activation vs the bare floor.

Builds a conda-style stand-in environment (``venv --copies`` plus py-rattler-installed
packages, one with an ``activate.d`` hook and ``env_vars.d`` file, and ``conda-meta/state``
env_vars; see tests/envs/envs_testlib.py), then times, alternating run by run:

* bare: ``PREFIX/bin/python -c 'print(1)'`` with the launcher's environment (the floor);
* ekl:  ``find_environment()`` + ``activation()`` + ``wrap_command()`` (the hook makes it go
  through ``/bin/sh``, which then execs python), plus ``check_lock_for_launch`` (cached);
* ekl-nohook: the same for an env without activate.d hooks (no shell at all).

It also times the lock verdict's cache key (issue 13 item 13: name, mtime and size of every
``conda-meta/*.json`` record) on a prefix with ``--records`` records, against the old key
(the folder's mtime alone), both measured here.

For context: ``conda run -n ENV python ...`` costs about 2 s per start on top of the floor
(conda's own Python start plus its activation; issue 4 and conda's issue tracker report
1.5-3 s); there is no conda here to measure it.

Run: ``.venv/bin/python bench/bench_envs.py [-n 40]``.
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Callable, Dict, List

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "tests" / "envs"))


def _first_output(argv: List[str], env: Dict[str, str]) -> float:
    t0 = time.perf_counter()
    p = subprocess.Popen(argv, env=env, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL)
    assert p.stdout is not None
    p.stdout.readline()
    dt = time.perf_counter() - t0
    p.stdout.close()
    p.wait()
    return dt


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("-n", type=int, default=40, help="runs of each variant (default 40)")
    ap.add_argument("--records", type=int, default=300,
                    help="conda-meta records for the cache-key timing (default 300)")
    args = ap.parse_args()
    import envs_testlib as lib  # the conda stand-in builders of the tests

    from ekl.envs import check_lock_for_launch, find_environment
    from ekl.envs import lock as lockmod
    from ekl.envs.lock import current_subdir
    from ekl.envs.probe import clean_env

    with tempfile.TemporaryDirectory(prefix="ekl-bench-") as tmp:
        t = Path(tmp)
        os.environ["HOME"] = str(t / "home")
        os.environ["EKL_CACHE_DIR"] = str(t / "cache")
        for k in lib.CONDA_VARS:
            os.environ.pop(k, None)
        chan_root = t / "channel"
        (chan_root / "noarch").mkdir(parents=True)
        pkgs = {}
        for name, version, files in [
            ("ekl-hello", "1.0", {"share/ekl-hello/hello.txt": b"hello\n"}),
            ("ekl-data", "0.1", {"etc/conda/activate.d/ekl-data.sh": lib.HOOK.encode(),
                                 "etc/conda/env_vars.d/ekl-data.json": b'{"EKL_DATA_DIR": "/x"}'}),
        ]:
            pkg, _ = lib.build_pkg(chan_root, name, version, files)
            pkgs[f"{name}-{version}"] = pkg
        chan = lib.Channel(chan_root, pkgs)
        root = lib.make_conda_root(t / "home" / "miniforge3")
        os.environ["CONDA_EXE"] = str(root / "bin" / "conda")
        lib.make_conda_prefix(root / "envs" / "hooked", chan, state_env_vars={"EKL_MODE": "b"})
        lib.make_conda_prefix(root / "envs" / "plain", chan, versions={"ekl-hello": "1.0"})
        plugin = lib.write_plugin(t / "plugin", env="hooked")
        lib.write_conda_lock(plugin / "conda-lock.yml", list(pkgs.values()), current_subdir())
        lock_field = None  # the plugin's `ekl.lock`: none, so conda-lock.yml beside it
        code = ["-c", "print(1)"]
        base = clean_env()

        def ekl(name: str) -> Callable[[], float]:
            def run() -> float:
                t0 = time.perf_counter()
                env = find_environment("conda", name, plugin_dir=plugin)
                check_lock_for_launch(plugin, lock_field, env, "warn")
                argv = env.wrap_command([str(env.python), *code])
                child = env.activation(base)
                return (time.perf_counter() - t0) + _first_output(argv, child)
            return run

        bare_py = str(root / "envs" / "hooked" / "bin" / "python")
        variants: Dict[str, Callable[[], float]] = {
            "bare": lambda: _first_output([bare_py, *code], base),
            "ekl": ekl("hooked"),
            "ekl-nohook": ekl("plain"),
        }
        for f in variants.values():  # warm the page cache and ekl's lock cache
            f()
        times: Dict[str, List[float]] = {k: [] for k in variants}
        for _ in range(args.n):
            for k, f in variants.items():
                times[k].append(f())
        # in-process cost alone (what the launcher adds before spawning)
        t0 = time.perf_counter()
        for _ in range(200):
            env = find_environment("conda", "hooked", plugin_dir=plugin)
            check_lock_for_launch(plugin, lock_field, env, "warn")
            env.wrap_command(["python"])
            env.activation(base)
        overhead_ms = (time.perf_counter() - t0) / 200 * 1000
        # the cache key over many records vs the folder mtime alone
        big = t / "big"
        (big / "conda-meta").mkdir(parents=True)
        for i in range(args.records):
            (big / "conda-meta" / f"pkg{i}-1.0-h0_0.json").write_text('{"name": "x"}' * 40)
        lock_path = plugin / "conda-lock.yml"
        reps = 300
        t0 = time.perf_counter()
        for _ in range(reps):
            lockmod._cache_key(lock_path, big)
        key_us = (time.perf_counter() - t0) / reps * 1e6
        t0 = time.perf_counter()
        for _ in range(reps):
            lock_path.stat()
            (big / "conda-meta").stat()
        old_us = (time.perf_counter() - t0) / reps * 1e6

    med = {k: statistics.median(v) * 1000 for k, v in times.items()}
    print(f"runs per variant: {args.n} (alternating), median start-to-first-output:")
    for k, v in med.items():
        q = sorted(times[k])
        print(f"  {k:<11} {v:7.1f} ms   (p10 {q[len(q) // 10] * 1000:.1f}, "
              f"p90 {q[len(q) * 9 // 10] * 1000:.1f})")
    print(f"  ratio ekl/bare:        {med['ekl'] / med['bare']:.2f}")
    print(f"  ratio ekl-nohook/bare: {med['ekl-nohook'] / med['bare']:.2f}")
    print(f"  ekl in-process work (find + cached lock check + activation): {overhead_ms:.2f} ms")
    print(f"  lock cache key, {args.records} records: {key_us:.0f} us (folder mtime only: "
          f"{old_us:.0f} us, ratio {key_us / old_us:.1f})")
    print("  for context, `conda run` adds about 2000 ms per start (published figure)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
