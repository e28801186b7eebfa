"""A test plugin that misbehaves on purpose, through the official SDK's public API only.

- ``spawn`` (and start-up, when a file named ``escape`` is in its folder) starts a
  ``setsid`` child and a double-forked daemon, and records their pids in ``pids-PID.txt``
  beside this file: processes that leave both the process group and the process tree.
- ``hang``: ``exec`` never returns. ``hangonce``: never returns in the first process that
  runs it with an argument >= 3 (a file ``hung-once`` marks it), answers at once after.
- ``bigline``: prints one line of N MB on stdout (or stderr), without buffering it whole.
- ``grow``: a thread that grows the resident memory by N MB every 0.1 s, forever.
- start-up: with a file ``slowstart``, no handshake for 60 s; with ``crashloud``, one 3 MB
  stderr line and exit 3 before the handshake.
- source ``broken``: ``open`` raises. Source ``quiet``: one message per ``interval`` s.
- sink ``stuck``: ``collect`` never returns; sink ``null`` acks every record.
"""

import glob
import os
import subprocess
import sys
import threading
import time

from ekuiper import Function, PluginConfig, Sink, Source, plugin

HERE = os.path.dirname(os.path.abspath(__file__))
NAME = os.path.splitext(os.path.basename(glob.glob(os.path.join(HERE, "*.json"))[0]))[0]
HOLD = []


def escape():
    """A setsid child and a double-forked daemon; their pids go to pids-PID.txt."""
    child = subprocess.Popen(["sleep", "1000"], start_new_session=True)
    r, w = os.pipe()
    pid = os.fork()
    if pid == 0:  # the first child: new session, fork the daemon, exit
        os.close(r)
        os.setsid()
        d = os.fork()
        if d == 0:
            os.close(w)
            os.execvp("sleep", ["sleep", "1001"])
        os.write(w, str(d).encode())
        os._exit(0)
    os.close(w)
    daemon = int(os.read(r, 32) or 0)
    os.close(r)
    os.waitpid(pid, 0)
    pids = [child.pid, daemon]
    with open(os.path.join(HERE, f"pids-{os.getpid()}.txt"), "w") as f:
        f.write(" ".join(map(str, pids)))
    return pids


class Echo(Function):
    def validate(self, args):
        return ""

    def exec(self, args, ctx):
        return args

    def is_aggregate(self):
        return False


class Hang(Echo):
    def exec(self, args, ctx):
        threading.Event().wait()


class HangOnce(Echo):
    def exec(self, args, ctx):
        mark = os.path.join(HERE, "hung-once")
        late = not isinstance(args[0], int) or args[0] >= 3  # a counter's 3rd record on
        if late and not os.path.exists(mark):
            open(mark, "w").close()
            threading.Event().wait()
        return args


class Spawn(Echo):
    def exec(self, args, ctx):
        return escape()


class BigLine(Echo):
    def exec(self, args, ctx):
        out = sys.stderr if len(args) > 1 and args[1] == "stderr" else sys.stdout
        chunk = "x" * (1024 * 1024)
        for _ in range(int(args[0])):
            out.write(chunk)
        out.write("\n")
        out.flush()
        return int(args[0])


class Grow(Echo):
    def exec(self, args, ctx):
        step = int(args[0]) * 1024 * 1024

        def grow():
            while True:
                block = bytearray(step)
                for i in range(0, step, 4096):  # touch the pages so they are resident
                    block[i] = 1
                HOLD.append(block)
                time.sleep(0.1)

        threading.Thread(target=grow, daemon=True).start()
        return os.getpid()


class Pid(Echo):
    def exec(self, args, ctx):
        return os.getpid()


class Counter(Source):
    def __init__(self):
        self.stop = threading.Event()

    def configure(self, datasource, conf):
        self.conf = conf

    def open(self, ctx):
        n = 0
        while not self.stop.is_set():
            n += 1
            ctx.emit({"n": n}, None)
            self.stop.wait(float(self.conf.get("interval", 0.01)))

    def close(self, ctx):
        self.stop.set()


class Broken(Source):
    def configure(self, datasource, conf):
        pass

    def open(self, ctx):
        raise ConnectionError("cannot reach the broker at mqtt://nowhere:1883")

    def close(self, ctx):
        pass


class Null(Sink):
    def configure(self, conf):
        pass

    def open(self, ctx):
        pass

    def collect(self, ctx, data):
        ctx.ack_ok()

    def close(self, ctx):
        pass


class Stuck(Sink):
    def configure(self, conf):
        pass

    def open(self, ctx):
        pass

    def collect(self, ctx, data):
        threading.Event().wait()

    def close(self, ctx):
        pass


if __name__ == "__main__":
    if os.path.exists(os.path.join(HERE, "escape")):
        escape()
    if os.path.exists(os.path.join(HERE, "slowstart")):
        time.sleep(60)  # a plugin still starting: no handshake for a minute
    if os.path.exists(os.path.join(HERE, "crashloud")):
        sys.stderr.write("e" * (3 * 1024 * 1024) + "\n")  # a 3 MB line, then a crash
        sys.stderr.flush()
        sys.exit(3)
    plugin.start(PluginConfig(
        NAME, {"counter": lambda: Counter(), "broken": lambda: Broken(),
               "quiet": lambda: Counter()},
        {"null": lambda: Null(), "stuck": lambda: Stuck()},
        {"echo": lambda: Echo(), "hang": lambda: Hang(), "hangonce": lambda: HangOnce(),
         "spawn": lambda: Spawn(), "bigline": lambda: BigLine(), "grow": lambda: Grow(),
         "pid": lambda: Pid()}))
