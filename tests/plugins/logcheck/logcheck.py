"""A test plugin (official public API only) that reports what ``ctx.get_logger()`` returns.

Its source ``logger`` logs one line through the logger with ``info`` and one with ``write``
(the official SDK's idiom), and emits one record describing what happened.
"""

import glob
import logging
import os
import threading

from ekuiper import Context, PluginConfig, Source, plugin

HERE = os.path.dirname(os.path.abspath(__file__))
NAME = os.path.splitext(os.path.basename(glob.glob(os.path.join(HERE, "*.json"))[0]))[0]


class LoggerSource(Source):
    def __init__(self):
        self.stop = threading.Event()

    def configure(self, datasource, conf):
        pass

    def open(self, ctx: Context):
        lg = ctx.get_logger()
        try:
            lg.info("hello from rule %s", ctx.get_rule_id())
            info = "ok"
        except Exception as e:
            info = f"{type(e).__name__}: {e}"
        try:  # the official SDK's idiom: its get_logger() is sys.stdout
            lg.write(f"written for rule {ctx.get_rule_id()}\n")
            lg.flush()
            write = "ok"
        except Exception as e:
            write = f"{type(e).__name__}: {e}"
        ctx.emit({"type": type(lg).__name__, "is_logger": isinstance(lg, logging.Logger),
                  "name": str(getattr(lg, "name", "")), "info": info, "write": write}, None)
        self.stop.wait()

    def close(self, ctx):
        self.stop.set()


if __name__ == "__main__":
    plugin.start(PluginConfig(NAME, {"logger": lambda: LoggerSource()}, {}, {}))
