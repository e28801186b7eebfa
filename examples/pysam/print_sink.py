"""Sink ``print``: prints every record it receives, and acks it when the rule asks."""

from typing import Any, Dict

from ekuiper import Context, Sink


class PrintSink(Sink):
    def __init__(self) -> None:
        self.prefix = "receive:"

    def configure(self, conf: Dict[str, Any]) -> None:
        self.prefix = str(conf.get("prefix", self.prefix))

    def open(self, ctx: Context) -> None:
        ctx.get_logger().info("print sink open")

    def collect(self, ctx: Context, data: Any) -> None:
        text = data.decode("utf-8", "replace") if isinstance(data, bytes) else str(data)
        print(self.prefix, text, flush=True)
        ctx.ack_ok()  # sent only when the rule sets requireAck

    def close(self, ctx: Context) -> None:
        ctx.get_logger().info("print sink closed")
