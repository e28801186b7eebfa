"""Plugin zips: unpacked once into ekl's cache, keyed by content."""

from __future__ import annotations

import hashlib
import os
import zipfile
from pathlib import Path

from ..errors import ManifestError


def cache_root() -> Path:
    from ekl.envs.probe import cache_dir

    return cache_dir()


def unpack_zip(zpath: Path) -> Path:
    """Unpack a plugin zip once into the cache (keyed by content) and return the folder."""
    digest = hashlib.sha256(zpath.read_bytes()).hexdigest()[:16]
    dest = cache_root() / "zips" / f"{zpath.stem}-{digest}" / zpath.stem
    if dest.is_dir():
        return dest
    try:
        zf = zipfile.ZipFile(zpath)
    except zipfile.BadZipFile:
        raise ManifestError([f"{zpath}: not a zip file"]) from None
    tmp = dest.parent / f".{dest.name}.{os.getpid()}"
    with zf:
        for info in zf.infolist():
            target = (tmp / info.filename).resolve()
            if not str(target).startswith(str(tmp.resolve()) + os.sep) and target != tmp.resolve():
                raise ManifestError([f"{zpath}: entry {info.filename!r} points outside the "
                                     f"plugin folder; rebuild the zip with `ekl package`"])
        zf.extractall(tmp)
        for info in zf.infolist():  # zipfile drops permissions; executables need theirs
            mode = (info.external_attr >> 16) & 0o777
            if mode:
                os.chmod(tmp / info.filename, mode)
    os.replace(tmp, dest)
    return dest
