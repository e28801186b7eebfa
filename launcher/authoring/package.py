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

Two kinds of file are written by ``package`` rather than copied: with ``--vendor-sdk`` (or
``"ekl": {"vendor_sdk": true}``) ekl's SDK goes into ``ekuiper/`` beside the main program
with its manifest (:mod:`ekl.launcher.plugin.vendored`), so a stock eKuiper runs the plugin
on ekl's SDK with nothing installed; and an ``install.sh`` ekl wrote is replaced by the
current one (an old skeleton's script would install into the wrong environment), or added
when the plugin has ``requirements.txt`` and no ``install.sh`` (eKuiper never reads
``requirements.txt`` itself).
"""

from __future__ import annotations

import hashlib
import json
import os
import stat
import tempfile
import zipfile
from pathlib import Path
from typing import Any, Dict, List, Optional, Tuple

from ekuiper.record import field, record

from ..errors import EklError
from ..plugin import Plugin, vendored
from ..progress import Progress
from .pkgfiles import select
from .scaffold import install_sh, is_ekl_install_sh

#: 1980-01-01, the earliest time a zip can store: no build time leaks into the bytes
FIXED_TIME = (1980, 1, 1, 0, 0, 0)
UNIX = 3


@record
class Entry:
    path: str
    size: int
    mode: int

    def to_json(self) -> Dict[str, Any]:
        return {"path": self.path, "size": self.size, "mode": f"{self.mode:04o}"}


@record
class PackageResult:
    zip: Path
    name: str
    entries: List[Entry] = field(default_factory=list)
    skipped: List[Tuple[str, str]] = field(default_factory=list)
    sha256: str = ""
    size: int = 0
    #: the vendored SDK's version and tree hash, when one went in
    vendored_sdk: Optional[Dict[str, str]] = None
    #: files package wrote rather than copied (path -> why)
    generated: Dict[str, str] = field(default_factory=dict)

    def to_json(self) -> Dict[str, Any]:
        return {"zip": str(self.zip), "name": self.name, "sha256": self.sha256,
                "size": self.size, "files": [e.to_json() for e in self.entries],
                "skipped": [{"path": p, "reason": r} for p, r in self.skipped],
                "vendored_sdk": self.vendored_sdk, "generated": self.generated}


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


def sdk_to_vendor() -> Tuple[Path, str]:
    """ekl's own SDK package folder and version: what ``--vendor-sdk`` copies."""
    import ekuiper

    if not getattr(ekuiper, "EKL_SDK", False):
        raise EklError(f"--vendor-sdk: the ekuiper package ekl imports ({ekuiper.__file__}) is "
                       f"not ekl's SDK; reinstall ekl-sdk (pip install ekl-sdk)")
    return Path(ekuiper.__file__).parent, str(getattr(ekuiper, "__version__", "0"))


def check_vendoring(m: Plugin) -> str:
    """Refuse to vendor where it would clash; returns the vendored folder's zip path."""
    if m.language != "python":
        raise EklError(f"{m.path.name}: --vendor-sdk puts ekl's Python SDK into the zip, and "
                       f"this plugin's language is {m.language!r}; drop --vendor-sdk")
    if m.ekl.sdk == "official":
        raise EklError(f"{m.path.name}: field 'ekl.sdk' is \"official\", and --vendor-sdk "
                       f"would put ekl's SDK in front of it; drop one of the two")
    exe_dir = m.executable.parent.relative_to(m.folder).as_posix()
    prefix = ("" if exe_dir == "." else exe_dir + "/") + vendored.VENDOR_DIR + "/"
    own = m.folder / prefix
    if own.exists() and not (own / vendored.MANIFEST).is_file():
        raise EklError(f"{prefix}: the plugin has its own {prefix} folder, which ekl's "
                       f"vendored SDK would replace; rename it or drop --vendor-sdk")
    return prefix


def _generated(m: Plugin, files: List[str], vendor: bool, result: PackageResult
               ) -> Tuple[List[str], Dict[str, Tuple[bytes, int]]]:
    """The files package writes itself: the vendored SDK and a current install.sh."""
    extra: Dict[str, Tuple[bytes, int]] = {}
    if vendor:
        prefix = check_vendoring(m)
        own = [f for f in files if f.startswith(prefix)]
        files = [f for f in files if not f.startswith(prefix)]
        result.skipped.extend((f, "replaced by the SDK ekl vendors now") for f in own)
        src, version = sdk_to_vendor()
        for rel in vendored.sdk_files(src):
            extra[prefix + rel] = ((src / rel).read_bytes(), 0o644)
        manifest = vendored.make_manifest(src, version)
        extra[prefix + vendored.MANIFEST] = (
            (json.dumps(manifest, indent=2, sort_keys=True) + "\n").encode(), 0o644)
        result.vendored_sdk = {"version": version, "sha256": str(manifest["sha256"]),
                               "folder": prefix}
        result.generated[prefix] = f"ekl's SDK {version}, vendored"
    current = install_sh(m.name).encode()
    if "install.sh" in files:
        text = (m.folder / "install.sh").read_bytes()
        if is_ekl_install_sh(text.decode("utf-8", "replace")) and text != current:
            files.remove("install.sh")
            extra["install.sh"] = (current, 0o755)
            result.generated["install.sh"] = "refreshed to the install.sh of this ekl"
    elif "requirements.txt" in files:
        extra["install.sh"] = (current, 0o755)
        result.generated["install.sh"] = "added: eKuiper runs install.sh, never requirements.txt"
    return files, extra


def write_zip(m: Plugin, out: Path, progress: Optional[Progress] = None,
              vendor_sdk: Optional[bool] = None) -> PackageResult:
    """Write the package atomically (a temporary file renamed into place).

    ``vendor_sdk``: None follows the JSON's ``ekl.vendor_sdk``; True vendors regardless.
    """
    progress = progress or Progress(quiet=True)
    out = check_output(m, out)
    sel = select(m.folder, m.name, exclude=[out])
    json_name = m.path.name
    result = PackageResult(zip=out, name=m.name, skipped=sel.skipped)
    vendor = m.ekl.vendor_sdk if vendor_sdk is None else vendor_sdk
    files, extra = _generated(m, [f for f in sel.files if f != json_name], vendor, result)
    files = files + list(extra)
    order = [json_name] + sorted(_dirs_of(files) + files)
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
                if rel in extra:
                    data, mode = extra[rel]
                else:
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
