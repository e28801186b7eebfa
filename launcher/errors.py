"""Errors the user sees. Each message is one line naming the thing at fault and the fix."""

from __future__ import annotations

TYPE_CHECKING = False  # typing is not loaded at run time on the start path (docs/architecture.md)
if TYPE_CHECKING:
    from typing import Iterable, List


class EklError(Exception):
    """Base of every error ekl reports without a traceback."""

    exit_code = 2


class ManifestError(EklError):
    """Every problem found in a plugin's JSON and folder, one line each."""

    def __init__(self, problems: Iterable[str]) -> None:
        self.problems: List[str] = list(problems)
        super().__init__("\n".join(self.problems))


class PluginStartError(EklError):
    """The plugin process did not come up (exited, or no handshake in time)."""

    exit_code = 1


class CommandError(EklError):
    """The plugin answered a control command with an error text."""

    exit_code = 1


class HostTimeout(EklError):
    """The plugin did not answer in time (a command, a function call, an ack)."""

    exit_code = 1


class FunctionError(EklError):
    """A function call answered ``state: false``; the text is the plugin's."""

    exit_code = 1


class AckError(EklError):
    """A sink acknowledged a record with an error."""

    exit_code = 1


class EnvironmentDrift(EklError):
    """``--lock strict``: the environment differs from its lock file (as ``env check``)."""

    exit_code = 1


class PluginExited(EklError):
    """The plugin process died while the host was waiting on it."""

    exit_code = 1
