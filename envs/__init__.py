"""Plugin environments without ``conda run``: find, activate, check, create and pack them.

The launcher imports this package on every plugin start, so only light modules load here;
doctor, create and pack (and the optional conda-lock, py-rattler and conda-pack they use)
load when their command runs.
"""

from __future__ import annotations

from .locate import find_environment, list_environments
from .lock import check_lock_for_launch
from .model import LOCAL_ENV_DIR, EnvError, Environment

__all__ = ["EnvError", "Environment", "LOCAL_ENV_DIR", "find_environment", "list_environments",
           "check_lock_for_launch"]
