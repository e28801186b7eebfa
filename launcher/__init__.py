"""ekl's launcher: the host side of eKuiper's plugin protocol, the supervisor and the CLI.

Kept import-light on purpose: ``ekl-python`` and the lifeline watchdog start from here.
"""

__version__ = "0.1.0"
