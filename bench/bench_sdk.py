"""ekl's SDK vs the official Python SDK (PyPI ekuiper 2.4.2) under the same host.

Both plugins are copies of ``tests/plugins/compat`` (official public API only), started by
ekl's host in this process; the official one runs in the test suite's cached venv (same
Python version, same pynng as ours; built on first use), ours on this interpreter. Both
stay up for the whole run, and the measurements alternate between them round by round
(the order flips every round), so machine noise hits both alike. Per round and SDK:

* function calls: ``Exec`` on ``echo`` one after another through ekl's ``FunctionClient``
  (the host's REP; each call is one inverted request/reply round trip);
* source messages: ``counter`` with ``interval: 0`` emits as fast as it can; the host
  receives the raw bytes from its PULL socket (no decoding, so the plugin side is the
  one being measured) after a warm-up that fills the socket buffers;
* plugin CPU: user+system time of the plugin process (psutil, all its threads) over the
  same window, divided by the calls or messages.

Printed: the median round's rates and the CPU over all rounds (each round does the same
work, so that is the mean), with the ratio ours/official (rates: higher is better for ours;
CPU: lower is better for ours).

    .venv/bin/python bench/bench_sdk.py [--calls N] [--messages N] [--rounds R]
                                        [--transport pynng|native] [--json FILE]
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Callable, Dict, List, Tuple

import psutil
import pynng

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO / "tests"))

from conftest import make_plugin, official_sdk_python  # noqa: E402  (the test suite's venv helper)
from ekl.launcher.host.instance import PluginInstance  # noqa: E402
from ekl.launcher.settings import LaunchOptions  # noqa: E402
from ekl.launcher.start import open_plugin  # noqa: E402
from ekuiper import protocol  # noqa: E402
from ekuiper.protocol import Control, FuncMeta, Meta  # noqa: E402
from ekuiper.transport import TransportTimeout  # noqa: E402

SIDES = ("official", "ekl")
METRICS = (  # key, label, higher is better
    ("calls_per_s", "function calls/s", True),
    ("messages_per_s", "source messages/s", True),
    ("cpu_us_per_call", "plugin CPU us/call", False),
    ("cpu_us_per_message", "plugin CPU us/message", False),
)


def print_results(title: str, values: Dict[str, Dict[str, float]],
                  ratio: Dict[str, float], metrics: Tuple[Tuple[str, str, bool], ...] = METRICS,
                  base: str = "official") -> None:
    """The official/ekl table every SDK bench prints (bench_sdk_c.py uses it too, also
    against an older checkout: ``base`` names the first column)."""
    print(title)
    print(f"{'':24}{base:>12}{'ekl':>12}{'ekl/' + base:>14}")
    for k, label, higher in metrics:
        better = "higher is better" if higher else "lower is better"
        print(f"{label:24}{values[base][k]:>12,.1f}{values['ekl'][k]:>12,.1f}"
              f"{ratio[k]:>13.2f}x  ({better})")


def cpu_s(pid: int) -> float:
    t = psutil.Process(pid).cpu_times()
    return t.user + t.system


def bench_calls(inst: PluginInstance, calls: int) -> Dict[str, float]:
    fc = inst.start_function("echo")
    fmeta = FuncMeta("bench", "op1", 0, 0)
    for i in range(min(200, calls)):  # warm-up
        fc.exec([i], fmeta)
    assert inst.pid is not None
    c0, t0 = cpu_s(inst.pid), time.perf_counter()
    for i in range(calls):
        fc.exec([i, "x"], fmeta)
    t1, c1 = time.perf_counter(), cpu_s(inst.pid)
    return {"calls_per_s": calls / (t1 - t0), "cpu_us_per_call": (c1 - c0) / calls * 1e6}


def _source(inst: PluginInstance, meta: Meta, host: str) -> Tuple[Callable[[], bytes],
                                                                   Callable[[], None]]:
    """(recv, stop) for the bench source. ``host="native"`` reads with the native transport's
    PULL directly, which takes many queued frames per system call, so the plugin, not the
    host, sets the message rate; ``"ekl"`` is ekl's ordinary host (its SourceStream, on the
    transport $EKUIPER_TRANSPORT names: native by default, pynng as eKuiper's mangos is C)."""
    config = {"interval": 0}
    if host == "ekl":
        stream = inst.start_source("counter", meta, "", config)
        stream.sock.recv_timeout_ms = 10000
        return stream.sock.recv, lambda: inst.stop_source("counter", meta)
    from ekuiper.transport import get_transport

    pull = get_transport("native").listen_pull(protocol.data_url(meta, inst.ipc_dir), retries=5,
                                               interval_s=0.1, recv_timeout_ms=10000)
    ctrl = Control("counter", protocol.TYPE_SOURCE, meta, "", config)
    inst.command(protocol.encode_command(protocol.CMD_START, ctrl), "start bench source")

    def stop() -> None:
        pull.close()
        inst.command(protocol.encode_command(protocol.CMD_STOP, ctrl), "stop bench source")

    return pull.recv, stop


def bench_messages(inst: PluginInstance, messages: int, round_no: int,
                   host: str = "ekl") -> Dict[str, float]:
    meta = Meta(f"bench{round_no}x{inst.pid}", "op1", 0)
    recv, stop = _source(inst, meta, host)
    got = 0
    try:
        for _ in range(min(2000, messages)):  # warm-up; fills the buffers to their steady state
            recv()
            got += 1
        assert inst.pid is not None
        c0, t0 = cpu_s(inst.pid), time.perf_counter()
        for _ in range(messages - 1):
            recv()
            got += 1
        last = protocol.decode_source_message(recv())
        t1, c1 = time.perf_counter(), cpu_s(inst.pid)
    except (pynng.Timeout, TransportTimeout):
        # The official SDK's source dies when its send waits over 1 s (it ignores argv's
        # sendTimeout): on a very busy machine a host that stalls that long kills it.
        assert inst.process is not None
        raise SystemExit(f"plugin {inst.name}: its source stopped sending after {got} messages "
                         f"(nothing for 10 s); stderr: {inst.process.tail(10)}") from None
    assert last.error is None and last.message is not None, last
    stop()
    return {"messages_per_s": messages / (t1 - t0), "cpu_us_per_message": (c1 - c0) / messages * 1e6}


def describe(python: str) -> str:
    code = ("import sys, pynng, ekuiper; print('Python %d.%d.%d' % sys.version_info[:3], "
            "'pynng', pynng.__version__, 'ekuiper from', ekuiper.__file__)")
    return subprocess.run([python, "-c", code], capture_output=True, text=True,
                          check=True).stdout.strip()


def run(calls: int, messages: int, rounds: int, transport: str = "native",
        host: str = "ekl") -> Dict[str, object]:
    pythons = {"official": str(official_sdk_python()), "ekl": sys.executable}
    for side in SIDES:
        print(f"{side:9} {describe(pythons[side])}")
    results: Dict[str, Dict[str, List[float]]] = {s: {m[0]: [] for m in METRICS} for s in SIDES}
    with tempfile.TemporaryDirectory(prefix="eklbench-") as tmp:
        folders = {s: make_plugin(Path(tmp), "compat") for s in SIDES}
        opts = {"official": LaunchOptions(python=pythons["official"]),
                "ekl": LaunchOptions(python=pythons["ekl"],
                                     extra_env={"EKUIPER_TRANSPORT": transport})}
        with open_plugin(str(folders["official"]), opts["official"]) as off, \
                open_plugin(str(folders["ekl"]), opts["ekl"]) as ours:
            insts = {"official": off, "ekl": ours}
            print(f"official pid {off.pid} (sockets in {off.ipc_dir}); "
                  f"ekl pid {ours.pid} (sockets in {ours.ipc_dir}, {transport} transport)")
            for r in range(rounds):
                order = SIDES if r % 2 == 0 else SIDES[::-1]
                for side in order:
                    got = bench_calls(insts[side], calls)
                    got.update(bench_messages(insts[side], messages, r, host))
                    for k, v in got.items():
                        results[side][k].append(v)
                    print(f"round {r + 1} {side:9} " + "  ".join(
                        f"{label} {got[k]:,.1f}" for k, label, _ in METRICS))
    # Rates: the median round. CPU: all rounds' CPU over all rounds' work, because psutil's
    # CPU times tick in 10 ms steps, which a single round's median would magnify.
    medians = {s: {k: (statistics.mean(v) if k.startswith("cpu_") else statistics.median(v))
                   for k, v in results[s].items()} for s in SIDES}
    return {"calls": calls, "messages": messages, "rounds": rounds, "transport": transport,
            "host": host,
            "rounds_data": results, "median": medians,
            "ratio": {k: medians["ekl"][k] / medians["official"][k] for k, _, _ in METRICS}}


def main(argv: List[str]) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--calls", type=int, default=3000, help="function calls per round and SDK")
    ap.add_argument("--messages", type=int, default=30000,
                    help="source messages per round and SDK")
    ap.add_argument("--rounds", type=int, default=5)
    ap.add_argument("--transport", default="native", choices=["pynng", "native"],
                    help="EKUIPER_TRANSPORT for ekl's SDK (default: native, the SDK's default; "
                         "the official SDK always uses pynng)")
    ap.add_argument("--host", default="ekl", choices=["ekl", "native"],
                    help="the host's source PULL: ekl (ekl's host, on the transport "
                         "$EKUIPER_TRANSPORT names for this process; run with "
                         "EKUIPER_TRANSPORT=pynng for an nng PULL as eKuiper's mangos) or "
                         "native, a native PULL read directly, many frames per system call, "
                         "so the plugin sets the message rate")
    ap.add_argument("--json", metavar="FILE", help="also write the figures as JSON")
    a = ap.parse_args(argv)
    if a.calls < 1 or a.messages < 2 or a.rounds < 1:
        ap.error("--calls, --messages and --rounds must be positive (--messages at least 2)")
    t0 = time.monotonic()
    res = run(a.calls, a.messages, a.rounds, a.transport, a.host)
    med, ratio = res["median"], res["ratio"]  # type: ignore[index]
    print_results(f"\n{a.rounds} rounds of {a.calls} calls and {a.messages} messages per SDK; "
                  f"rates: median round, CPU: all rounds:", med, ratio)  # type: ignore[arg-type]
    print(f"took {time.monotonic() - t0:.1f} s")
    if a.json:
        Path(a.json).write_text(json.dumps(res, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
