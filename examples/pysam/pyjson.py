"""Source ``pyjson``: emits ``{"name": ..., "value": n}`` every ``interval`` seconds.

The data source (the stream's DATASOURCE) becomes ``name``; ``config`` comes from
``sources/pyjson.yaml`` merged with the stream's options.
"""

import threading
from typing import Any, Dict

from ekuiper import Context, Source


class PyJson(Source):
    def __init__(self) -> None:
        self.name = "pyjson"
        self.interval = 0.2
        self.start = 2021
        self.stopped = threading.Event()

    def configure(self, datasource: str, conf: Dict[str, Any]) -> None:
        if datasource:
            self.name = datasource
        self.interval = float(conf.get("interval", self.interval))
        self.start = int(conf.get("start", self.start))
        if self.interval < 0:
            raise ValueError(f"interval must be >= 0, got {self.interval}")

    def open(self, ctx: Context) -> None:
        # write() works on both SDKs: ekl's logger logs the line at INFO (tagged with the
        # rule), the official SDK's get_logger() is sys.stdout.
        ctx.get_logger().write(f"pyjson emitting every {self.interval:.2f} s\n")
        n = self.start
        while not self.stopped.is_set():
            ctx.emit({"name": self.name, "value": n}, {"source": "pyjson"})
            n += 1
            self.stopped.wait(self.interval)

    def close(self, ctx: Context) -> None:
        self.stopped.set()
