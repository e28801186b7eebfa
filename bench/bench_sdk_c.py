"""Plugin CPU per function call and per source message, ekl's SDK vs the official one,
under a C nng host (``nngcat``), so that no Python runs on the host side of the sockets.

Why a C host: with ekl's Python host in the bench process, the host's own latency and the
host process competing for the same two cores shape the plugin's loop; ``nngcat`` answers
in microseconds and costs the plugin nothing extra, the way eKuiper's Go runtime does.

Both plugins are one generated plugin file (official public API only: ``Echo`` function,
``Counter`` source as in ``tests/plugins/compat``), started by ekl's host for the control
channel only; the official one runs in the test suite's cached venv (same Python, same
pynng), ours on this interpreter. The data channels belong to ``nngcat``:

* function calls: ``nngcat --rep0 --listen func_NAME.ipc --data ORDER`` answers every
  request the function sends (its handshake, then each result) with the same ``Exec``
  order, so the plugin runs its call loop as fast as it can;
* source messages: ``nngcat --pull0 --listen RULE_OP_0.ipc`` takes what the ``counter``
  source (``interval: 0``) pushes.

Each ``nngcat`` writes what it receives (one quoted line per message) to a file; the bench
counts the lines at the start and the end of a window of ``--seconds`` and reads the
plugin's user+system CPU (psutil, all threads) over the same window. Only one plugin
works at a time (the other's ``nngcat`` is stopped with SIGSTOP), the order flips every
round, and the printed CPU is all rounds' CPU over all rounds' work.

    .venv/bin/python bench/bench_sdk_c.py [--rounds R] [--seconds S] [--no-orjson]
                                          [--transport native|pynng] [--json FILE]
                                          [--before PYTHON] [--only func|source]

Run it with another interpreter (e.g. an older checkout's ``.venv/bin/python``) to measure
that checkout's SDK: ekl's plugin runs on the interpreter that runs the bench.
``--before PYTHON`` adds a third plugin, ekl's SDK as that interpreter imports it (an
older checkout's ``.venv/bin/python``), measured in the same rounds in turn with the
others: a change's effect against a baseline from the same run, which the host's noise
(tens of per cent between runs here) would otherwise hide. ``--only`` measures one kind.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import textwrap
import time
from pathlib import Path
from typing import Dict, List, Tuple

import psutil

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO / "tests"))

from bench_sdk import METRICS, print_results  # noqa: E402  (one table for both benches)

from conftest import official_sdk_python  # noqa: E402  (the test suite's venv helper)
from ekl.launcher.host.instance import PluginInstance  # noqa: E402
from ekl.launcher.settings import LaunchOptions  # noqa: E402
from ekl.launcher.start import open_plugin  # noqa: E402
from ekuiper import protocol  # noqa: E402
from ekuiper.protocol import Control, FuncMeta, Meta  # noqa: E402
from ekuiper.transport import sp  # noqa: E402

SIDES = ("official", "ekl")

PLUGIN = textwrap.dedent('''\
    """Bench plugin (official SDK public API only): one function, one source."""
    import threading

    from ekuiper import Function, PluginConfig, Source, plugin


    class Echo(Function):
        def validate(self, args):
            return ""

        def exec(self, args, ctx):
            return {"args": args, "rule": ctx.get_rule_id(), "op": ctx.get_op_id()}

        def is_aggregate(self):
            return False


    class Counter(Source):
        def __init__(self):
            self.stop = threading.Event()

        def configure(self, datasource, conf):
            self.ds, self.conf = datasource, conf

        def open(self, ctx):
            n = 0
            while not self.stop.is_set():
                n += 1
                ctx.emit({"ds": self.ds, "n": n, "conf": self.conf}, {"rule": ctx.get_rule_id()})
                self.stop.wait(0)

        def close(self, ctx):
            self.stop.set()


    if __name__ == "__main__":
        plugin.start(PluginConfig("%(name)s", {"counter": lambda: Counter()}, {},
                                  {"%(func)s": lambda: Echo()}))
    ''')


def make_plugin(root: Path, name: str, func: str) -> Path:
    d = root / name
    d.mkdir()
    (d / f"{name}.py").write_text(PLUGIN % {"name": name, "func": func})
    (d / f"{name}.json").write_text(json.dumps({
        "version": "v1.0.0", "language": "python", "executable": f"{name}.py",
        "sources": ["counter"], "sinks": [], "functions": [func]}))
    (d / "sources").mkdir()
    (d / "sources" / "counter.yaml").write_text("default:\n  interval: 0\n")
    return d


def cpu_s(pid: int) -> float:
    t = psutil.Process(pid).cpu_times()
    return t.user + t.system


def count_lines(path: Path) -> int:
    with open(path, "rb") as f:
        return sum(chunk.count(b"\n") for chunk in iter(lambda: f.read(1 << 20), b""))


def remove_socket(url: str) -> None:
    """Unlink a listener's socket file once its host process is dead: a host ended by a
    signal (nngcat, the Python PULL host) never unlinks it, and the official SDK's sockets
    live in /tmp, where they would pile up run after run."""
    sp.remove_stale(protocol.url_path(url))  # only a socket file nobody listens on


class CHost:
    """One ``nngcat`` process, paused (SIGSTOP) whenever its plugin is not measured.

    ``url``: the address it listens on (its socket file is removed when it is closed)."""

    def __init__(self, argv: List[str], out: Path, url: str) -> None:
        self.url = url
        self.out = out
        self._f = open(out, "wb")
        self.proc = subprocess.Popen(argv, stdout=self._f, stderr=subprocess.DEVNULL)

    def pause(self) -> None:
        self.proc.send_signal(signal.SIGSTOP)

    def resume(self) -> None:
        self.proc.send_signal(signal.SIGCONT)

    def close(self) -> None:
        self.proc.send_signal(signal.SIGCONT)
        self.proc.terminate()
        try:
            self.proc.wait(5)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()
        self._f.close()
        remove_socket(self.url)


def window(inst: PluginInstance, host: CHost, seconds: float) -> Tuple[float, float, int]:
    """(wall s, plugin CPU s, messages) over one window while ``host`` runs."""
    assert inst.pid is not None
    host.resume()
    time.sleep(min(0.5, seconds / 2))  # warm-up: the loop reaches its steady state
    n0, c0, t0 = count_lines(host.out), cpu_s(inst.pid), time.perf_counter()
    time.sleep(seconds)
    t1, c1, n1 = time.perf_counter(), cpu_s(inst.pid), count_lines(host.out)
    host.pause()
    return t1 - t0, c1 - c0, n1 - n0


#: ``--source-host python``: a PULL host in its own process (the SDK's native transport,
#: which takes many queued frames per system call), answering SIGUSR1 with its count.
PY_PULL_HOST = textwrap.dedent('''\
    import signal, sys
    from ekuiper.transport import get_transport
    pull = get_transport("native").listen_pull(sys.argv[1], retries=5, interval_s=0.1)
    n = 0
    def report(*_):
        sys.stdout.write("%d\\n" % n)
        sys.stdout.flush()
    signal.signal(signal.SIGUSR1, report)
    print("ready", flush=True)
    while True:
        pull.recv()
        n += 1
    ''')


def py_source_window(inst: PluginInstance, root: Path, rule: str,
                     seconds: float) -> Tuple[float, float, int]:
    """One window of the ``counter`` source pushing to a Python PULL host in another process."""
    meta = Meta(rule, "op1", 0)
    url = protocol.data_url(meta, inst.ipc_dir)
    host = subprocess.Popen([sys.executable, "-c", PY_PULL_HOST, url], stdout=subprocess.PIPE,
                            text=True)
    assert host.stdout is not None

    def count() -> int:
        host.send_signal(signal.SIGUSR1)
        return int(host.stdout.readline())  # type: ignore[union-attr]

    ctrl = Control("counter", protocol.TYPE_SOURCE, meta, "", {"interval": 0})
    try:
        host.stdout.readline()  # ready: listening
        inst.command(protocol.encode_command(protocol.CMD_START, ctrl), "start bench source")
        try:
            assert inst.pid is not None
            time.sleep(min(0.5, seconds / 2))
            n0, c0, t0 = count(), cpu_s(inst.pid), time.perf_counter()
            time.sleep(seconds)
            t1, c1, n1 = time.perf_counter(), cpu_s(inst.pid), count()
            return t1 - t0, c1 - c0, n1 - n0
        finally:
            inst.command(protocol.encode_command(protocol.CMD_STOP, ctrl), "stop bench source")
    finally:
        host.terminate()
        host.wait()
        remove_socket(url)


def source_window(inst: PluginInstance, nngcat: str, root: Path, side: str, rule: str,
                  seconds: float) -> Tuple[float, float, int]:
    """One window of the ``counter`` source pushing to a fresh ``nngcat --pull0``.

    A source cannot be paused like a function: a host that stops reading makes its send
    time out after the send timeout, which ends the source (in both SDKs). So each window
    starts the source on a new rule's socket and stops it afterwards, as eKuiper does."""
    meta = Meta(rule, "op1", 0)
    url = protocol.data_url(meta, inst.ipc_dir)
    host = CHost([nngcat, "--pull0", "--listen", url, "--quoted"],
                 root / f"{side}.{rule}.source", url)
    ctrl = Control("counter", protocol.TYPE_SOURCE, meta, "", {"interval": 0})
    try:
        time.sleep(0.2)  # nngcat listens
        inst.command(protocol.encode_command(protocol.CMD_START, ctrl), "start bench source")
        try:
            return window(inst, host, seconds)
        finally:
            inst.command(protocol.encode_command(protocol.CMD_STOP, ctrl), "stop bench source")
    finally:
        host.close()
        host.out.unlink()


def describe(python: str) -> str:
    code = ("import sys, pynng, ekuiper; print('Python %d.%d.%d' % sys.version_info[:3], "
            "'pynng', pynng.__version__, 'ekuiper from', ekuiper.__file__)")
    return subprocess.run([python, "-c", code], capture_output=True, text=True,
                          check=True).stdout.strip()


def run(rounds: int, seconds: float, transport: str, orjson: bool = True,
        source_host: str = "nngcat", before: str = "",
        only: str = "") -> Dict[str, object]:
    nngcat = shutil.which("nngcat")
    if nngcat is None:
        raise SystemExit("nngcat not found: install nng's tools (apt-get install nng-utils)")
    pythons = {"official": str(official_sdk_python()), "ekl": sys.executable}
    sides: Tuple[str, ...] = SIDES
    if before:
        pythons["before"] = before
        sides = SIDES + ("before",)
    for side in sides:
        print(f"{side:9} {describe(pythons[side])}")
    tag = f"{os.getpid()}"
    fmeta = FuncMeta("bench", "op1", 0, 0).encode()
    order = protocol.encode_func_request(protocol.FUNC_EXEC, [1, "x", fmeta]).decode()
    sums = {s: {"wall_f": 0.0, "cpu_f": 0.0, "n_f": 0, "wall_s": 0.0, "cpu_s": 0.0, "n_s": 0}
            for s in sides}
    per_round: Dict[str, List[Dict[str, float]]] = {s: [] for s in sides}
    with tempfile.TemporaryDirectory(prefix="eklbenchc-") as tmp:
        root = Path(tmp)
        funcs = {s: f"cbecho{s[0]}{tag}" for s in sides}
        folders = {s: make_plugin(root, f"cbench{s[0]}{tag}", funcs[s]) for s in sides}
        ekl_env = {"EKUIPER_TRANSPORT": transport, "EKUIPER_ORJSON": "1" if orjson else "0"}
        opts = {s: LaunchOptions(python=pythons[s],
                                 extra_env={} if s == "official" else ekl_env) for s in sides}
        hosts: List[CHost] = []
        try:
            with contextlib.ExitStack() as stack:
                insts = {s: stack.enter_context(open_plugin(str(folders[s]), opts[s]))
                         for s in sides}
                off, ours = insts["official"], insts["ekl"]
                fhost: Dict[str, CHost] = {}
                for side, inst in insts.items():
                    furl = protocol.function_url(funcs[side], inst.ipc_dir)
                    fhost[side] = CHost([nngcat, "--rep0", "--listen", furl, "--quoted",
                                         "--data", order], root / f"{side}.func", furl)
                    hosts.append(fhost[side])
                    time.sleep(0.2)  # nngcat listens
                    inst.command(protocol.encode_command(
                        protocol.CMD_START, Control(funcs[side], protocol.TYPE_FUNC)),
                        "start bench function")
                    time.sleep(0.2)  # connected; from now on it runs only in its windows
                    fhost[side].pause()
                print(f"official pid {off.pid}; ekl pid {ours.pid} ({transport} transport); "
                      + (f"before pid {insts['before'].pid}; " if before else "")
                      + f"{seconds} s windows")
                for r in range(rounds):
                    # every side in turn, the order rotating, so that no side is always
                    # measured right after the same other one
                    k = r % len(sides)
                    turn = sides[k:] + sides[:k]
                    for side in (turn if r % 2 == 0 else turn[::-1]):
                        wf, cf, nf = (window(insts[side], fhost[side], seconds)
                                      if only != "source" else (1.0, 0.0, 10))
                        rule = f"cb{side[0]}{tag}r{r}"
                        if only == "func":
                            ws, cs, ns = 1.0, 0.0, 10
                        elif source_host == "nngcat":
                            ws, cs, ns = source_window(insts[side], nngcat, root, side, rule,
                                                       seconds)
                        else:
                            ws, cs, ns = py_source_window(insts[side], root, rule, seconds)
                        if nf < 10 or ns < 10:
                            raise SystemExit(f"{side}: only {nf} calls and {ns} messages in "
                                             f"{seconds} s: is the plugin serving?")
                        s = sums[side]
                        s["wall_f"] += wf
                        s["cpu_f"] += cf
                        s["n_f"] += nf
                        s["wall_s"] += ws
                        s["cpu_s"] += cs
                        s["n_s"] += ns
                        got = {"calls_per_s": nf / wf, "cpu_us_per_call": cf / nf * 1e6,
                               "messages_per_s": ns / ws, "cpu_us_per_message": cs / ns * 1e6}
                        per_round[side].append(got)
                        print(f"round {r + 1} {side:9} " + "  ".join(
                            f"{label} {got[k]:,.1f}" for k, label, _ in METRICS))
        finally:
            for h in hosts:
                h.close()
    total = {s: {"calls_per_s": v["n_f"] / v["wall_f"],
                 "cpu_us_per_call": v["cpu_f"] / v["n_f"] * 1e6,
                 "messages_per_s": v["n_s"] / v["wall_s"],
                 "cpu_us_per_message": v["cpu_s"] / v["n_s"] * 1e6} for s, v in sums.items()}
    res_before = ({"before": total["before"],
                   "ratio_to_before": {k: _ratio(total["ekl"][k], total["before"][k])
                                       for k, _, _ in METRICS}} if before else {})
    return {**res_before,"rounds": rounds, "seconds": seconds, "transport": transport, "host": "nngcat",
            "orjson": orjson, "source_host": source_host,
            "rounds_data": per_round, "total": total,
            "ratio": {k: _ratio(total["ekl"][k], total["official"][k]) for k, _, _ in METRICS}}


def _ratio(a: float, b: float) -> float:
    """a / b; NaN for a kind that was not measured (``--only``)."""
    return a / b if b else float("nan")


def main(argv: List[str]) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--rounds", type=int, default=5)
    ap.add_argument("--seconds", type=float, default=2.0,
                    help="length of each measured window (per SDK, round and kind)")
    ap.add_argument("--transport", default="native", choices=["pynng", "native"],
                    help="EKUIPER_TRANSPORT for ekl's SDK (the official SDK always uses pynng)")
    ap.add_argument("--source-host", choices=["nngcat", "python"], default="nngcat",
                    help="the source's PULL host: nngcat, or python: the SDK's native PULL in "
                         "another process, which reads many frames per system call (nngcat "
                         "takes at most ~20,000 messages/s here, less than ekl's source sends)")
    ap.add_argument("--no-orjson", action="store_true",
                    help="run ekl's SDK with EKUIPER_ORJSON=0 (standard library JSON only, "
                         "as in an environment without orjson)")
    ap.add_argument("--json", metavar="FILE", help="also write the figures as JSON")
    ap.add_argument("--before", metavar="PYTHON", default="",
                    help="also measure ekl's SDK as this interpreter imports it (an older "
                         "checkout's .venv/bin/python), in the same rounds")
    ap.add_argument("--only", choices=["func", "source"], default="",
                    help="measure function calls or source messages only")
    a = ap.parse_args(argv)
    if a.rounds < 1 or a.seconds <= 0:
        ap.error("--rounds and --seconds must be positive")
    t0 = time.monotonic()
    res = run(a.rounds, a.seconds, a.transport, not a.no_orjson, a.source_host, a.before,
              a.only)
    tot, ratio = res["total"], res["ratio"]  # type: ignore[index]
    shown = tuple(m for m in METRICS if not a.only or
                  ("call" in m[0]) == (a.only == "func"))
    print_results(f"\n{a.rounds} rounds of {a.seconds} s per SDK and kind, all rounds together "
                  f"(function host: nngcat, source host: {a.source_host}):", tot,
                  ratio, shown)  # type: ignore[arg-type]
    if a.before:
        print_results("\nthe same rounds, against the --before SDK:", tot,
                      res["ratio_to_before"], shown, base="before")  # type: ignore[arg-type]
    print(f"took {time.monotonic() - t0:.1f} s")
    if a.json:
        Path(a.json).write_text(json.dumps(res, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
