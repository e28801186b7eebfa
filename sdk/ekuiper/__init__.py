"""eKuiper portable-plugin SDK (ekl's drop-in edition); the public API matches PyPI ``ekuiper``.

The public names load on first use (PEP 562): a plugin pays for the runtime when it imports
``plugin`` or a base class, as it always does, while the launcher, which needs only
``ekuiper.protocol`` and the transport, does not load the runtime on its start path.
"""

from __future__ import annotations

TYPE_CHECKING = False  # typing is not loaded at run time on the start path (docs/architecture.md)
if TYPE_CHECKING:
    from typing import Any, List

__version__ = "0.1.0"
#: Marks this SDK as ekl's, so the launcher can tell it from the official one.
EKL_SDK = True

__all__ = ["plugin", "PluginConfig", "Source", "Sink", "Function", "Context"]

name = "ekuiper"

#: public name -> (module, attribute; None for the module itself)
_LAZY = {
    "plugin": ("ekuiper.runtime.plugin", None),
    "PluginConfig": ("ekuiper.runtime.plugin", "PluginConfig"),
    "Context": ("ekuiper.runtime.context", "Context"),
    "Function": ("ekuiper.function", "Function"),
    "Source": ("ekuiper.source", "Source"),
    "Sink": ("ekuiper.sink", "Sink"),
}

if TYPE_CHECKING:  # what static analysis sees; at run time __getattr__ loads them
    from .function import Function
    from .runtime import plugin
    from .runtime.context import Context
    from .runtime.plugin import PluginConfig
    from .sink import Sink
    from .source import Source


def __getattr__(attr: str) -> Any:
    try:
        module_name, member = _LAZY[attr]
    except KeyError:
        raise AttributeError(f"module 'ekuiper' has no attribute {attr!r}") from None
    import importlib

    module = importlib.import_module(module_name)
    value = module if member is None else getattr(module, member)
    globals()[attr] = value  # later lookups are plain attribute reads
    return value


def __dir__() -> List[str]:
    return sorted(set(globals()) | set(_LAZY))
