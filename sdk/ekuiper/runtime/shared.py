"""Constants under the official SDK's module path; the values come from ``ekuiper.protocol``.

The official SDK's ``REPLY_OK`` is the text ``"ok"``; ours is derived from the one wire
constant (``protocol.REPLY_OK``, bytes) so the two can never disagree.
"""

from ..protocol import CMD_START, CMD_STOP, TYPE_FUNC, TYPE_SINK, TYPE_SOURCE
from ..protocol import REPLY_OK as _REPLY_OK_BYTES

REPLY_OK = _REPLY_OK_BYTES.decode()

__all__ = ["CMD_START", "CMD_STOP", "TYPE_SOURCE", "TYPE_SINK", "TYPE_FUNC", "REPLY_OK"]
