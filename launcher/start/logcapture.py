"""What resolving a plugin logs, kept for the launch cache (``LogCapture``).

Its own module because a ``logging.Handler`` subclass needs logging loaded, and only a
cache miss (a resolution from scratch) captures: a start from the cache loads neither.
"""

from __future__ import annotations

import logging
import threading

TYPE_CHECKING = False  # typing is not loaded at run time on the start path (docs/architecture.md)
if TYPE_CHECKING:
    from typing import List, Tuple


class LogCapture(logging.Handler):
    """Records what resolution logs on ``ekl``, to log it again on every hit.

    Only this thread's records: plugins resolved at the same time in other threads (a
    supervisor starting several) must not lend their warnings to this entry.
    """

    def __init__(self) -> None:
        super().__init__(logging.INFO)
        self.records: List[Tuple[int, str]] = []
        self._thread = threading.get_ident()

    def emit(self, record: logging.LogRecord) -> None:
        if record.thread != self._thread:
            return
        try:
            self.records.append((record.levelno, record.getMessage()))
        except Exception:  # a record that cannot be formatted is not worth a failed start
            pass

    def __enter__(self) -> LogCapture:
        logging.getLogger("ekl").addHandler(self)
        return self

    def __exit__(self, *exc: object) -> None:
        logging.getLogger("ekl").removeHandler(self)
