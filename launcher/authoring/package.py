"""``ekl package``: the zip eKuiper installs with ``POST /plugins/portables``.

Layout as eKuiper's portable plugin manager expects it: ``NAME.json`` at the root (first
entry), every other file at its path relative to the plugin folder with forward slashes,
and a directory entry before each folder's contents (recent eKuiper versions create each
folder with a single ``Mkdir`` inside a sandboxed root, so a file whose folder was never
listed cannot be unpacked). The zip is deterministic: sorted entries, fixed timestamps,
modes normalised to 0644 or 0755 (executables keep their execute bit in
``external_attr``, which eKuiper applies when it unpacks), so the same folder always gives
the same bytes and the same checksum. What is left out is decided by
:mod:`ekl.launcher.authoring.pkgfiles`.
"""

from __future__ import annotations

import hashlib
import os
import stat
import tempfile
import zipfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Dict, List, Optional, Tuple

from ..errors import EklError
from ..plugin import Plugin
from ..progress import Progress
from .pkgfiles import select

#: 1980-01-01, the earliest time a zip can store: no build time leaks into the bytes
FIXED_TIME = (1980, 1, 1, 0, 0, 0)
UNIX = 3


@dataclass
class Entry:
    path: str
    size: int
    mode: int

    def to_json(self) -> Dict[str, Any]:
        return {"path": self.path, "size": self.size, "mode": f"{self.mode:04o}"}


@dataclass
class PackageResult:
    zip: Path
    name: str
    entries: List[Entry] = field(default_factory=list)
    skipped: List[Tuple[str, str]] = field(default_factory=list)
    sha256: str = ""
    size: int = 0

    def to_json(self) -> Dict[str, Any]:
        return {"zip": str(self.zip), "name": self.name, "sha256": self.sha256,
                "size": self.size, "files": [e.to_json() for e in self.entries],
                "skipped": [{"path": p, "reason": r} for p, r in self.skipped]}


def default_output(m: Plugin) -> Path:
    return Path.cwd() / f"{m.name}.zip"


def check_output(m: Plugin, out: Path) -> Path:
    """Refuse outputs that would damage the plugin or that eKuiper cannot install."""
    out = out.expanduser()
    if out.suffix != ".zip":
        raise EklError(f"-o {out}: the package must end in .zip (eKuiper's REST API accepts "
                       f"only .zip files); e.g. -o {m.name}.zip")
    resolved = out.resolve()
    if resolved.is_dir():
        raise EklError(f"-o {out}: is a folder; give a file name such as {out}/{m.name}.zip")
    folder = m.folder.resolve()
    if resolved == folder or (folder in resolved.parents and resolved.exists() and
                              resolved.relative_to(folder).as_posix() in select(folder, m.name).files):
        raise EklError(f"-o {out}: would overwrite a file of the plugin itself; write the "
                       f"zip somewhere else")
    if not resolved.parent.is_dir():
        raise EklError(f"-o {out}: the folder {resolved.parent} does not exist; create it first")
    return resolved


def _mode(path: Path) -> int:
    return 0o755 if os.stat(path).st_mode & (stat.S_IXUSR | stat.S_IXGRP | stat.S_IXOTH) else 0o644


def _dirs_of(files: List[str]) -> List[str]:
    dirs = set()
    for f in files:
        parts = f.split("/")[:-1]
        for i in range(1, len(parts) + 1):
            dirs.add("/".join(parts[:i]) + "/")
    return sorted(dirs)


def write_zip(m: Plugin, out: Path, progress: Optional[Progress] = None) -> PackageResult:
    """Write the package atomically (a temporary file renamed into place)."""
    progress = progress or Progress(quiet=True)
    out = check_output(m, out)
    sel = select(m.folder, m.name, exclude=[out])
    json_name = m.path.name
    files = [f for f in sel.files if f != json_name]
    order = [json_name] + sorted(_dirs_of(files) + files)
    result = PackageResult(zip=out, name=m.name, skipped=sel.skipped)
    fd, tmp = tempfile.mkstemp(prefix=f".{out.name}.", dir=str(out.parent))
    os.close(fd)
    try:
        with zipfile.ZipFile(tmp, "w", zipfile.ZIP_DEFLATED, compresslevel=9) as zf, \
                progress.bar(len(order), f"packaging {m.name}") as bar:
            for rel in order:
                info = zipfile.ZipInfo(rel, date_time=FIXED_TIME)
                info.create_system = UNIX
                if rel.endswith("/"):
                    info.external_attr = ((stat.S_IFDIR | 0o755) << 16) | 0x10
                    zf.writestr(info, b"")
                    bar.advance(rel)
                    continue
                src = m.folder / rel
                mode = _mode(src)
                data = src.read_bytes()
                info.external_attr = (stat.S_IFREG | mode) << 16
                info.compress_type = zipfile.ZIP_DEFLATED
                zf.writestr(info, data)
                result.entries.append(Entry(rel, len(data), mode))
                bar.advance(rel)
        os.chmod(tmp, 0o644)
        os.replace(tmp, out)
    except OSError as e:
        raise EklError(f"cannot write {out}: {e.strerror}") from None
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)
    h = hashlib.sha256(out.read_bytes())
    result.sha256 = h.hexdigest()
    result.size = out.stat().st_size
    return result
