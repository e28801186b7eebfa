"""A plugin's ``sources/S.yaml``, parsed once per version of the file.

``ekl tail`` and ``ekl run`` read the source's YAML at every start, and importing PyYAML
alone costs about 30 ms, a quarter of a bare plugin's whole start (issue 16). So the parsed
document is kept as JSON in the cache folder (``$EKL_CACHE_DIR/yaml``, 0700, like the
launch cache), under a key of the file's path, mtime, size and inode: an edited file is a
new key. A document JSON does not hold exactly (dates, non-string keys, NaN) is not kept,
nor one whose file changed while it was read; an unreadable or odd entry is a miss.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

from ..early import cache_root, safe_folder, sha256, signature
from ..errors import EklError, ManifestError
from ..fsafe import atomic_write, ensure_private_dir, file_clock_ns, prune_folder

TYPE_CHECKING = False  # typing is not loaded at run time on the start path (docs/architecture.md)
if TYPE_CHECKING:
    from typing import Any, Optional

SUBDIR = "yaml"
#: Documents kept (the oldest go when a store finds more): each edit of a file is a new key.
MAX_ENTRIES = 256
#: A cached document larger than this is not read (nor written).
MAX_ENTRY_BYTES = 1024 * 1024


def _entry(path: str, sig: Any) -> str:
    key = sha256(f"{path}\0{sig}".encode("utf-8", "surrogateescape")).hexdigest()[:40]
    return os.path.join(cache_root(), SUBDIR, f"{key}.json")


def _cached(entry: str, path: str, sig: Any) -> Optional[Any]:
    if not safe_folder(os.path.dirname(entry)):
        return None
    try:
        with open(entry, "rb") as f:
            raw = f.read(MAX_ENTRY_BYTES + 1)
        doc = json.loads(raw) if len(raw) <= MAX_ENTRY_BYTES else None
    except (OSError, ValueError, RecursionError):
        return None
    if isinstance(doc, dict) and doc.get("path") == path and doc.get("sig") == list(sig):
        return doc.get("data")
    return None


def load(file: Path) -> Any:
    """The file's YAML document; ManifestError (naming the file) when it is not YAML."""
    path = os.path.abspath(file)
    sig = signature(path)
    entry = _entry(path, sig) if sig is not None else None
    if entry is not None:
        hit = _cached(entry, path, sig)
        if hit is not None:
            return hit
    import yaml  # only on a miss: it is the cost this module saves

    started = file_clock_ns()
    try:
        data = yaml.safe_load(Path(path).read_text())
    except (yaml.YAMLError, UnicodeDecodeError) as e:
        raise ManifestError([f"{file}: not valid YAML: {' '.join(str(e).split())}"]) from None
    if entry is not None and sig is not None and signature(path) == sig and sig[0] < started:
        _store(entry, path, sig, data)
    return data


def _store(entry: str, path: str, sig: Any, data: Any) -> None:
    try:
        blob = json.dumps({"path": path, "sig": list(sig), "data": data}, allow_nan=False)
        if len(blob) > MAX_ENTRY_BYTES or json.loads(blob)["data"] != data:
            return  # not held exactly by JSON (e.g. an integer key): parse it every time
        ensure_private_dir(os.path.dirname(entry), "cache folder", "EKL_CACHE_DIR")
        atomic_write(entry, blob.encode("utf-8"))
    except (TypeError, ValueError, OSError, EklError):
        return  # dates and the like, or a cache that cannot be written: only costs a parse
    prune_folder(os.path.dirname(entry), MAX_ENTRIES)
