"""The two types every other module of ``ekl.envs`` shares: the error and the environment.

Kept free of heavy imports: the launcher imports this on every plugin start.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Dict, List, Mapping, Optional

#: Kinds of environment ekl knows. All but ``venv`` are conda-style prefixes (``conda-meta/``)
#: and are activated by conda's rules.
KINDS = ("conda", "micromamba", "mamba", "pixi", "venv")


#: Where a plugin's environment lives when its JSON names none but a lock file sits beside
#: it: ``ekl env create`` builds it there, and ekl and ekl-python run the plugin in it.
LOCAL_ENV_DIR = ".ekl-env"


class EnvError(Exception):
    """A problem with a plugin's environment, said in one line with the fix.

    The launcher prints ``str(error)`` as is, so the message names the file, field or value
    at fault and the command or edit that mends it; never a traceback.
    """


class EnvFailed(EnvError):
    """The input was fine but the work failed (an installer, install.sh, a hash check):
    commands exit 1 for it, and 2 for a plain :class:`EnvError` (bad input)."""


@dataclass
class Environment:
    """One environment ekl can run a plugin in.

    ``conda_root`` is the conda installation the prefix belongs to, when one is known: conda's
    activation exports variables pointing at it (``CONDA_EXE`` and friends) and puts its
    ``condabin`` on ``PATH``. Environments unpacked from a conda-pack archive, or made by
    micromamba or pixi, have none, and then those variables are left out.
    """

    kind: str
    prefix: Path
    name: Optional[str]
    python: Path
    conda_root: Optional[Path] = field(default=None, repr=False, compare=False)
    root_prefix: Optional[Path] = field(default=None, repr=False, compare=False)
    found_in: str = field(default="", repr=False, compare=False)

    @property
    def is_conda_style(self) -> bool:
        return self.kind != "venv"

    def activation(self, base_env: Mapping[str, str]) -> Dict[str, str]:
        """Full environment for the child: what ``conda activate`` (POSIX) would leave.

        ``base_env`` is the launcher's own environment; ``PYTHONHOME``/``PYTHONPATH`` from it
        are dropped because they belong to the launcher's interpreter, not the plugin's.
        """
        from .activate import activation_env

        return activation_env(self, base_env)

    def wrap_command(self, argv: List[str],
                     base_env: Optional[Mapping[str, str]] = None) -> List[str]:
        """``argv`` itself, or a ``/bin/sh`` line that sources the env's activate.d hooks first.

        The shell ends in ``exec``, so the plugin keeps the PID the launcher started and gets
        its signals directly. Pass the same ``base_env`` as to :meth:`activation` when the
        launcher itself runs inside an activated conda env: conda would run that env's
        ``deactivate.d`` hooks first, and so does this.
        """
        from .activate import wrap_command

        return wrap_command(self, argv, base_env)

    def to_dict(self) -> Dict[str, Optional[str]]:
        return {"kind": self.kind, "prefix": str(self.prefix), "name": self.name,
                "python": str(self.python), "found_in": self.found_in}
