"""The pysam example plugin: source ``pyjson``, sink ``print`` and function ``revert``.

It uses only the public ``ekuiper`` API, so it runs on the official SDK (PyPI ``ekuiper``)
as well as on ekl's; tests/test_compat.py runs it on both. It logs with
``ctx.get_logger().write(line)``, the one logging call both SDKs accept.
"""

from print_sink import PrintSink
from pyjson import PyJson
from revert import revert_instance

from ekuiper import PluginConfig, plugin

if __name__ == "__main__":
    c = PluginConfig("pysam", {"pyjson": lambda: PyJson()}, {"print": lambda: PrintSink()},
                     {"revert": lambda: revert_instance})
    plugin.start(c)
