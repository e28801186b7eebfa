"""Profile ekl's SDK hot paths (cProfile) under a C nng host (``nngcat``).

Runs, in this process, the function runtime's serving loop against ``nngcat --rep0``
(which answers every request with one ``Exec`` order) and a source's ``emit`` loop
against ``nngcat --pull0``, each for ``--seconds`` under cProfile, and prints the top
entries by own time (tottime). The figures in docs/performance.md come from this.

    .venv/bin/python bench/profile_sdk.py [--seconds S] [--top N] [--what func|source|both]
                                          [--split ROUNDS]

``--split ROUNDS`` runs no profiler: it alternates windows of ``--seconds`` in which the
same loops do less (the function answers every call with a ready-made reply: only the
transport is left; the source's ``emit`` encodes but does not send, or does nothing:
only the plugin's own loop is left) and prints each variant's median CPU of the serving
thread per call or message (``getrusage(RUSAGE_THREAD)``), so that the shares of the
transport, the decoding/encoding and the plugin's own code show in the loop as it runs
(a profiler's overhead and a warm cache hide them: a call costs 2-3 times its
``timeit`` figure here, with the thread sleeping in ``recv`` between calls). A third
window, a bare socket with no SDK code, gives the floor of any Python REQ loop here.
"""

from __future__ import annotations

import argparse
import cProfile
import io
import pstats
import resource
import shutil
import socket
import statistics
import struct
import subprocess
import sys
import tempfile
import threading
import time
from typing import Callable, Dict, List

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


def thread_cpu_us(fn: Callable[[], int]) -> float:
    """CPU of the calling thread (user + system) per unit of what ``fn`` returns."""
    r0 = resource.getrusage(resource.RUSAGE_THREAD)
    n = fn()
    r1 = resource.getrusage(resource.RUSAGE_THREAD)
    return (r1.ru_utime - r0.ru_utime + r1.ru_stime - r0.ru_stime) / max(n, 1) * 1e6


def print_split(title: str, unit: str, res: Dict[str, List[float]]) -> None:
    windows = len(next(iter(res.values())))
    print(f"=== {title}: median CPU of the serving thread per {unit} ({windows} windows) ===")
    for name, v in res.items():
        print(f"  {name:28} {statistics.median(v):6.1f} us   (min {min(v):.1f})")


def main(argv: List[str]) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--seconds", type=float, default=3.0)
    ap.add_argument("--top", type=int, default=15)
    ap.add_argument("--what", choices=["func", "source", "both"], default="both")
    ap.add_argument("--split", type=int, metavar="ROUNDS", default=0,
                    help="no profiler: alternate ROUNDS windows of the full loops and of "
                         "loops doing less, and print each one's CPU per call/message")
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

                if not a.split:
                    profile(serve, a.seconds, a.top, "function calls")
                else:
                    ready = handle(order)

                    def canned(data: bytes) -> bytes:
                        calls[0] += 1
                        return ready

                    bare = bare_round_trips(protocol.url_path(url), ready)
                    variants = {"full call": counted,
                                "transport only (canned reply)": canned,
                                "bare socket (no SDK)": None}
                    fres: Dict[str, List[float]] = {k: [] for k in variants}
                    for r in range(a.split):
                        for k in (list(variants) if r % 2 == 0 else list(variants)[::-1]):
                            run = (lambda: bare(a.seconds)) if variants[k] is None else \
                                (lambda: serve(a.seconds))
                            rt.handle = variants[k] or counted  # type: ignore[method-assign]
                            calls[0] = 0
                            th = threading.Thread(  # a thread of its own, as the runtime's
                                target=lambda got=fres[k], run=run: got.append(
                                    thread_cpu_us(run)))
                            th.start()
                            th.join()
                    print_split("function calls", "call", fres)
                rt.stop()
            if a.what in ("source", "both"):
                meta = Meta("prof", "op1", 0)
                url = protocol.data_url(meta, d)
                procs.append(subprocess.Popen([nngcat, "--pull0", "--listen", url],
                                              stdout=subprocess.DEVNULL))
                time.sleep(0.3)
                push = transport.dial_push(url, send_timeout_ms=1000, retries=20,
                                           interval_s=0.05)
                ctx = nosend_ctx(meta, push)  # (with a Beat, as the runtime's)
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

                if not a.split:
                    profile(emit_loop, a.seconds, a.top, "source messages")
                else:
                    class NoSend:
                        def send(self, data: bytes) -> None:
                            pass

                    real_emit = ctx.emit
                    svariants: Dict[str, Callable[..., None]] = {
                        "full emit": real_emit,
                        "emit without the send": ContextImpl.emit.__get__(nosend_ctx(meta, NoSend())),
                        "plugin loop only (no emit)": lambda m, meta=None: None}
                    sres: Dict[str, List[float]] = {k: [] for k in svariants}
                    for r in range(a.split):
                        for k in (list(svariants) if r % 2 == 0 else list(svariants)[::-1]):
                            ctx.emit = svariants[k]  # type: ignore[method-assign]
                            sres[k].append(thread_cpu_us(lambda: emit_loop(a.seconds)))
                    ctx.emit = real_emit  # type: ignore[method-assign]
                    print_split("source messages", "message", sres)
                push.close()
        finally:
            for p in procs:
                p.terminate()
                p.wait()
    return 0


def bare_round_trips(path: str, reply: bytes) -> Callable[[float], int]:
    """The floor of a Python REQ loop: a plain socket dialed to the same nngcat, sending
    ``reply`` as each request in one ``send`` and taking the order in one ``recv``, with
    no SDK code around them (what the SDK's transport adds shows against it)."""
    s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    s.connect(path)
    s.sendall(b"\x00SP\x00" + struct.pack(">H", 0x30) + b"\x00\x00")  # REQ
    if len(s.recv(8)) != 8:
        raise SystemExit("nngcat closed the bare connection")
    head = struct.Struct(">BQI")

    def run(seconds: float) -> int:
        rid, n = 0x80000000, 0
        end = time.monotonic() + seconds
        while True:
            for _ in range(256):
                rid = ((rid + 1) & 0x7FFFFFFF) | 0x80000000
                s.send(head.pack(1, len(reply) + 4, rid) + reply)
                s.recv(65536)  # (the order: small, whole, alone)
            n += 256
            if time.monotonic() > end:
                return n

    return run


def nosend_ctx(meta: Meta, emitter: object) -> ContextImpl:
    """A source context as the runtime makes it, sending to ``emitter``."""
    from ekuiper.runtime.liveness import Beat

    c = ContextImpl(meta, "counter")
    c.set_emitter(emitter)  # type: ignore[arg-type]
    c.beat = Beat()
    return c


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
