"""Plugin environments without ``conda run``: find, activate, check, create and pack them.

A pure library: it takes a :class:`PluginEnv` (what the launcher's plugin reader decided a
plugin asks for) and never parses plugin JSON. The launcher imports this package on every
plugin start, so only light modules load here; doctor, create and pack (and the optional
conda-lock, py-rattler and conda-pack they use) load when their command runs.
"""

from __future__ import annotations

from .locate import find_environment, list_environments, plugin_environment
from .lock import check_lock_for_launch, find_lock_file
from .model import (
    KINDS,
    LOCAL_ENV_DIR,
    EnvError,
    EnvFailed,
    Environment,
    EnvKind,
    LockDrift,
    PluginEnv,
)

__all__ = ["EnvError", "EnvFailed", "EnvKind", "Environment", "KINDS", "LOCAL_ENV_DIR",
           "LockDrift", "PluginEnv", "check_lock_for_launch", "find_environment",
           "find_lock_file", "list_environments", "plugin_environment"]
