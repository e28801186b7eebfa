"""The types every other module of ``ekl.envs`` shares: the error, the kinds table, what a
plugin asks of its environment, and the environment itself.

Kept free of heavy imports: the launcher imports this on every plugin start.
"""

from __future__ import annotations

from pathlib import Path

from ekuiper.record import field, record

TYPE_CHECKING = False  # typing is not loaded at run time on the start path (docs/architecture.md)
if TYPE_CHECKING:
    from typing import Dict, List, Mapping, Optional, Tuple


@record(frozen=True)
class EnvKind:
    """One ``virtualEnvType`` value and how an environment of that kind is activated.

    The launcher validates ``virtualEnvType`` against :data:`KINDS`, so adding a kind here is
    the one place that makes every verb accept it.
    """

    name: str
    #: ``conda``: conda's POSIX activator (CONDA_* variables, env_vars, activate.d hooks);
    #: ``micromamba``: the same, plus MAMBA_ROOT_PREFIX/MAMBA_EXE, no conda installation
    #: variables; ``pixi``: pixi's shell-hook variables (PIXI_*, CONDA_PREFIX,
    #: CONDA_DEFAULT_ENV), env_vars and hooks; ``venv``: ``bin/activate``'s two variables.
    activation: str
    #: the prefix is conda-style (``conda-meta/``) and may carry activate.d hooks
    conda_style: bool
    summary: str


#: Kinds of environment ekl knows, in the order the docs list them.
KINDS: Mapping[str, EnvKind] = {k.name: k for k in (
    EnvKind("conda", "conda", True, "conda activate's rules; a conda installation's "
            "CONDA_EXE & co. when one is known"),
    EnvKind("mamba", "conda", True, "as conda (mamba lives in a conda/miniforge installation), "
            "plus MAMBA_ROOT_PREFIX/MAMBA_EXE when known"),
    EnvKind("micromamba", "micromamba", True, "micromamba activate: CONDA_* and "
            "MAMBA_ROOT_PREFIX/MAMBA_EXE, no conda installation variables"),
    EnvKind("pixi", "pixi", True, "pixi shell-hook: PIXI_PROJECT_*, PIXI_ENVIRONMENT_*, "
            "CONDA_PREFIX, CONDA_DEFAULT_ENV"),
    EnvKind("venv", "venv", False, "bin/activate: VIRTUAL_ENV and PATH"),
)}


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


class LockDrift(EnvFailed):
    """``--lock strict`` met an environment that differs from its lock: exit 1, as
    ``ekl env check`` exits on drift (the plugin has a problem; the input was fine)."""

    exit_code = 1


@record(frozen=True)
class PluginEnv:
    """What a plugin asks of its environment, as the launcher's plugin reader decided it.

    ``envs`` never reads plugin JSON itself (one reader, in the launcher); it takes this.
    ``lock`` is the ``ekl.lock`` field (a path relative to ``folder``), if any.
    """

    folder: Path
    json_path: Path
    name: str
    kind: Optional[str] = None
    env: Optional[str] = None
    lock: Optional[str] = None

    @property
    def ref(self) -> str:
        """How commands in messages name the plugin."""
        return str(self.folder)


@record(frozen=True)
class CondaSettings:
    """The ``.condarc`` settings activation honours (conda's defaults when absent)."""

    changeps1: bool = True
    env_prompt: str = "({default_env}) "
    auto_stack: int = 0


@record
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
    settings: CondaSettings = field(default_factory=CondaSettings, repr=False, compare=False)
    #: micromamba/mamba: the MAMBA_EXE their shell hook exports, when known
    mamba_exe: Optional[str] = field(default=None, repr=False, compare=False)
    #: pixi: (variable, value) pairs of the project, computed when the env was found
    pixi_vars: Tuple[Tuple[str, str], ...] = field(default=(), repr=False, compare=False)
    #: what ekl noticed and the user should hear (logged at start, shown by doctor)
    warnings: List[str] = field(default_factory=list, repr=False, compare=False)

    def activation(self, base_env: Mapping[str, str]) -> Dict[str, str]:
        """Full environment for the child: what ``conda activate`` (POSIX) would leave.

        ``base_env`` is the launcher's own environment; ``PYTHONHOME``/``PYTHONPATH`` from it
        are dropped because they belong to the launcher's interpreter, not the plugin's.
        """
        from .activate import activation_env

        return activation_env(self, base_env)

    def wrap_command(self, argv: List[str],
                     base_env: Optional[Mapping[str, str]] = None) -> List[str]:
        """``argv`` itself, or a shell line that sources the env's activate.d hooks first.

        The shell (bash when there is one, as ``conda run`` uses, else ``/bin/sh``) ends in
        ``exec``, so the plugin keeps the PID the launcher started and gets its signals
        directly. Pass the same ``base_env`` as to :meth:`activation` when the launcher
        itself runs inside an activated conda env: conda would run that env's
        ``deactivate.d`` hooks first, and so does this.
        """
        from .activate import wrap_command

        return wrap_command(self, argv, base_env)

    def to_dict(self) -> Dict[str, Optional[str]]:
        return {"kind": self.kind, "prefix": str(self.prefix), "name": self.name,
                "python": str(self.python), "found_in": self.found_in}
