"""Public API for programs that play a plugin's side of an inverted REQ/REP channel.

ekl's relay (``ekl-python``) dials eKuiper's control socket in the plugin's place; it uses
this module, not ``ekuiper.runtime``, whose modules are private and may change. What is
here is stable: ``serve_inverted`` (answer each order with a callback, with the SDK's
keep-alive and error handling), ``PeerWatch`` (the host-gone check) and ``one_line`` (the
form error texts take on the wire).
"""

from .lazylog import one_line
from .runtime.reqloop import PeerWatch, serve_inverted

__all__ = ["serve_inverted", "PeerWatch", "one_line"]
