"""eKuiper portable-plugin SDK (ekl's drop-in edition); the public API matches PyPI ``ekuiper``."""

from .function import Function
from .runtime import plugin
from .runtime.context import Context
from .runtime.plugin import PluginConfig
from .sink import Sink
from .source import Source

__version__ = "0.1.0"
#: Marks this SDK as ekl's, so the launcher can tell it from the official one.
EKL_SDK = True

__all__ = ["plugin", "PluginConfig", "Source", "Sink", "Function", "Context"]

name = "ekuiper"
