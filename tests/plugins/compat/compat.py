"""A test plugin that uses only the official SDK's public API (it runs on both SDKs).

Its name comes from its JSON file, so tests can run copies under unique names.
"""

import glob
import os
import sys
import threading
import time

from ekuiper import Function, PluginConfig, Sink, Source, plugin

HERE = os.path.dirname(os.path.abspath(__file__))
NAME = os.path.splitext(os.path.basename(glob.glob(os.path.join(HERE, "*.json"))[0]))[0]
HOLD = []


def mark(path, text):
    if path:
        with open(path, "a") as f:
            f.write(text + "\n")


class Counter(Source):
    """Emits {"ds", "n", "conf"}; ``error_every`` k sends an error instead of every k-th."""

    def __init__(self):
        self.stop = threading.Event()

    def configure(self, datasource, conf):
        self.ds = datasource
        self.conf = conf
        if conf.get("refuse"):
            raise ValueError("refused by configure")

    def open(self, ctx):
        n = 0
        every = int(self.conf.get("error_every", 0))
        limit = int(self.conf.get("limit", 0))
        while not self.stop.is_set():
            n += 1
            if every and n % every == 0:
                ctx.emit_error(f"error number {n}")
            else:
                ctx.emit({"ds": self.ds, "n": n, "conf": self.conf}, {"rule": ctx.get_rule_id()})
            if limit and n >= limit:
                self.stop.wait()
            self.stop.wait(float(self.conf.get("interval", 0.01)))

    def close(self, ctx):
        mark(self.conf.get("marker"), f"source closed {ctx.get_rule_id()}")
        self.stop.set()


class Stuck(Source):
    """``configure`` never returns: a plugin whose control thread hangs."""

    def configure(self, datasource, conf):
        threading.Event().wait()

    def open(self, ctx):
        pass

    def close(self, ctx):
        pass


class Collector(Sink):
    """Appends every record to ``out``; acks an error for records with "bad";
    ``delay_ms``: takes that long per record (a slow sink)."""

    def configure(self, conf):
        self.conf = conf

    def open(self, ctx):
        mark(self.conf.get("out"), "open")

    def collect(self, ctx, data):
        if self.conf.get("delay_ms"):
            time.sleep(self.conf["delay_ms"] / 1000)
        text = data.decode() if isinstance(data, bytes) else str(data)
        mark(self.conf.get("out"), text)
        if self.conf.get("raise_on_bad") and "bad" in text:
            raise RuntimeError("cannot write a bad record")
        if "bad" in text:
            ctx.ack_error("bad record")
        else:
            ctx.ack_ok()

    def close(self, ctx):
        mark(self.conf.get("out"), "closed")


class Echo(Function):
    def validate(self, args):
        return "" if len(args) >= 1 else "echo needs an argument"

    def exec(self, args, ctx):
        return {"args": args, "rule": ctx.get_rule_id(), "op": ctx.get_op_id()}

    def is_aggregate(self):
        return False


class Boom(Function):
    def validate(self, args):
        return ""

    def exec(self, args, ctx):
        raise ValueError(f"boom: {args}")

    def is_aggregate(self):
        return False


class Weird(Function):
    def validate(self, args):
        return ""

    def exec(self, args, ctx):
        return {1, 2, 3}

    def is_aggregate(self):
        return False


class Agg(Echo):
    def is_aggregate(self):
        return True


class Slow(Echo):
    def exec(self, args, ctx):
        time.sleep(float(args[0]))
        return "slept"


class Die(Echo):
    def exec(self, args, ctx):
        sys.stdout.flush()
        os._exit(int(args[0]) if args else 3)


class Grow(Echo):
    def exec(self, args, ctx):
        HOLD.append(bytearray(int(args[0]) * 1024 * 1024))
        for block in HOLD:  # touch the pages so they count as resident
            for i in range(0, len(block), 4096):
                block[i] = 1
        return sum(len(b) for b in HOLD)


class Pid(Echo):
    def exec(self, args, ctx):
        return os.getpid()


class Where(Echo):
    """What the plugin process really got: interpreter, SDK, sys.path, environment."""

    def exec(self, args, ctx):
        import ekuiper
        names = args[0] if args else []
        return {"executable": sys.executable, "ekuiper": ekuiper.__file__, "path": sys.path,
                "pid": os.getpid(), "cwd": os.getcwd(), "argv": sys.argv,
                "env": {k: os.environ.get(k) for k in names}}


if __name__ == "__main__":
    c = PluginConfig(NAME, {"counter": lambda: Counter(), "stuck": lambda: Stuck()},
                     {"collector": lambda: Collector()},
                     {"echo": lambda: Echo(), "boom": lambda: Boom(), "weird": lambda: Weird(),
                      "agg": lambda: Agg(), "slow": lambda: Slow(), "die": lambda: Die(),
                      "grow": lambda: Grow(), "pid": lambda: Pid(),
                      "where": lambda: Where()})
    plugin.start(c)
