"""supervisord's process states, their groups, and the transitions a watcher may make.

Imports nothing (as supervisord's ``states.py``): every module may use it, and an
impossible transition fails loudly (``check_transition``) instead of passing silently.
"""

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


#: No process is meant to run (supervisord's STOPPED_STATES).
STOPPED_STATES = frozenset({State.STOPPED, State.EXITED, State.FATAL})
#: A process exists or is being started (supervisord's RUNNING_STATES).
RUNNING_STATES = frozenset({State.STARTING, State.RUNNING, State.BACKOFF})
#: Waiting here ends: the plugin is serving, or nothing will bring it back by itself.
SETTLED_STATES = frozenset({State.RUNNING, State.EXITED, State.FATAL, State.STOPPED})

#: state -> the states a watcher may move to from it.
TRANSITIONS = {
    State.STOPPED: frozenset({State.STARTING, State.STOPPING, State.STOPPED}),
    State.STARTING: frozenset({State.RUNNING, State.BACKOFF, State.EXITED, State.FATAL,
                               State.STOPPING}),
    State.RUNNING: frozenset({State.BACKOFF, State.EXITED, State.STOPPING}),
    State.BACKOFF: frozenset({State.STARTING, State.FATAL, State.STOPPING}),
    State.STOPPING: frozenset({State.STOPPED}),
    State.EXITED: frozenset({State.STARTING, State.STOPPING}),
    State.FATAL: frozenset({State.STARTING, State.STOPPING}),
}


class TransitionError(AssertionError):
    """A watcher tried a transition the state machine does not have: a bug, not bad input."""


def check_transition(old: State, new: State) -> None:
    if new not in TRANSITIONS[old]:
        raise TransitionError(f"impossible state transition {old} -> {new}")
