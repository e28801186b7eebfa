"""Memory and time to refuse hostile plugin zips: the old way against launcher/plugin/zips.py.

Builds (cheaply, without compressing the whole payload) a zip whose root JSON unpacks to
``--mib`` MiB and a 1 MiB zip bomb that unpacks to 1 GiB, then measures, each in a fresh
process, the peak RSS growth and wall time of:

* ``baseline``: ``json.loads(zf.read(name))``, what ``validate.check_zip`` does today;
* ``inspect``: ``zips.inspect_zip`` (central directory first, then a counting stream);
* ``zipjson``: ``zips.read_zip_json_limited`` (refuses from the header's size);
* ``bomb-inspect``: ``inspect_zip`` on the bomb (the old ``manifest.unpack_zip`` writes the
  whole GiB to the cache, which this script does not repeat).

Prints one line per case and the ratios against the baseline from the same run.
"""

from __future__ import annotations

import argparse
import subprocess
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "tests"))

from test_safezip import RSS, bomb, huge_json_zip  # noqa: E402

TIMED = RSS.replace("import json,", "import time, json,").replace(
    "before = resource", "t0 = time.perf_counter()\nbefore = resource").replace(
    "print((resource", "print(round(time.perf_counter() - t0, 3), (resource")


def run(how: str, path: Path) -> tuple:
    cp = subprocess.run([sys.executable, "-c", TIMED, how, str(path)], capture_output=True,
                        text=True, timeout=600)
    secs, mib = cp.stdout.split()
    return float(secs), int(mib), cp.stderr.strip()[:100]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--mib", type=int, default=128, help="size of the root JSON (default 128)")
    args = ap.parse_args()
    with tempfile.TemporaryDirectory() as d:
        z = huge_json_zip(Path(d) / "p.zip", args.mib)
        b = bomb(Path(d) / "b.zip")
        print(f"zip with a {args.mib} MiB root JSON: {z.stat().st_size} bytes; "
              f"bomb: {b.stat().st_size} bytes -> 1 GiB")
        results = {}
        for how, path in (("baseline", z), ("inspect", z), ("zipjson", z), ("inspect", b)):
            label = how if path == z else "bomb-inspect"
            results[label] = run(how, path)
            secs, mib, err = results[label]
            print(f"{label:13} {secs:8.3f} s  RSS +{mib:5d} MiB  {err}")
        base_s, base_m, _ = results["baseline"]
        for label in ("inspect", "zipjson"):
            secs, mib, _ = results[label]
            print(f"{label}/baseline: time {secs / base_s:.4f}x, RSS growth "
                  f"{mib / max(base_m, 1):.4f}x")


if __name__ == "__main__":
    main()
