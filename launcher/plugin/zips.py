"""Unpack plugin zips someone else built, without trusting them.

A plugin zip comes from a download, a colleague or an attacker; ``ekl validate/run/call
X.zip`` must not let it fill the disk (a 1 MB zip can claim 1 GiB), exhaust memory (a huge
root JSON), write outside its folder, plant links or world-writable files, or leave half a
plugin in the cache. So:

* every limit (total size, entry count, per-entry compression ratio) is checked against
  the central directory before a byte is written, and again while streaming, so a header
  that lies about sizes cannot write more than it declared;
* names are checked (no absolute paths, no ``..``, no file that is also a folder, no
  duplicates, no links or device files) and every problem is one line naming the zip, the
  entry and the fix;
* the zip is unpacked into a fresh temporary folder beside its final place and renamed in
  atomically: two first runs at once both succeed, and any failure leaves nothing behind;
* modes are normalised: files keep the owner's execute bit, lose group/world write and
  set-id bits; folders are 0755; the cache root is 0700 (see ``fsafe.ensure_private_dir``).

Standard library only.
"""

from __future__ import annotations

import glob
import hashlib
import os
import posixpath
import shutil
import stat
import struct
import tempfile
import time
import zipfile
import zlib
from pathlib import Path
from typing import Any, Dict, List, NoReturn, Optional, Tuple

from ekuiper.record import record

from ..errors import EklError, ManifestError
from ..fsafe import ensure_private_dir
from .jsonfile import env_int, json_limit, parse_json, too_big

MAX_BYTES_ENV = "EKL_ZIP_MAX_BYTES"
MAX_ENTRIES_ENV = "EKL_ZIP_MAX_ENTRIES"
MAX_RATIO_ENV = "EKL_ZIP_MAX_RATIO"

#: Defaults: far above any plugin seen so far (they are kilobytes to a few hundred MB with
#: a bundled model), far below what hurts a machine.
DEFAULT_MAX_BYTES = 1 << 30          # 1 GiB unpacked in all
DEFAULT_MAX_ENTRIES = 10_000
DEFAULT_MAX_RATIO = 100              # uncompressed : compressed, per entry
#: The ratio applies only to entries that unpack to more than this: a small file of
#: spaces legitimately compresses 300:1, and a few KiB cannot hurt anyone.
RATIO_FLOOR = 1 << 20                # 1 MiB
#: Longest entry name (bytes): deeper paths than any plugin needs, well inside PATH_MAX
#: once the cache folder is in front.
MAX_NAME = 1024
#: At most this many problems are listed; the rest are counted.
MAX_PROBLEMS = 20

CHUNK = 1 << 20
#: Methods Python's zipfile unpacks; eKuiper (Go's archive/zip) reads only the first two.
METHODS = {zipfile.ZIP_STORED: "stored", zipfile.ZIP_DEFLATED: "deflate",
           zipfile.ZIP_BZIP2: "bzip2", zipfile.ZIP_LZMA: "lzma"}
EKUIPER_METHODS = (zipfile.ZIP_STORED, zipfile.ZIP_DEFLATED)
#: A leftover temporary folder (its unpacker was SIGKILLed) older than this is removed by
#: the next successful unpack of the same zip.
STALE_TMP_S = 3600.0

#: What a damaged or crafted zip makes zipfile and its decompressors raise.
_ZIP_ERRORS = (zipfile.BadZipFile, zlib.error, EOFError, struct.error, NotImplementedError,
               RuntimeError, ValueError, OverflowError, UnicodeError)
try:
    import lzma

    _ZIP_ERRORS += (lzma.LZMAError,)
except ImportError:  # pragma: no cover - Python built without lzma
    pass


@record(frozen=True)
class ZipLimits:
    """Limits for one unpack. A field left None takes its environment variable, else the
    default, when the limits are used (not when the object is made), so a default
    ``ZipLimits()`` argument still follows the environment."""

    max_bytes: Optional[int] = None      # total uncompressed bytes; $EKL_ZIP_MAX_BYTES
    max_entries: Optional[int] = None    # entries in the central directory; $EKL_ZIP_MAX_ENTRIES
    max_ratio: Optional[int] = None      # per entry above RATIO_FLOOR; $EKL_ZIP_MAX_RATIO

    def resolved(self) -> ZipLimits:
        return ZipLimits(
            self.max_bytes if self.max_bytes is not None
            else env_int(MAX_BYTES_ENV, DEFAULT_MAX_BYTES),
            self.max_entries if self.max_entries is not None
            else env_int(MAX_ENTRIES_ENV, DEFAULT_MAX_ENTRIES),
            self.max_ratio if self.max_ratio is not None
            else env_int(MAX_RATIO_ENV, DEFAULT_MAX_RATIO))


@record
class _Entry:
    info: zipfile.ZipInfo
    rel: str             # normalised relative path ("a/b"), "" for the root
    is_dir: bool
    mode: int            # normalised permission bits


def _file_mode(unix: int) -> int:
    """No group/world write, no set-id or sticky bits, owner may read and write (so the
    cache can be cleaned); the owner's execute bit is kept. No Unix mode at all (zips made
    on Windows): 0644."""
    perm = unix & 0o777
    return (perm & 0o755) | 0o600 if perm else 0o644


def _name_ok(rel: str) -> bool:
    if "\x00" in rel:
        return False
    try:
        raw = os.fsencode(rel)
    except UnicodeError:
        return False
    return len(raw) <= MAX_NAME and all(0 < len(part) <= 255 for part in raw.split(b"/"))


def _count_entries(fp: Any, stop: int) -> Optional[int]:
    """Count the central directory's entries by walking their headers, stopping past
    ``stop``: zipfile builds an object per entry (about 500 bytes each, whatever the end
    record's count says), so a crafted 50 MB directory would otherwise cost gigabytes
    before any limit is checked. None when the structure is not what this walk expects;
    zipfile then judges it."""
    try:
        endrec = zipfile._EndRecData(fp)  # type: ignore[attr-defined]
        if not endrec:
            return None
        size_cd, location = int(endrec[5]), int(endrec[9])
        start = location - size_cd - (76 if endrec[0] == b"PK\x06\x06" else 0)
        if start < 0:
            return None
        fp.seek(start)
        n = used = 0
        while used < size_cd and n <= stop:
            head = fp.read(46)
            if len(head) < 46 or head[:4] != b"PK\x01\x02":
                return None
            skip = sum(struct.unpack("<3H", head[28:34]))
            fp.seek(skip, os.SEEK_CUR)
            used += 46 + skip
            n += 1
        return n
    except Exception:  # noqa: BLE001 - a private helper on crafted input; zipfile judges it
        return None
    finally:
        fp.seek(0)


def _scan(zf: zipfile.ZipFile, zpath: Path, limits: ZipLimits,
          for_ekuiper: bool = False) -> Tuple[List[str], List[_Entry]]:
    """Every problem in the central directory (nothing is decompressed), and the plan."""
    problems: List[str] = []
    infos = zf.infolist()
    if len(infos) > limits.max_entries:  # type: ignore[operator]
        problems.append(f"{zpath}: has {len(infos)} entries, more than the limit of "
                        f"{limits.max_entries}; remove files from the plugin, or raise "
                        f"{MAX_ENTRIES_ENV} if it really needs them")
        return problems, []
    total = sum(i.file_size for i in infos)
    if total > limits.max_bytes:  # type: ignore[operator]
        problems.append(f"{zpath}: unpacks to {total} bytes, more than the limit of "
                        f"{limits.max_bytes}; leave large files out of the plugin, or raise "
                        f"{MAX_BYTES_ENV} if it really needs them")
    entries: List[_Entry] = []
    seen: Dict[str, int] = {}
    files: Dict[str, str] = {}
    folders: Dict[str, str] = {}
    for info in infos:
        name = info.filename
        unix = info.external_attr >> 16
        kind = stat.S_IFMT(unix)
        if name.startswith("/") or ".." in name.split("/"):
            problems.append(f"{zpath}: entry {name!r} points outside the plugin folder; "
                            f"rebuild the zip with `ekl package`")
            continue
        parts = [p for p in name.split("/") if p not in ("", ".")]
        rel = "/".join(parts)
        is_dir = name.endswith("/") or (kind == stat.S_IFDIR and info.file_size == 0)
        if (not rel and not is_dir) or not _name_ok(rel):
            problems.append(f"{zpath}: entry {name!r} has an empty, too long or invalid name; "
                            f"rename it and rebuild the zip")
            continue
        if kind == stat.S_IFLNK:
            problems.append(f"{zpath}: entry {name!r} is a symbolic link; ekl (like eKuiper) "
                            f"does not unpack links: put the file itself in the zip "
                            f"(`ekl package` does)")
            continue
        if kind not in (0, stat.S_IFREG, stat.S_IFDIR):
            problems.append(f"{zpath}: entry {name!r} is a device, FIFO or socket, not a file "
                            f"or folder; remove it and rebuild the zip")
            continue
        if info.flag_bits & 0x1:
            problems.append(f"{zpath}: entry {name!r} is encrypted; ekl cannot unpack it (nor "
                            f"can eKuiper): rebuild the zip without a password")
            continue
        if info.compress_type not in METHODS:
            problems.append(f"{zpath}: entry {name!r} uses compression method "
                            f"{info.compress_type}, which ekl cannot unpack; rebuild the zip "
                            f"with `ekl package` (deflate)")
            continue
        if for_ekuiper and info.compress_type not in EKUIPER_METHODS:
            problems.append(f"{zpath}: entry {name!r} is compressed with "
                            f"{METHODS[info.compress_type]}; eKuiper reads only stored and "
                            f"deflated entries: rebuild the zip with `ekl package`")
        if not is_dir and info.file_size > RATIO_FLOOR and \
                info.file_size > limits.max_ratio * max(info.compress_size, 1):  # type: ignore[operator]
            problems.append(f"{zpath}: entry {name!r} unpacks to {info.file_size} bytes from "
                            f"{info.compress_size}, more than {limits.max_ratio} times its "
                            f"compressed size (a zip bomb?); rebuild the zip with `ekl "
                            f"package`, or raise {MAX_RATIO_ENV} if the file really is that "
                            f"repetitive")
        if is_dir:
            folders.setdefault(rel, name)
        else:
            seen[rel] = seen.get(rel, 0) + 1
            if seen[rel] == 2:
                problems.append(f"{zpath}: entry {name!r} is in the zip more than once; only "
                                f"one copy could be unpacked: remove the duplicates and "
                                f"rebuild the zip with `ekl package`")
            files.setdefault(rel, name)
        for i in range(1, len(parts)):
            folders.setdefault("/".join(parts[:i]), name)
        entries.append(_Entry(info, rel, is_dir, 0o755 if is_dir else _file_mode(unix)))
    for rel, name in files.items():
        if rel in folders:
            problems.append(f"{zpath}: entry {name!r} is both a file and a folder (of "
                            f"{folders[rel]!r}); rename one of them and rebuild the zip")
    return problems, entries


def _refuse(problems: List[str]) -> ManifestError:
    if len(problems) > MAX_PROBLEMS:
        more = len(problems) - MAX_PROBLEMS
        problems = problems[:MAX_PROBLEMS] + [f"... and {more} more problems in the same zip"]
    return ManifestError(problems)


def _open_zip(zpath: Path, fp: Any, limits: ZipLimits) -> zipfile.ZipFile:
    n = _count_entries(fp, limits.max_entries)  # type: ignore[arg-type]
    if n is not None and n > limits.max_entries:  # type: ignore[operator]
        raise ManifestError([f"{zpath}: has more entries than the limit of "
                             f"{limits.max_entries}; remove files from the plugin, or raise "
                             f"{MAX_ENTRIES_ENV} if it really needs them"])
    try:
        return zipfile.ZipFile(fp)
    except _ZIP_ERRORS + (OSError,) as e:  # OSError: a seek to a crafted offset
        raise ManifestError([f"{zpath}: not a zip file, or a damaged one ({_why(e)}); "
                             f"rebuild it with `ekl package`"]) from None


def _why(e: BaseException) -> str:
    return " ".join(str(e).split())[:200] or type(e).__name__


def _stream(zf: zipfile.ZipFile, zpath: Path, e: _Entry, sink: Any, budget: int,
            limits: ZipLimits) -> int:
    """Copy one entry to ``sink`` (a callable taking bytes, or None to only check it);
    return the bytes it held. Raises ManifestError the moment the entry holds more than its
    header declared or than ``budget``; a damaged stream (CRC, truncation) likewise."""
    info = e.info
    allowed = min(info.file_size, budget)
    done = 0
    try:
        src = zf.open(info)
    except _ZIP_ERRORS + (OSError,) as err:
        _damaged(zpath, info, err)
    with src:
        while True:
            try:
                chunk = src.read(CHUNK)
            except _ZIP_ERRORS + (OSError,) as err:  # bz2 reports bad data as OSError
                _damaged(zpath, info, err)
            if not chunk:
                break
            done += len(chunk)
            if done > allowed or (done > RATIO_FLOOR and done > limits.max_ratio *  # type: ignore[operator]
                                  max(info.compress_size, 1)):
                raise ManifestError([f"{zpath}: entry {info.filename!r} holds more data than "
                                     f"its header declares ({info.file_size} bytes); the zip "
                                     f"is damaged or crafted: rebuild it"])
            if sink is not None:
                sink(chunk)  # OSError here is the cache's, not the zip's: it propagates
    if done != info.file_size:
        raise ManifestError([f"{zpath}: entry {info.filename!r} is damaged (it holds {done} of "
                             f"the {info.file_size} bytes its header declares); download or "
                             f"rebuild the zip"])
    return done


def _damaged(zpath: Path, info: zipfile.ZipInfo, err: BaseException) -> NoReturn:
    raise ManifestError([f"{zpath}: entry {info.filename!r} is damaged ({_why(err)}); "
                         f"download or rebuild the zip"]) from None


def _sha256(fp: Any) -> str:
    h = hashlib.sha256()
    for chunk in iter(lambda: fp.read(CHUNK), b""):
        h.update(chunk)
    fp.seek(0)
    return h.hexdigest()


def _write_tree(zf: zipfile.ZipFile, zpath: Path, entries: List[_Entry], root: Path,
                limits: ZipLimits) -> None:
    budget = limits.max_bytes  # type: ignore[assignment]
    made = set()

    def folder(rel: str) -> None:
        """Create ``rel`` and its missing parents, 0755 whatever the umask (a loop, not
        recursion: a name may have hundreds of components)."""
        todo = []
        while rel and rel not in made:
            todo.append(rel)
            rel = posixpath.dirname(rel)
        for r in reversed(todo):
            d = root / r
            try:
                os.mkdir(d, 0o755)
            except FileExistsError:
                pass
            os.chmod(d, 0o755)
            made.add(r)

    for e in sorted(entries, key=lambda x: not x.is_dir):
        if e.is_dir:
            folder(e.rel)
            continue
        folder(posixpath.dirname(e.rel))
        fd = os.open(root / e.rel, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW
                     | getattr(os, "O_CLOEXEC", 0), 0o600)
        try:
            def sink(chunk: bytes, fd: int = fd) -> None:
                view = memoryview(chunk)
                while view:
                    view = view[os.write(fd, view):]

            budget -= _stream(zf, zpath, e, sink, budget, limits)
            os.fchmod(fd, e.mode)
        finally:
            os.close(fd)


def _clean_stale(parent: Path, stem: str) -> None:
    now = time.time()
    for p in parent.glob(f".{glob.escape(stem)}.*"):
        try:
            if now - p.lstat().st_mtime > STALE_TMP_S:
                shutil.rmtree(p, ignore_errors=True)
        except OSError:
            pass


def unpack_plugin_zip(zpath: Path, cache_root: Path, limits: ZipLimits = ZipLimits()) -> Path:
    """Unpack ``zpath`` once and return its folder, ``cache_root/zips/<stem>-<sha16>/<stem>``.

    The folder is keyed by the zip's content (SHA-256, read in chunks), so a changed zip
    gets a new folder and an unchanged one is unpacked once: if the folder exists it is
    returned as is. ``cache_root`` and ``cache_root/zips`` are created 0700 and refused if
    someone else owns them. Raises ManifestError (one line per problem, naming the zip, the
    entry and the fix) for anything wrong with the zip, EklError if the cache cannot be
    written; either way nothing is left behind.
    """
    zpath = Path(zpath)
    lim = limits.resolved()
    stem = zpath.stem
    try:
        fp = open(zpath, "rb")
    except OSError as e:
        raise ManifestError([f"{zpath}: cannot read it: {e.strerror}"]) from None
    with fp:
        try:
            digest = _sha256(fp)[:16]
        except OSError as e:
            raise ManifestError([f"{zpath}: cannot read it: {e.strerror}"]) from None
        zips = ensure_private_dir(ensure_private_dir(cache_root, "cache folder", "EKL_CACHE_DIR")
                                  / "zips", "cache folder", "EKL_CACHE_DIR")
        parent = zips / f"{stem}-{digest}"
        dest = parent / stem
        if dest.is_dir():
            return dest
        zf = _open_zip(zpath, fp, lim)
        with zf:
            problems, entries = _scan(zf, zpath, lim)
            if problems:
                raise _refuse(problems)
            tmp = _make_tmp(parent, stem, zpath)
            try:
                os.chmod(tmp, 0o755)
                _write_tree(zf, zpath, entries, Path(tmp), lim)
                try:
                    os.rename(tmp, dest)
                except OSError:
                    if not dest.is_dir():  # not a lost race: a real failure
                        raise
                    shutil.rmtree(tmp, ignore_errors=True)  # another run was first: use its copy
            except ManifestError:
                _discard(tmp, parent)
                raise
            except OSError as e:
                _discard(tmp, parent)
                raise EklError(f"{zpath}: cannot unpack it into {parent}: {e.strerror}; free "
                               f"space there or set EKL_CACHE_DIR to another folder") from None
            except BaseException:
                _discard(tmp, parent)
                raise
    _clean_stale(parent, stem)
    return dest


def _make_tmp(parent: Path, stem: str, zpath: Path) -> str:
    """A fresh folder beside ``dest``; retried because a failing concurrent run may remove
    an empty ``parent`` between our mkdir and mkdtemp."""
    for _ in range(10):
        try:
            os.makedirs(parent, mode=0o755, exist_ok=True)
            return tempfile.mkdtemp(prefix=f".{stem}.", dir=parent)
        except FileNotFoundError:
            continue
        except OSError as e:
            raise EklError(f"{zpath}: cannot unpack it into {parent}: {e.strerror}; free "
                           f"space there or set EKL_CACHE_DIR to another folder") from None
    raise EklError(f"{zpath}: cannot unpack it into {parent}: the folder keeps vanishing; "
                   f"free space there or set EKL_CACHE_DIR to another folder")


def _discard(tmp: str, parent: Path) -> None:
    shutil.rmtree(tmp, ignore_errors=True)
    try:
        parent.rmdir()  # only if empty: another run's folder stays
    except OSError:
        pass


def inspect_zip(zpath: Path, limits: ZipLimits = ZipLimits()) -> List[str]:
    """Every problem ``unpack_plugin_zip`` would refuse, plus what eKuiper cannot read
    (compression other than stored/deflate), for ``ekl validate``; [] if none.

    Reads the central directory first; only if that is within the limits are the entries
    decompressed (to a byte counter, nothing is written) to find CRC and size lies.
    """
    zpath = Path(zpath)
    lim = limits.resolved()
    try:
        fp = open(zpath, "rb")
    except OSError as e:
        return [f"{zpath}: cannot read it: {e.strerror}"]
    with fp:
        try:
            zf = _open_zip(zpath, fp, lim)
        except ManifestError as e:
            return e.problems
        with zf:
            problems, entries = _scan(zf, zpath, lim, for_ekuiper=True)
            if problems:
                return _refuse(problems).problems
            budget = lim.max_bytes
            for e in entries:
                if e.is_dir:
                    continue
                try:
                    budget -= _stream(zf, zpath, e, None, budget, lim)  # type: ignore[operator]
                except ManifestError as err:
                    problems.extend(err.problems)
                    if len(problems) >= MAX_PROBLEMS:
                        break
    return problems


def read_zip_json_limited(zf: zipfile.ZipFile, name: str, zpath: Path,
                          max_bytes: Optional[int] = None) -> Any:
    """``json.loads(zf.read(name))`` for ``ekl validate``, refusing from the central
    directory's size alone, and never decompressing more than the limit however the
    header lies. Raises ManifestError naming the zip and the entry."""
    limit = json_limit(max_bytes)
    where = f"{zpath}: entry {name!r}"
    try:
        info = zf.getinfo(name)
    except KeyError:
        raise ManifestError([f"{where} is not in the zip"]) from None
    if info.file_size > limit:
        too_big(where, info.file_size, limit)
    out: List[bytes] = []
    e = _Entry(info, name, False, 0)
    _stream(zf, zpath, e, out.append, limit, ZipLimits(limit, 1, 1 << 62))
    return parse_json(b"".join(out), where)
