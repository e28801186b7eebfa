"""A copy of ekl's SDK carried inside a plugin: ``ekuiper/`` beside the main program.

``ekl package --vendor-sdk`` puts it there so a stock eKuiper (``python3 -u main.py``, any
Python 3.8+, nothing installed) runs the plugin on ekl's SDK: Python puts the script's
folder first on ``sys.path``, so that copy is the one imported. ``ekuiper/_vendored.json``
records the SDK's version and a sha256 per file, written by ``package`` and read here,
by ``ekl validate`` (modified or stale copy) and by the start path (ekl's copy or the
vendored one, whichever is newer). Everything here reads files a zip brought, so sizes
and counts are bounded and every problem is one line naming the file.
"""

from __future__ import annotations

import json
import re
from pathlib import Path

from ekuiper.record import field, record

TYPE_CHECKING = False  # typing is not loaded at run time on the start path (docs/architecture.md)
if TYPE_CHECKING:
    from typing import Dict, List, Optional, Tuple

#: the folder, beside the executable, that holds the vendored package
VENDOR_DIR = "ekuiper"
#: the manifest inside it
MANIFEST = "_vendored.json"
#: what the manifest says it is a copy of
DISTRIBUTION = "ekl-sdk"
#: the SDK is ~40 files; a manifest listing more, or larger than this, did not come from ekl
MAX_FILES = 2000
MAX_MANIFEST_BYTES = 1024 * 1024
#: editor and merge litter a development checkout of the SDK may hold: never vendored
LITTER = ("*~", "*.swp", ".*.swp", "*.orig", "*.rej", ".DS_Store", "#*#", ".#*")


def sdk_files(src: Path, skip_litter: bool = True) -> List[str]:
    """The package's files (relative posix paths): no caches, not the manifest.

    ``skip_litter``: what to copy; validate lists everything (``False``), so a file added
    to a vendored copy is found whatever its name.
    """
    import fnmatch

    out = []
    for f in sorted(src.rglob("*")):
        rel = f.relative_to(src)
        if f.is_dir() or "__pycache__" in rel.parts or f.suffix in (".pyc", ".pyo") \
                or rel.as_posix() == MANIFEST:
            continue
        if skip_litter and any(fnmatch.fnmatch(f.name, p) for p in LITTER):
            continue
        out.append(rel.as_posix())
    return out


def file_hash(path: Path) -> str:
    import hashlib  # here: only a start that lends or checks an SDK copy hashes

    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 16), b""):
            h.update(chunk)
    return h.hexdigest()


def tree_hash(files: Dict[str, str]) -> str:
    """One hash for the whole copy: over the sorted ``path sha256`` lines."""
    text = "".join(f"{p} {h}\n" for p, h in sorted(files.items()))
    import hashlib

    return hashlib.sha256(text.encode()).hexdigest()


def make_manifest(src: Path, version: str) -> Dict[str, object]:
    """The manifest for a copy of the package folder ``src`` (what ``package`` writes)."""
    files = {rel: file_hash(src / rel) for rel in sdk_files(src)}
    return {"distribution": DISTRIBUTION, "version": version, "sha256": tree_hash(files),
            "files": files}


def version_key(version: str) -> Tuple[Tuple[int, ...], int, str]:
    """Order ``X.Y.Z[suffix]`` versions: numbers first, a pre-release before its release."""
    m = re.match(r"^\s*v?(\d+(?:\.\d+)*)(.*)$", version or "")
    if not m:
        return (), 0, version or ""
    nums = tuple(int(x) for x in m.group(1).split("."))
    while nums and nums[-1] == 0:
        nums = nums[:-1]
    rest = m.group(2).strip()
    pre = re.match(r"^[.-]?(a|b|rc|alpha|beta|dev)", rest)
    return nums, (0 if pre else 1), rest


@record(frozen=True)
class Vendored:
    """A vendored copy as found: where, its recorded version, and what is wrong with it."""

    folder: Path
    version: str
    sha256: str
    #: one line each, starting with the file's path relative to the plugin folder
    problems: Tuple[str, ...] = field(default_factory=tuple)


def find(exe_dir: Path) -> Optional[Path]:
    """The vendored package folder beside the main program, if it has a manifest."""
    d = exe_dir / VENDOR_DIR
    return d if (d / MANIFEST).is_file() else None


def read(folder: Path, plugin_folder: Optional[Path] = None, verify: bool = True) -> Vendored:
    """Read ``folder/_vendored.json`` and (``verify``) check every file against it."""
    base = plugin_folder or folder.parent

    def rel(p: Path) -> str:
        try:
            return p.relative_to(base).as_posix()
        except ValueError:
            return str(p)

    mpath = folder / MANIFEST
    problems: List[str] = []
    fix = "rebuild the zip with `ekl package --vendor-sdk`"
    try:
        if mpath.stat().st_size > MAX_MANIFEST_BYTES:
            raise ValueError(f"larger than {MAX_MANIFEST_BYTES // 1024} KiB")
        data = json.loads(mpath.read_bytes().decode("utf-8"))
        if not isinstance(data, dict) or not isinstance(data.get("files"), dict) or \
                not isinstance(data.get("version"), str):
            raise ValueError("needs 'version' and 'files'")
        files = data["files"]
        if len(files) > MAX_FILES or not all(isinstance(k, str) and isinstance(v, str)
                                             for k, v in files.items()):
            raise ValueError(f"'files' must map at most {MAX_FILES} paths to sha256 texts")
    except (OSError, ValueError, RecursionError) as e:
        why = e.strerror if isinstance(e, OSError) else str(e).splitlines()[0][:200]
        return Vendored(folder, "", "", (f"{rel(mpath)}: not a vendored SDK manifest ({why}); "
                                         f"{fix}",))
    version = data["version"]
    if not verify:
        return Vendored(folder, version, str(data.get("sha256", "")))
    root = folder.resolve()
    for name, want in sorted(files.items()):
        p = (folder / name)
        if name.startswith("/") or ".." in name.split("/") or root not in p.resolve().parents:
            problems.append(f"{rel(mpath)}: lists {name[:200]!r}, outside {VENDOR_DIR}/; {fix}")
            continue
        if not p.is_file():
            problems.append(f"{rel(p)}: missing from the vendored SDK; {fix}")
        elif file_hash(p) != want:
            problems.append(f"{rel(p)}: modified since `ekl package` vendored it (its sha256 "
                            f"differs from {MANIFEST}); edit ekl's SDK instead, then {fix}")
    for name in sdk_files(folder, skip_litter=False)[:MAX_FILES]:
        if name not in files:
            problems.append(f"{rel(folder / name)}: not part of the vendored SDK (added after "
                            f"`ekl package`); remove it, or {fix}")
    if files and str(data.get("sha256", "")) != tree_hash(files):
        problems.append(f"{rel(mpath)}: its 'sha256' does not match its 'files'; {fix}")
    return Vendored(folder, version, str(data.get("sha256", "")), tuple(problems))
