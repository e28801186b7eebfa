"""supervisord's process states, the words operators already know."""

from __future__ import annotations

from enum import Enum


class State(str, Enum):
    STOPPED = "STOPPED"      # not started, or stopped on request
    STARTING = "STARTING"    # process started, waiting for the handshake
    RUNNING = "RUNNING"      # handshake done, symbols served
    BACKOFF = "BACKOFF"      # died or failed to start; waiting before the next start
    STOPPING = "STOPPING"    # stop requested, killing the tree
    EXITED = "EXITED"        # exited and the restart policy says leave it
    FATAL = "FATAL"          # start limit reached; not retried

    def __str__(self) -> str:
        return self.value
