"""Sink ``print``: prints every record it receives, and acks it when the rule asks."""

from typing import Any, Dict

from ekuiper import Context, Sink


class PrintSink(Sink):
    def __init__(self) -> None:
        self.prefix = "receive:"

    def configure(self, conf: Dict[str, Any]) -> None:
        self.prefix = str(conf.get("prefix", self.prefix))

    def open(self, ctx: Context) -> None:
        ctx.get_logger().write("print sink open\n")  # works on both SDKs (see pyjson.py)

    def collect(self, ctx: Context, data: Any) -> None:
        text = data.decode("utf-8", "replace") if isinstance(data, bytes) else str(data)
        print(self.prefix, text, flush=True)
        ctx.ack_ok()  # ekl's SDK sends it only when the rule sets requireAck

    def close(self, ctx: Context) -> None:
        ctx.get_logger().write("print sink closed\n")
