"""Runs py-rattler's work in a child process: ``python -m ekl.envs._rattler_worker``.

py-rattler's runtime threads can still be busy when an interpreter finalizes, which aborts
the process (seen here: a segfault or "PyGILState_Release: thread state must be current"
in about 1 exit in 20 right after an install). The launcher and the test runner must never
die of that, so the work happens here and this process leaves with ``os._exit``.

Request on stdin (JSON): ``{"op": "install", "files": [...], "prefix": P, "cache": C}`` or
``{"op": "solve", "channels": [...], "specs": [...], "prefix": P, "cache": C}``. Answer on the
last stdout line: ``{"ok": true, "count": N}`` or ``{"ok": false, "error": "one line"}``.
"""

from __future__ import annotations

import json
import os
import sys
from typing import Any, Dict


def _run(req: Dict[str, Any]) -> int:
    import asyncio

    import rattler

    async def go() -> int:
        if req["op"] == "install":
            records = [await rattler.RepoDataRecord.from_package_archive(f)
                       for f in req["files"]]
        elif req["op"] == "solve":
            records = await rattler.solve(sources=req["channels"], specs=req["specs"])
        else:
            raise ValueError(f"unknown op {req['op']!r}")
        print(f"ekl: linking {len(records)} packages into {req['prefix']}", file=sys.stderr,
              flush=True)
        await rattler.install(records, target_prefix=req["prefix"], cache_dir=req["cache"],
                              show_progress=False, execute_link_scripts=False)
        return len(records)

    return asyncio.run(go())


def main() -> None:
    code = 0
    try:
        count = _run(json.loads(sys.stdin.read()))
        out: Dict[str, Any] = {"ok": True, "count": count}
    except ImportError as e:
        out, code = {"ok": False, "error": f"ImportError: {e}", "missing": True}, 3
    except Exception as e:  # reported to the parent as one line
        text = str(e).strip().splitlines()
        out, code = {"ok": False, "error": f"{type(e).__name__}: "
                     f"{text[0] if text else ''}"}, 1
    print(json.dumps(out), flush=True)
    sys.stderr.flush()
    os._exit(code)


if __name__ == "__main__":
    main()
