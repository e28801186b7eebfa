"""Profile ekl's SDK hot paths (cProfile) under a C nng host (``nngcat``).

Runs, in this process, the function runtime's serving loop against ``nngcat --rep0``
(which answers every request with one ``Exec`` order) and a source's ``emit`` loop
against ``nngcat --pull0``, each for ``--seconds`` under cProfile, and prints the top
entries by own time (tottime). The figures in docs/performance.md come from this.

    .venv/bin/python bench/profile_sdk.py [--seconds S] [--top N] [--what func|source|both]
"""

from __future__ import annotations

import argparse
import cProfile
import io
import pstats
import shutil
import subprocess
import sys
import tempfile
import threading
import time
from typing import List

from ekuiper import protocol
from ekuiper.protocol import Control, FuncMeta, Meta
from ekuiper.runtime.contextimpl import ContextImpl
from ekuiper.runtime.symbols import FunctionRuntime, Settings
from ekuiper.transport import get_transport


class Echo:
    """The bench plugin's function (as in bench_sdk_c.py)."""

    def exec(self, args, ctx):  # noqa: ANN001, ANN201
        return {"args": args, "rule": ctx.get_rule_id(), "op": ctx.get_op_id()}


def profile(fn, seconds: float, top: int, title: str) -> None:  # noqa: ANN001
    prof = cProfile.Profile(time.thread_time)  # CPU, not waiting
    n = prof.runcall(fn, seconds)
    out = io.StringIO()
    st = pstats.Stats(prof, stream=out)
    st.sort_stats("tottime").print_stats(top)
    print(f"=== {title}: {n:,} in {seconds} s ===")
    print("\n".join(line for line in out.getvalue().splitlines()
                    if line.strip() and not line.startswith("   Ordered")))


def main(argv: List[str]) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--seconds", type=float, default=3.0)
    ap.add_argument("--top", type=int, default=15)
    ap.add_argument("--what", choices=["func", "source", "both"], default="both")
    a = ap.parse_args(argv)
    nngcat = shutil.which("nngcat")
    if nngcat is None:
        raise SystemExit("nngcat not found: install nng's tools (apt-get install nng-utils)")
    with tempfile.TemporaryDirectory(prefix="eklprof-") as d:
        transport = get_transport()
        procs = []
        try:
            if a.what in ("func", "both"):
                fmeta = FuncMeta("bench", "op1", 0, 0).encode()
                order = protocol.encode_func_request(protocol.FUNC_EXEC, [1, "x", fmeta])
                url = protocol.function_url("echo", d)
                procs.append(subprocess.Popen([nngcat, "--rep0", "--listen", url, "--data",
                                               order.decode()]))
                time.sleep(0.3)
                rt = FunctionRuntime(Control("echo", protocol.TYPE_FUNC), Echo(), transport,
                                     Settings(ipc_dir=d))
                rt.start()  # dials; its thread serves until we take over below
                rt.running = False
                assert rt.thread is not None
                rt.thread.join()
                calls = [0]
                handle = rt.handle

                def counted(data: bytes) -> bytes:
                    calls[0] += 1
                    return handle(data)

                rt.handle = counted  # type: ignore[method-assign]

                def serve(seconds: float) -> int:
                    rt.running = True
                    threading.Timer(seconds, lambda: setattr(rt, "running", False)).start()
                    rt._run()
                    return calls[0]

                profile(serve, a.seconds, a.top, "function calls")
                rt.stop()
            if a.what in ("source", "both"):
                meta = Meta("prof", "op1", 0)
                url = protocol.data_url(meta, d)
                procs.append(subprocess.Popen([nngcat, "--pull0", "--listen", url],
                                              stdout=subprocess.DEVNULL))
                time.sleep(0.3)
                push = transport.dial_push(url, send_timeout_ms=1000, retries=20,
                                           interval_s=0.05)
                ctx = ContextImpl(meta, "counter")
                ctx.set_emitter(push)
                conf = {"interval": 0}
                stop = threading.Event()

                def emit_loop(seconds: float) -> int:
                    end = time.monotonic() + seconds
                    n = 0
                    while not stop.is_set():
                        n += 1
                        ctx.emit({"ds": "", "n": n, "conf": conf}, {"rule": ctx.get_rule_id()})
                        stop.wait(0)
                        if n % 256 == 0 and time.monotonic() > end:
                            break
                    return n

                profile(emit_loop, a.seconds, a.top, "source messages")
                push.close()
        finally:
            for p in procs:
                p.terminate()
                p.wait()
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
