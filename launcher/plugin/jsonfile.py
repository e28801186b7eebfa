"""Reading a plugin's JSON file within a size limit.

Apart from the zip code because every start reads a JSON file and almost none unpacks a
zip: this module needs only ``os``, ``stat`` and ``json``, so the start path does not pay
for ``zipfile``, ``hashlib``, ``shutil`` and ``tempfile``.
"""

from __future__ import annotations

import json
import os
import stat
from pathlib import Path

from ..errors import EklError, ManifestError

TYPE_CHECKING = False  # typing is not loaded at run time on the start path (docs/architecture.md)
if TYPE_CHECKING:
    from typing import Any, NoReturn, Optional

JSON_MAX_BYTES_ENV = "EKL_JSON_MAX_BYTES"
DEFAULT_JSON_MAX_BYTES = 1 << 20     # 1 MiB: plugin JSON is a few hundred bytes


def env_int(var: str, default: int) -> int:
    raw = os.environ.get(var)
    if raw is None or raw.strip() == "":
        return default
    try:
        value = int(raw.strip())
    except ValueError:
        value = 0
    if value <= 0:
        raise EklError(f"{var}={raw!r}: must be a positive whole number (e.g. {var}={default}); "
                       f"fix or unset it")
    return value


def json_limit(max_bytes: Optional[int]) -> int:
    return max_bytes if max_bytes is not None else env_int(JSON_MAX_BYTES_ENV,
                                                            DEFAULT_JSON_MAX_BYTES)


def parse_json(data: bytes, where: str) -> Any:
    try:
        return json.loads(data.decode("utf-8"))
    except UnicodeDecodeError:
        raise ManifestError([f"{where}: not UTF-8 text"]) from None
    except RecursionError:
        raise ManifestError([f"{where}: nested too deeply to be a plugin's JSON; fix the "
                             f"file"]) from None
    except ValueError as e:
        raise ManifestError([f"{where}: not valid JSON ({e}); fix the syntax"]) from None


def read_json_limited(path: Path, max_bytes: Optional[int] = None) -> Any:
    """Parse a plugin JSON file, refusing it from its size alone if it is larger than
    ``max_bytes`` ($EKL_JSON_MAX_BYTES, default 1 MiB): parsing costs about 20 bytes of
    memory per byte of JSON, so a 100 MB file would cost 2 GB. Only regular files are read
    (a FIFO would block). Raises ManifestError with one line naming the file."""
    limit = json_limit(max_bytes)
    try:
        fd = os.open(path, os.O_RDONLY | getattr(os, "O_NONBLOCK", 0) | getattr(os, "O_CLOEXEC", 0))
    except OSError as e:
        raise ManifestError([f"{path}: cannot read it: {e.strerror}"]) from None
    with os.fdopen(fd, "rb") as f:
        st = os.fstat(fd)
        if not stat.S_ISREG(st.st_mode):
            raise ManifestError([f"{path}: is not a regular file; give the plugin's JSON file"])
        if st.st_size > limit:
            too_big(path, st.st_size, limit)
        try:
            data = f.read(limit + 1)
        except OSError as e:
            raise ManifestError([f"{path}: cannot read it: {e.strerror}"]) from None
    if len(data) > limit:  # it grew after the stat
        too_big(path, len(data), limit)
    return parse_json(data, str(path))


def too_big(where: Any, size: int, limit: int) -> NoReturn:
    raise ManifestError([f"{where}: is {size} bytes, more than the {limit} a plugin's JSON may "
                         f"have; is it the right file? (raise {JSON_MAX_BYTES_ENV} if it is)"])
