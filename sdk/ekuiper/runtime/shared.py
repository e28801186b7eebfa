"""Constants under the official SDK's module path; the values come from ``ekuiper.protocol``."""

from ..protocol import CMD_START, CMD_STOP, TYPE_FUNC, TYPE_SINK, TYPE_SOURCE

REPLY_OK = "ok"

__all__ = ["CMD_START", "CMD_STOP", "TYPE_SOURCE", "TYPE_SINK", "TYPE_FUNC", "REPLY_OK"]
