"""Which files of a plugin folder belong in its package, and which are left out and why.

Shared by ``ekl package`` (what goes into the zip) and ``ekl validate`` (which files to
check), so both always agree. Left out: caches (``__pycache__``, ``*.pyc``, tool caches),
virtual environments (any folder with ``pyvenv.cfg`` or ``conda-meta``), version control,
editor and OS litter, earlier zips of the plugin, tests (``test_*.py``, ``*_test.py``,
``conftest.py``, ``tests/``; eKuiper never runs them), and whatever ``.eklignore`` lists
(glob patterns, one per line, matched against the relative path and the base name).
"""

from __future__ import annotations

import fnmatch
import os
from pathlib import Path
from typing import List, Optional, Tuple

from ekuiper.record import field, record

IGNORE_FILE = ".eklignore"

#: folder names never packaged
SKIP_DIRS = {
    "__pycache__", ".git", ".hg", ".svn", ".bzr", ".venv", "venv", ".env", ".tox", ".nox",
    ".mypy_cache", ".pytest_cache", ".ruff_cache", ".hypothesis", ".cache", ".idea", ".vscode",
    ".ipynb_checkpoints", "node_modules", "tests", "dist",
}
#: file name patterns never packaged
SKIP_FILES = (
    "*.pyc", "*.pyo", "*.pyd.tmp", "*~", "*.swp", "*.swo", ".*.swp", "#*#", ".#*", ".DS_Store",
    "Thumbs.db", "*.orig", "*.rej", ".coverage", ".coverage.*", "test_*.py", "*_test.py",
    "conftest.py", IGNORE_FILE, ".gitignore", "*.egg-info",
)


@record
class Selection:
    files: List[str] = field(default_factory=list)          # relative posix paths, sorted
    skipped: List[Tuple[str, str]] = field(default_factory=list)  # (path, reason)


def _ignore_patterns(folder: Path) -> List[str]:
    f = folder / IGNORE_FILE
    if not f.is_file():
        return []
    out = []
    for line in f.read_text(encoding="utf-8", errors="replace").splitlines():
        line = line.strip()
        if line and not line.startswith("#"):
            out.append(line.rstrip("/"))
    return out


def _is_env(path: Path) -> bool:
    return (path / "pyvenv.cfg").is_file() or (path / "conda-meta").is_dir()


def select(folder: Path, name: str, exclude: Optional[List[Path]] = None) -> Selection:
    """Walk ``folder`` in a deterministic order and split it into packaged and skipped."""
    folder = folder.resolve()
    patterns = _ignore_patterns(folder)
    excluded = {p.resolve() for p in (exclude or [])}
    sel = Selection()

    def user_ignored(rel: str, base: str) -> bool:
        return any(fnmatch.fnmatch(rel, p) or fnmatch.fnmatch(base, p) for p in patterns)

    for root, dirs, files in os.walk(folder, followlinks=False):
        rootp = Path(root)
        keep_dirs = []
        for d in sorted(dirs):
            rel = (rootp / d).relative_to(folder).as_posix()
            full = rootp / d
            if full.is_symlink():
                sel.skipped.append((rel + "/", "symbolic link to a folder"))
            elif d in SKIP_DIRS or d.endswith(".egg-info"):
                sel.skipped.append((rel + "/", "cache, tool or test folder"))
            elif _is_env(full):
                sel.skipped.append((rel + "/", "virtual environment"))
            elif user_ignored(rel, d):
                sel.skipped.append((rel + "/", IGNORE_FILE))
            else:
                keep_dirs.append(d)
        dirs[:] = keep_dirs
        for f in sorted(files):
            full = rootp / f
            rel = full.relative_to(folder).as_posix()
            if full.resolve() in excluded:
                sel.skipped.append((rel, "the package being written"))
            elif any(fnmatch.fnmatch(f, p) for p in SKIP_FILES):
                sel.skipped.append((rel, "cache, editor or test file"))
            elif rootp == folder and f.endswith(".zip") and (f == f"{name}.zip"
                                                             or f.startswith(f"{name}-")):
                sel.skipped.append((rel, "an earlier package of this plugin"))
            elif user_ignored(rel, f):
                sel.skipped.append((rel, IGNORE_FILE))
            elif not full.is_file():
                sel.skipped.append((rel, "not a regular file (broken link, socket, fifo)"))
            else:
                sel.files.append(rel)
    sel.files.sort()
    sel.skipped.sort()
    return sel
