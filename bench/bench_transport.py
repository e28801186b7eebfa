"""Plugin-side CPU per function call and per source message: native vs pynng transport.

One run, one host: a pynng REP (function channel) and a pynng PULL (source channel) in
another process, as eKuiper's host plays them. The plugin side runs in this process and
drives the transports through ``ekuiper.transport.get_transport`` the way the runtime does:

* call: the inverted request/reply of a function — send the previous result as a request,
  receive the next ``Exec`` command as the reply (one round trip per call);
* message: one ``{"message": ..., "meta": ...}`` PUSH per source tuple, timed until the
  host has received the last one (so work pynng does after ``send`` returns is counted).

CPU is this process's user+system time from psutil, nng's own threads included. Rounds
alternate between transports and the median is reported, so machine noise hits both.

    python bench/bench_transport.py [--calls N] [--messages N] [--rounds R] [--json]

Importable: ``run(calls=..., messages=..., rounds=..., transports=...)`` returns the
figures as a dict (the SDK bench can add the official SDK's numbers beside them).
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from typing import Dict, List, Optional, Sequence

import psutil

try:
    from ekuiper.transport import get_transport
except ImportError:  # run from a checkout without the SDK installed
    sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "sdk"))
    from ekuiper.transport import get_transport

COMMAND = (b'{"func":"Exec","arg":[21,2,"{\\"ruleId\\":\\"rule1\\",\\"opId\\":\\"op1\\",'
           b'\\"instanceId\\":0,\\"funcId\\":0}"]}')
RESULT = b'{"state":true,"result":42}'
MESSAGE = (b'{"message":{"temperature":21.5,"humidity":63,"device":"sensor-0017",'
           b'"ts":1735689600123},"meta":{"topic":"bench"}}')
END = b"__end__"

_HOST = r"""
import sys, threading, pynng
rep_url, pull_url, command = sys.argv[1], sys.argv[2], sys.argv[3].encode()
rep = pynng.Rep0(); rep.recv_max_size = 0; rep.listen(rep_url)
pull = pynng.Pull0(); pull.recv_max_size = 0; pull.listen(pull_url)
def serve():
    while True:
        try:
            rep.recv()
            rep.send(command)
        except pynng.Closed:
            return
threading.Thread(target=serve, daemon=True).start()
print("ready", flush=True)
n = 0
while True:
    m = pull.recv()
    if m == b"__end__":
        print(n, flush=True)
        n = 0
    else:
        n += 1
"""


class Host:
    """The host-side peers in their own process (their CPU is not the plugin's)."""

    def __init__(self) -> None:
        self.dir = tempfile.mkdtemp(prefix="eklb", dir="/tmp")
        self.rep_url = f"ipc://{self.dir}/func_bench.ipc"
        self.pull_url = f"ipc://{self.dir}/rule_op_0.ipc"
        self.proc = subprocess.Popen(
            [sys.executable, "-c", _HOST, self.rep_url, self.pull_url, COMMAND.decode()],
            stdout=subprocess.PIPE)
        assert self.proc.stdout is not None
        if self.proc.stdout.readline().strip() != b"ready":
            raise RuntimeError("bench host did not start (is pynng installed?)")

    def received(self) -> int:
        assert self.proc.stdout is not None
        return int(self.proc.stdout.readline())

    def close(self) -> None:
        self.proc.kill()
        self.proc.wait()
        if self.proc.stdout is not None:
            self.proc.stdout.close()
        shutil.rmtree(self.dir, ignore_errors=True)


def _cpu(p: psutil.Process) -> float:
    t = p.cpu_times()
    return t.user + t.system


def bench_calls(transport: str, host: Host, n: int) -> Dict[str, float]:
    sock = get_transport(transport).dial_req(host.rep_url, recv_timeout_ms=5000,
                                             send_timeout_ms=5000, retries=50,
                                             interval_s=0.02)
    me = psutil.Process()
    try:
        for _ in range(200):  # warm up
            sock.send(RESULT)
            sock.recv()
        c0, t0 = _cpu(me), time.perf_counter()
        for _ in range(n):
            sock.send(RESULT)
            sock.recv()
        wall, cpu = time.perf_counter() - t0, _cpu(me) - c0
    finally:
        sock.close()
    return {"per_s": n / wall, "cpu_us": cpu / n * 1e6}


def bench_messages(transport: str, host: Host, n: int) -> Dict[str, float]:
    sock = get_transport(transport).dial_push(host.pull_url, send_timeout_ms=5000,
                                              retries=50, interval_s=0.02)
    me = psutil.Process()
    try:
        for _ in range(200):
            sock.send(MESSAGE)
        sock.send(END)
        host.received()
        c0, t0 = _cpu(me), time.perf_counter()
        for _ in range(n):
            sock.send(MESSAGE)
        sock.send(END)
        got = host.received()
        wall, cpu = time.perf_counter() - t0, _cpu(me) - c0
    finally:
        sock.close()
    if got != n:
        raise RuntimeError(f"{transport}: host received {got} of {n} messages")
    return {"per_s": n / wall, "cpu_us": cpu / n * 1e6}


def run(calls: int = 20000, messages: int = 50000, rounds: int = 3,
        transports: Sequence[str] = ("native", "pynng")) -> Dict[str, Dict[str, float]]:
    samples: Dict[str, Dict[str, List[float]]] = {
        t: {"calls_per_s": [], "call_cpu_us": [], "messages_per_s": [], "message_cpu_us": []}
        for t in transports}
    host = Host()
    try:
        for _ in range(rounds):
            for t in transports:
                c = bench_calls(t, host, calls)
                m = bench_messages(t, host, messages)
                s = samples[t]
                s["calls_per_s"].append(c["per_s"])
                s["call_cpu_us"].append(c["cpu_us"])
                s["messages_per_s"].append(m["per_s"])
                s["message_cpu_us"].append(m["cpu_us"])
    finally:
        host.close()
    return {t: {k: statistics.median(v) for k, v in s.items()} for t, s in samples.items()}


def report(res: Dict[str, Dict[str, float]]) -> str:
    lines = [f"{'transport':<10} {'calls/s':>10} {'CPU us/call':>12} "
             f"{'messages/s':>11} {'CPU us/msg':>11}"]
    for t, r in res.items():
        lines.append(f"{t:<10} {r['calls_per_s']:>10.0f} {r['call_cpu_us']:>12.1f} "
                     f"{r['messages_per_s']:>11.0f} {r['message_cpu_us']:>11.1f}")
    if "native" in res and "pynng" in res:
        n, p = res["native"], res["pynng"]
        lines.append(
            f"native/pynng: CPU per call {n['call_cpu_us'] / p['call_cpu_us']:.2f}x, "
            f"CPU per message {n['message_cpu_us'] / p['message_cpu_us']:.2f}x, "
            f"call rate {n['calls_per_s'] / p['calls_per_s']:.2f}x, "
            f"message rate {n['messages_per_s'] / p['messages_per_s']:.2f}x")
    return "\n".join(lines)


def main(argv: Optional[Sequence[str]] = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    ap.add_argument("--calls", type=int, default=20000)
    ap.add_argument("--messages", type=int, default=50000)
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--transports", default="native,pynng")
    ap.add_argument("--json", action="store_true", help="print the figures as JSON")
    a = ap.parse_args(argv)
    res = run(a.calls, a.messages, a.rounds, [t for t in a.transports.split(",") if t])
    print(json.dumps(res, indent=2) if a.json else report(res))
    return 0


if __name__ == "__main__":
    sys.exit(main())
