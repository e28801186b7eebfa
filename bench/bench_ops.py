"""``ekl metrics`` scrape time, against reading the same status files (the same run's baseline).

The scrape reads every status file at request time (no cache), so its cost grows with the
plugins and symbol rows. The baseline is the floor any reader pays: open, read and
json-parse the same files (what ``ekl status --json`` does). The ratio says what building
the exposition and serving it over HTTP adds.

    .venv/bin/python bench/bench_ops.py [--plugins 20] [--symbols 6] [--scrapes 200] [--json FILE]
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import tempfile
import time
import urllib.request
from pathlib import Path
from typing import Any, Callable, Dict, List

from ekl.launcher.ops import metrics


def status_files(folder: Path, plugins: int, symbols: int) -> None:
    """One file per plugin, as ekl-python writes them, with every new field filled in."""
    now = time.time()
    for i in range(plugins):
        stats = [{"symbol": f"sym{j}", "kind": ("source", "sink", "function")[j % 3],
                  "rule": f"rule{j % 4}", "messages": 10_000 + j, "records": 5000, "acks": 4999,
                  "calls": 7777, "errors": j, "last_error": "x" * 200, "last_error_at": now - 3,
                  "busy_since": now - 0.01 if j % 3 == 2 else None} for j in range(symbols)]
        p = {"name": f"plugin{i:02d}", "state": "RUNNING", "pid": os.getpid(), "started_at": now - 600,
             "uptime": 600.0, "restarts": 3, "last_restarts": [
                 {"at": now - 100, "reason": "crash", "exit": "exited with code 1", "replay": []}],
             "last_exit": None, "fatal_reason": None, "rss": 80 << 20, "cpu_percent": 0.4,
             "threads": 6, "open_files": 9, "processes": 1,
             "symbols": [{"symbol": s["symbol"], "type": s["kind"], "meta": {}} for s in stats],
             "interpreter": sys.executable, "environment": "conda:/opt/envs/x",
             "cpu_seconds": 12.3, "restarts_by_reason": {"crash": 2, "hang": 1},
             "containment": "cgroup", "symbol_stats": stats}
        doc = {"version": 1, "launcher_pid": os.getpid(), "written_at": now, "mode": "ekl-python",
               "plugins": [p]}
        (folder / f"plugin{i:02d}.json").write_text(json.dumps(doc))


def timed(fn: Callable[[], Any], n: int) -> List[float]:
    fn()  # warm-up (imports, page cache)
    out = []
    for _ in range(n):
        t0 = time.perf_counter()
        fn()
        out.append(time.perf_counter() - t0)
    return out


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--plugins", type=int, default=20)
    ap.add_argument("--symbols", type=int, default=6, help="symbol rows per plugin")
    ap.add_argument("--scrapes", type=int, default=200)
    ap.add_argument("--json", metavar="FILE", help="also write the figures here")
    a = ap.parse_args()
    with tempfile.TemporaryDirectory(prefix="eklbench-") as d:
        folder = Path(d)
        status_files(folder, a.plugins, a.symbols)
        files = sorted(str(p) for p in folder.glob("*.json"))
        collect = metrics.collector_for([d])

        def baseline() -> None:
            for f in files:
                with open(f, "rb") as fh:
                    json.loads(fh.read())

        def build() -> None:
            metrics.exposition(collect)

        prom = str(folder / "ekl.prom")

        with metrics.serve("127.0.0.1:0", collect) as server:
            def scrape() -> None:
                with urllib.request.urlopen(server.url, timeout=10) as r:
                    r.read()

            rounds: Dict[str, List[float]] = {
                "baseline: read+parse the status files": timed(baseline, a.scrapes),
                "exposition (no HTTP)": timed(build, a.scrapes),
                "HTTP scrape of /metrics": timed(scrape, a.scrapes),
                "textfile write": timed(lambda: metrics.write_textfile(prom, collect), a.scrapes // 4),
            }
            size = len(metrics.exposition(collect)[0])
    base = statistics.median(rounds["baseline: read+parse the status files"])
    print(f"{a.plugins} plugins x {a.symbols} symbol rows, {a.scrapes} scrapes, exposition "
          f"{size / 1024:.0f} KiB, python {sys.version.split()[0]}")
    figures = {}
    for name, xs in rounds.items():
        med = statistics.median(xs)
        figures[name] = {"median_ms": med * 1000, "p95_ms": sorted(xs)[int(len(xs) * 0.95) - 1] * 1000,
                         "ratio_to_baseline": med / base}
        print(f"  {name:40s} median {med * 1000:7.2f} ms  p95 {figures[name]['p95_ms']:7.2f} ms  "
              f"x{med / base:6.1f} baseline")
    if a.json:
        Path(a.json).write_text(json.dumps(figures, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
