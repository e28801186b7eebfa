"""Plugin zips from strangers: limits before writing, one-line errors, atomic unpacking.

Everything here is real: zips written by zipfile or byte by byte (for what zipfile will not
write: bombs, lying headers, bad CRCs), unpacked into real folders, concurrent first runs in
real processes.
"""

from __future__ import annotations

import json
import os
import stat
import struct
import subprocess
import sys
import tempfile
import warnings
import zipfile
import zlib
from pathlib import Path
from typing import Dict, List, Optional

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from ekl.launcher.errors import EklError, ManifestError
from ekl.launcher.plugin.jsonfile import read_json_limited
from ekl.launcher.plugin.zips import (
    ZipLimits,
    inspect_zip,
    read_zip_json_limited,
    unpack_plugin_zip,
)

GiB = 1 << 30
MiB = 1 << 20


# --- building zips -------------------------------------------------------------------------


def make_zip(path: Path, entries: List[tuple], method: int = zipfile.ZIP_DEFLATED) -> Path:
    """entries: (name, data, unix mode or None for none, as Windows tools write: only the
    MS-DOS archive bit)."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # duplicate names are the point of some tests
        with zipfile.ZipFile(path, "w", method) as zf:
            for name, data, mode in entries:
                info = zipfile.ZipInfo(name, date_time=(2020, 1, 1, 0, 0, 0))
                info.compress_type = method
                info.external_attr = 0x20 if mode is None else mode << 16
                zf.writestr(info, data)
    return path


def raw_zip(path: Path, entries: List[Dict]) -> Path:
    """A zip written byte by byte: each entry gives name, raw (already compressed) bytes,
    method, crc, size (what the headers declare), mode."""
    out = bytearray()
    central = bytearray()
    for e in entries:
        name = e["name"].encode()
        off = len(out)
        raw = e["raw"]
        fields = (e.get("flags", 0), e.get("method", 8), 0, 0x21, e["crc"], len(raw), e["size"])
        out += struct.pack("<4s5H3L2H", b"PK\x03\x04", 20, *fields, len(name), 0) + name + raw
        central += struct.pack("<4s6H3L5H2L", b"PK\x01\x02", (3 << 8) | 20, 20, *fields,
                               len(name), 0, 0, 0, 0, e.get("mode", 0o100644) << 16, off) + name
    n = len(entries)
    cd_off = len(out)
    out += central + struct.pack("<4s4H2LH", b"PK\x05\x06", 0, 0, n, n, len(central), cd_off, 0)
    path.write_bytes(bytes(out))
    return path


def deflate_repeated(pieces: List[tuple]) -> tuple:
    """Raw deflate of ``piece * count`` for each (piece, count), without compressing all of
    it: each piece is compressed once by a fresh compressor ending in a full flush, so its
    bytes can simply be repeated. Returns (raw, crc, size)."""
    raw = bytearray()
    crc = 0
    size = 0
    for piece, count in pieces:
        c = zlib.compressobj(9, zlib.DEFLATED, -15)
        block = c.compress(piece) + c.flush(zlib.Z_FULL_FLUSH)
        raw += block * count
        for _ in range(count):
            crc = zlib.crc32(piece, crc)
        size += len(piece) * count
    raw += b"\x03\x00"  # the final, empty block
    return bytes(raw), crc, size


def bomb(path: Path, gib: int = 1) -> Path:
    raw, crc, size = deflate_repeated([(bytes(MiB), 1024 * gib)])
    return raw_zip(path, [{"name": "p.json", "raw": b"{}", "method": 0, "crc": zlib.crc32(b"{}"),
                           "size": 2},
                          {"name": "model.bin", "raw": raw, "crc": crc, "size": size}])


def leftovers(cache: Path) -> List[str]:
    """Everything under the cache's zips folder (a failed unpack must leave nothing)."""
    zips = cache / "zips"
    return sorted(str(p.relative_to(zips)) for p in zips.rglob("*")) if zips.exists() else []


def plugin_zip(tmp_path: Path, name: str = "p") -> Path:
    return make_zip(tmp_path / f"{name}.zip", [
        (f"{name}.json", '{"language": "python", "executable": "main.py", "functions": ["f"]}',
         0o100644),
        ("main.py", "print('hi')\n", 0o100777 | stat.S_ISUID),   # 0777 + setuid
        ("lib/", "", 0o040777),
        ("lib/data.txt", "x" * 100, 0o100666),
        ("lib/tool", "#!/bin/sh\n", 0o100700),
        ("README", "no unix mode", None),
    ])


# --- the happy path ------------------------------------------------------------------------


def test_unpack_normalises_modes_and_keys_by_content(tmp_path):
    cache = tmp_path / "cache"
    z = plugin_zip(tmp_path)
    dest = unpack_plugin_zip(z, cache)
    assert dest.name == "p" and dest.parent.parent == cache / "zips"
    assert dest.parent.name.startswith("p-") and len(dest.parent.name) == len("p-") + 16

    def mode(rel: str) -> int:
        return stat.S_IMODE(os.lstat(dest / rel).st_mode)

    assert mode("main.py") == 0o755            # no world write, no setuid, x kept
    assert mode("lib/data.txt") == 0o644
    assert mode("lib/tool") == 0o700           # the owner's x bit, nothing added
    assert mode("README") == 0o644             # no Unix mode recorded
    assert mode("lib") == 0o755 and mode(".") == 0o755
    assert stat.S_IMODE(os.stat(cache).st_mode) == 0o700
    assert stat.S_IMODE(os.stat(cache / "zips").st_mode) == 0o700
    assert (dest / "lib" / "data.txt").read_text() == "x" * 100

    # unpacked once: the second call returns the same folder untouched
    (dest / "marker").write_text("1")
    assert unpack_plugin_zip(z, cache) == dest and (dest / "marker").exists()
    # a changed zip is a new folder
    make_zip(z, [("p.json", "{}", None)])
    assert unpack_plugin_zip(z, cache) != dest
    assert not [n for n in leftovers(cache) if "/." in f"/{n}"]  # no temp folders


def test_umask_000_still_gives_private_cache_and_no_writable_files(tmp_path):
    old = os.umask(0)
    try:
        dest = unpack_plugin_zip(plugin_zip(tmp_path), tmp_path / "c" / "ekl")
    finally:
        os.umask(old)
    for d in (tmp_path / "c", tmp_path / "c" / "ekl", tmp_path / "c" / "ekl" / "zips"):
        assert stat.S_IMODE(os.stat(d).st_mode) == 0o700, d
    for p in [dest, *dest.rglob("*")]:
        assert not os.lstat(p).st_mode & 0o7022, p


def test_cache_root_owned_by_someone_else_is_refused(tmp_path):
    cache = tmp_path / "cache"
    cache.mkdir(mode=0o777)
    os.chmod(cache, 0o777)
    with pytest.raises(EklError) as e:
        unpack_plugin_zip(plugin_zip(tmp_path), cache)
    assert "chmod 700" in str(e.value) and str(cache) in str(e.value)


# --- limits --------------------------------------------------------------------------------


def test_zip_bomb_1mb_to_1gib_is_refused_before_writing(tmp_path):
    z = bomb(tmp_path / "p.zip")
    assert z.stat().st_size < 1.1 * MiB
    cache = tmp_path / "cache"
    with pytest.raises(ManifestError) as e:
        unpack_plugin_zip(z, cache)
    total, ratio = e.value.problems  # one line each, both naming the zip
    assert total.startswith(f"{z}: unpacks to 1073741826 bytes, more than the limit of 1073741824")
    assert ratio.startswith(f"{z}: entry 'model.bin' unpacks to 1073741824 bytes from 10")
    assert "zip bomb" in ratio and "EKL_ZIP_MAX_RATIO" in ratio
    assert leftovers(cache) == []
    assert inspect_zip(z) == e.value.problems


def test_total_size_and_entry_limits_from_argument_and_environment(tmp_path, monkeypatch):
    z = make_zip(tmp_path / "p.zip", [(f"f{i}", os.urandom(1000), None) for i in range(10)])
    cache = tmp_path / "cache"
    with pytest.raises(ManifestError, match="unpacks to 10000 bytes, more than the limit of 5000"):
        unpack_plugin_zip(z, cache, ZipLimits(max_bytes=5000))
    with pytest.raises(ManifestError, match="has more entries than the limit of 5;"):
        unpack_plugin_zip(z, cache, ZipLimits(max_entries=5))
    monkeypatch.setenv("EKL_ZIP_MAX_BYTES", "9999")
    with pytest.raises(ManifestError, match="EKL_ZIP_MAX_BYTES"):
        unpack_plugin_zip(z, cache)
    assert any("more than the limit of 9999" in p for p in inspect_zip(z))
    monkeypatch.setenv("EKL_ZIP_MAX_BYTES", "10000")
    monkeypatch.setenv("EKL_ZIP_MAX_ENTRIES", "9")
    with pytest.raises(ManifestError, match="raise EKL_ZIP_MAX_ENTRIES"):
        unpack_plugin_zip(z, cache)
    assert leftovers(cache) == []
    monkeypatch.setenv("EKL_ZIP_MAX_ENTRIES", "10")
    assert unpack_plugin_zip(z, cache).is_dir()
    monkeypatch.setenv("EKL_ZIP_MAX_RATIO", "lots")
    with pytest.raises(EklError, match="EKL_ZIP_MAX_RATIO='lots': must be a positive whole number"):
        inspect_zip(z)


def test_ratio_applies_only_above_one_mib(tmp_path):
    spaces = make_zip(tmp_path / "s.zip", [("p.json", " " * 500_000, None)])  # ~500:1, small
    assert inspect_zip(spaces) == []
    big = make_zip(tmp_path / "b.zip", [("zeros", bytes(2 * MiB), None)])
    assert "zip bomb" in inspect_zip(big)[0]
    assert inspect_zip(big, ZipLimits(max_ratio=10_000)) == []


def test_a_lying_header_cannot_write_more_than_it_declares(tmp_path):
    """The central directory says 100 bytes; the data inflates to 5 MiB."""
    raw, _, _ = deflate_repeated([(b"A" * MiB, 5)])
    crc100 = zlib.crc32(b"A" * 100)
    z = raw_zip(tmp_path / "p.zip", [{"name": "a", "raw": raw, "crc": crc100, "size": 100}])
    dest = unpack_plugin_zip(z, tmp_path / "cache")
    assert (dest / "a").read_bytes() == b"A" * 100  # what the header declared, no more
    # claims more than it holds: damaged, nothing left behind
    raw2, crc2, _ = deflate_repeated([(b"B" * 1000, 1)])
    z2 = raw_zip(tmp_path / "q.zip", [{"name": "b", "raw": raw2, "crc": crc2, "size": 5000}])
    with pytest.raises(ManifestError, match=r"entry 'b' is damaged \(it holds 1000 of the 5000"):
        unpack_plugin_zip(z2, tmp_path / "cache2")
    assert leftovers(tmp_path / "cache2") == []


# --- damaged and hostile entries -----------------------------------------------------------


def test_bad_crc_is_one_line_and_leaves_nothing(tmp_path):
    good = [("p.json", "{}", None), ("lib/a.py", "print(1)\n" * 50, None)]
    z = make_zip(tmp_path / "p.zip", good, zipfile.ZIP_STORED)
    data = bytearray(z.read_bytes())
    i = data.index(b"print(1)")
    data[i] ^= 0xFF
    z.write_bytes(bytes(data))
    cache = tmp_path / "cache"
    with pytest.raises(ManifestError) as e:
        unpack_plugin_zip(z, cache)
    msg = str(e.value)
    assert msg.startswith(f"{z}: entry 'lib/a.py' is damaged (Bad CRC-32") and "\n" not in msg
    assert leftovers(cache) == []
    assert inspect_zip(z) == [msg]


@pytest.mark.parametrize("garbage", [b"", b"not a zip at all", b"PK\x05\x06" + b"\xff" * 18,
                                     b"PK\x03\x04" + os.urandom(200)])
def test_not_a_zip(tmp_path, garbage):
    z = tmp_path / "p.zip"
    z.write_bytes(garbage)
    with pytest.raises(ManifestError, match="not a zip file, or a damaged one"):
        unpack_plugin_zip(z, tmp_path / "cache")
    assert leftovers(tmp_path / "cache") == []
    assert "not a zip file" in inspect_zip(z)[0]


def test_file_and_folder_with_one_name(tmp_path):
    z = make_zip(tmp_path / "p.zip", [("p.json", "{}", None), ("lib", "file", None),
                                      ("lib/x.py", "", None)])
    with pytest.raises(ManifestError, match="entry 'lib' is both a file and a folder"):
        unpack_plugin_zip(z, tmp_path / "cache")
    assert leftovers(tmp_path / "cache") == []
    z2 = make_zip(tmp_path / "q.zip", [("x", "file", None), ("x/", "", 0o040755)])
    assert "both a file and a folder" in inspect_zip(z2)[0]


def test_symlink_and_device_entries_are_refused(tmp_path):
    z = make_zip(tmp_path / "p.zip", [("p.json", "{}", None),
                                      ("evil", "/etc/passwd", 0o120777),
                                      ("fifo", "", 0o010644)])
    with pytest.raises(ManifestError) as e:
        unpack_plugin_zip(z, tmp_path / "cache")
    assert e.value.problems == [
        f"{z}: entry 'evil' is a symbolic link; ekl (like eKuiper) does not unpack links: put "
        f"the file itself in the zip (`ekl package` does)",
        f"{z}: entry 'fifo' is a device, FIFO or socket, not a file or folder; remove it and "
        f"rebuild the zip"]
    assert leftovers(tmp_path / "cache") == []


def test_duplicates_are_reported_by_name(tmp_path):
    z = make_zip(tmp_path / "p.zip", [("p.json", "{}", None), ("main.py", "good", None),
                                      ("main.py", "evil", None), ("./lib//a", "1", None),
                                      ("lib/a", "2", None)])
    problems = inspect_zip(z)
    assert [p.split("entry ")[1].split(" is")[0] for p in problems] == ["'main.py'", "'lib/a'"]
    assert all("more than once" in p for p in problems)
    with pytest.raises(ManifestError):
        unpack_plugin_zip(z, tmp_path / "cache")


@pytest.mark.parametrize("name", ["../x", "/etc/x", "a/../../x", "a/../b"])
def test_paths_escaping_the_folder(tmp_path, name):
    z = make_zip(tmp_path / "p.zip", [("p.json", "{}", None), (name, "1", None)])
    with pytest.raises(ManifestError, match="points outside the plugin folder"):
        unpack_plugin_zip(z, tmp_path / "c" / "cache")
    assert not (tmp_path / "x").exists() and not (tmp_path / "c" / "x").exists()


def test_encrypted_and_unknown_methods_and_what_ekuiper_cannot_read(tmp_path):
    z = raw_zip(tmp_path / "p.zip", [
        {"name": "enc", "raw": b"12345678901234", "crc": 0, "size": 2, "flags": 1},
        {"name": "odd", "raw": b"xx", "crc": 0, "size": 2, "method": 99}])
    assert [p.split("; ")[0] for p in inspect_zip(z)] == [
        f"{z}: entry 'enc' is encrypted", f"{z}: entry 'odd' uses compression method 99, "
        f"which ekl cannot unpack"]
    bz = make_zip(tmp_path / "b.zip", [("p.json", "{}", None)], zipfile.ZIP_BZIP2)
    assert "eKuiper reads only stored and deflated entries" in inspect_zip(bz)[0]
    assert (unpack_plugin_zip(bz, tmp_path / "cache") / "p.json").read_text() == "{}"


def test_too_many_entries_refused_from_the_end_record(tmp_path):
    z = make_zip(tmp_path / "p.zip", [(f"f{i}", "", None) for i in range(50)])
    with pytest.raises(ManifestError, match="has more entries than the limit of 49; remove"):
        unpack_plugin_zip(z, tmp_path / "cache", ZipLimits(max_entries=49))
    assert unpack_plugin_zip(z, tmp_path / "cache", ZipLimits(max_entries=50)).is_dir()


def test_a_central_directory_longer_than_its_end_record_says(tmp_path):
    """The end record claims 2 entries; the directory holds 5000. Counted by walking the
    headers, refused before zipfile builds an object per entry."""
    z = make_zip(tmp_path / "p.zip", [(f"f{i}", "", None) for i in range(5000)])
    data = bytearray(z.read_bytes())
    eocd = data.rindex(b"PK\x05\x06")
    struct.pack_into("<HH", data, eocd + 8, 2, 2)
    z.write_bytes(bytes(data))
    with pytest.raises(ManifestError, match="has more entries than the limit of 100"):
        unpack_plugin_zip(z, tmp_path / "cache", ZipLimits(max_entries=100))


def test_deep_and_long_names(tmp_path):
    deep = "/".join(["d"] * 500) + "/f"          # 1001 bytes, 501 components
    z = make_zip(tmp_path / "p.zip", [("p.json", "{}", None), (deep, "1", None)])
    assert (unpack_plugin_zip(z, tmp_path / "cache") / deep).read_text() == "1"
    too = make_zip(tmp_path / "q.zip", [("d/" * 600 + "f", "1", None), ("x" * 256, "", None)])
    problems = inspect_zip(too)
    assert len(problems) == 2 and all("has an empty, too long or invalid name" in p
                                      for p in problems)


# --- concurrency and failures --------------------------------------------------------------

RACE = """
import sys, time
from pathlib import Path
from ekl.launcher.plugin.zips import unpack_plugin_zip
go = Path(sys.argv[3])
while not go.exists():
    time.sleep(0.001)
print(unpack_plugin_zip(Path(sys.argv[1]), Path(sys.argv[2])))
"""


def test_two_concurrent_first_unpacks_both_succeed(tmp_path):
    z = make_zip(tmp_path / "p.zip", [("p.json", "{}", None)] +
                 [(f"lib/m{i}.py", os.urandom(2000), None) for i in range(300)])
    cache = tmp_path / "cache"
    go = tmp_path / "go"
    procs = [subprocess.Popen([sys.executable, "-c", RACE, str(z), str(cache), str(go)],
                              stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
             for _ in range(2)]
    try:
        go.touch()
        outs = [p.communicate(timeout=60) for p in procs]
    finally:
        for p in procs:
            if p.poll() is None:
                p.kill()
                p.wait()
    assert [p.returncode for p in procs] == [0, 0], outs
    dests = {o.strip() for o, _ in outs}
    assert len(dests) == 1
    dest = Path(dests.pop())
    assert len(list((dest / "lib").iterdir())) == 300
    assert os.listdir(dest.parent) == ["p"]  # the loser discarded its copy


def test_the_run_that_loses_the_rename_uses_the_winners_folder(tmp_path, monkeypatch):
    """Deterministic lost race: while this run's copy is complete but not yet renamed,
    another process unpacks the same zip to the end."""
    from ekl.launcher.plugin import zips as safezip

    z = plugin_zip(tmp_path)
    cache = tmp_path / "cache"
    real = safezip._write_tree

    def then_another_process_wins(*args, **kwargs):
        real(*args, **kwargs)
        go = tmp_path / "go"
        go.touch()
        subprocess.run([sys.executable, "-c", RACE, str(z), str(cache), str(go)], check=True,
                       capture_output=True, timeout=60)

    monkeypatch.setattr(safezip, "_write_tree", then_another_process_wins)
    dest = unpack_plugin_zip(z, cache)
    assert (dest / "main.py").is_file()
    assert os.listdir(dest.parent) == ["p"]  # this run's copy was discarded


def test_a_failure_midway_leaves_no_temp_folder(tmp_path):
    """The bad entry comes after 200 good ones, so the temporary folder is half full."""
    entries = [("p.json", "{}", None)] + [(f"m{i}", "ok", None) for i in range(200)] + \
              [("zz", "last" * 100, None)]
    z = make_zip(tmp_path / "p.zip", entries, zipfile.ZIP_STORED)
    data = bytearray(z.read_bytes())
    data[data.index(b"lastlast") + 3] ^= 1
    z.write_bytes(bytes(data))
    cache = tmp_path / "cache"
    with pytest.raises(ManifestError, match="entry 'zz' is damaged"):
        unpack_plugin_zip(z, cache)
    assert leftovers(cache) == []


def test_cache_not_writable_is_one_line(tmp_path):
    cache = tmp_path / "cache"
    z = plugin_zip(tmp_path)
    (cache / "zips").mkdir(parents=True, mode=0o700)
    digest_folder = unpack_plugin_zip(z, tmp_path / "other").parent.name
    (cache / "zips" / digest_folder).write_text("a file where the folder goes")
    with pytest.raises(EklError, match="cannot unpack it into .*; free space there or set "
                                       "EKL_CACHE_DIR"):
        unpack_plugin_zip(z, cache)


# --- JSON size ------------------------------------------------------------------------------


def test_read_json_limited(tmp_path, monkeypatch):
    p = tmp_path / "p.json"
    p.write_text('{"a": 1}')
    assert read_json_limited(p) == {"a": 1}
    p.write_text(" " * (MiB + 1))
    with pytest.raises(ManifestError, match=r"is 1048577 bytes, more than the 1048576 a plugin's"):
        read_json_limited(p)
    monkeypatch.setenv("EKL_JSON_MAX_BYTES", str(2 * MiB))
    with pytest.raises(ManifestError, match="not valid JSON"):
        read_json_limited(p)
    p.write_text("[" * 200_000)
    with pytest.raises(ManifestError, match="nested too deeply"):
        read_json_limited(p)
    p.write_bytes(b'{"a": "\xff"}')
    with pytest.raises(ManifestError, match="not UTF-8"):
        read_json_limited(p)
    fifo = tmp_path / "fifo.json"
    os.mkfifo(fifo)
    with pytest.raises(ManifestError, match="is not a regular file"):
        read_json_limited(fifo)  # would block forever if opened for a plain read
    with pytest.raises(ManifestError, match="cannot read it"):
        read_json_limited(tmp_path / "missing.json")


def huge_json_zip(path: Path, mib: int) -> Path:
    raw, crc, size = deflate_repeated([(b'{"executable": "x.py", "pad": [', 1),
                                       (b"0," * (MiB // 2), mib), (b"0]}", 1)])
    return raw_zip(path, [{"name": "p.json", "raw": raw, "crc": crc, "size": size}])


RSS = """
import json, resource, sys, zipfile
from pathlib import Path
before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
how, z = sys.argv[1], Path(sys.argv[2])
try:
    if how == "baseline":
        json.loads(zipfile.ZipFile(z).read("p.json"))
    elif how == "inspect":
        from ekl.launcher.plugin.zips import inspect_zip
        print(inspect_zip(z)[0], file=sys.stderr)
    elif how == "file":
        from ekl.launcher.plugin.jsonfile import read_json_limited
        read_json_limited(z)
    else:
        from ekl.launcher.plugin.zips import read_zip_json_limited
        read_zip_json_limited(zipfile.ZipFile(z), "p.json", z)
except Exception as e:
    print(type(e).__name__, e, file=sys.stderr)
print((resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - before) // 1024)
"""


def rss_growth_mib(how: str, path: Path) -> tuple:
    cp = subprocess.run([sys.executable, "-c", RSS, how, str(path)], capture_output=True,
                        text=True, timeout=120)
    assert cp.returncode == 0, cp.stderr
    return int(cp.stdout.strip()), cp.stderr.strip()


def test_huge_root_json_in_a_zip_is_refused_cheaply(tmp_path):
    """A ~200 KB zip holding a 64 MiB root JSON: refused from the header's size, so memory
    does not grow (reading it as check_zip did costs hundreds of MB; see bench/)."""
    z = huge_json_zip(tmp_path / "p.zip", 64)
    assert z.stat().st_size < 300_000
    for how in ("inspect", "zipjson"):
        grew, err = rss_growth_mib(how, z)
        assert grew < 20, (how, grew, err)
        assert "ManifestError" in err or "zip bomb" in err, err
    unpacked = tmp_path / "p.json"
    with zipfile.ZipFile(z) as zf, open(unpacked, "wb") as f:
        with zf.open("p.json") as src:
            for chunk in iter(lambda: src.read(MiB), b""):
                f.write(chunk)
    grew, err = rss_growth_mib("file", unpacked)
    assert grew < 20 and "more than the 1048576 a plugin's JSON may have" in err, (grew, err)


def test_read_zip_json_limited_never_inflates_past_the_limit(tmp_path):
    """The header says 10 bytes; the entry is a 64 MiB JSON: at most the limit is read."""
    raw, _, _ = deflate_repeated([(b"[" + b"0," * (MiB // 2), 64)])
    z = raw_zip(tmp_path / "p.zip", [{"name": "p.json", "raw": raw, "crc": 0, "size": 10}])
    with zipfile.ZipFile(z) as zf, pytest.raises(ManifestError, match="entry 'p.json' is damaged"):
        read_zip_json_limited(zf, "p.json", z)
    ok = make_zip(tmp_path / "ok.zip", [("p.json", '{"a": [1]}', None)])
    with zipfile.ZipFile(ok) as zf:
        assert read_zip_json_limited(zf, "p.json", ok) == {"a": [1]}
        with pytest.raises(ManifestError, match="is not in the zip"):
            read_zip_json_limited(zf, "q.json", ok)


# --- fuzz -----------------------------------------------------------------------------------

NAMES = st.text(alphabet="ab/.\\\x00ü", max_size=10) | st.sampled_from([
    "p.json", "main.py", "lib/", "lib/a.py", "lib", "../up", "/abs", "", ".", "./x", "a//b",
    "x" * 300, "a/./b/", "\\win\\path", "ü/ß.py", "lib/a.py/"])
MODES = st.sampled_from([None, 0o100644, 0o100777, 0o104755, 0o102777, 0o120777, 0o040777,
                         0o020666, 0o010644, 0o140755, 0o170777, 0o777])
FUZZ_LIMITS = ZipLimits(max_bytes=64 * 1024, max_entries=12, max_ratio=50)
CD_FIELDS = {"method": (10, "H"), "crc": (16, "L"), "csize": (20, "L"), "size": (24, "L"),
             "flags": (8, "H"), "attr": (38, "L"), "offset": (42, "L")}


@st.composite
def crafted_zip(draw) -> bytes:
    entries = draw(st.lists(st.tuples(NAMES, st.binary(max_size=3000) | st.sampled_from(
        [bytes(20_000), b"A" * 70_000]), MODES), max_size=8))
    method = draw(st.sampled_from([zipfile.ZIP_STORED, zipfile.ZIP_DEFLATED, zipfile.ZIP_BZIP2,
                                   zipfile.ZIP_LZMA]))
    fd, name = tempfile.mkstemp(suffix=".zip")
    os.close(fd)
    try:
        make_zip(Path(name), entries, method)
        data = bytearray(Path(name).read_bytes())
    finally:
        os.unlink(name)
    # lie in central directory fields
    starts = [i for i in range(len(data)) if data[i:i + 4] == b"PK\x01\x02"]
    for _ in range(draw(st.integers(0, 3))):
        if not starts:
            break
        at = draw(st.sampled_from(starts))
        off, fmt = CD_FIELDS[draw(st.sampled_from(sorted(CD_FIELDS)))]
        value = draw(st.integers(0, 0xFFFF if fmt == "H" else 0xFFFFFFFF) |
                     st.sampled_from([0, 1, 99, 0xFFFFFFFF, 0o120777 << 16]))
        if at + off + struct.calcsize(fmt) <= len(data):
            struct.pack_into("<" + fmt, data, at + off, value & (0xFFFF if fmt == "H" else 0xFFFFFFFF))
    # flip bytes, truncate
    for _ in range(draw(st.integers(0, 3))):
        if data:
            data[draw(st.integers(0, len(data) - 1))] = draw(st.integers(0, 255))
    if draw(st.booleans()) and data:
        data = data[:draw(st.integers(0, len(data)))]
    return bytes(data)


def check_fuzzed(data: bytes, limits: ZipLimits) -> Optional[str]:
    with tempfile.TemporaryDirectory() as d:
        z = Path(d) / "p.zip"
        z.write_bytes(data)
        cache = Path(d) / "cache"
        problems = inspect_zip(z, limits)  # never raises
        assert isinstance(problems, list) and all(isinstance(p, str) for p in problems)
        try:
            dest = unpack_plugin_zip(z, cache, limits)
        except ManifestError as e:
            assert e.problems and all("\n" not in p and p.startswith(str(z)) for p in e.problems)
            assert leftovers(cache) == [], leftovers(cache)
            return "refused"
        total = 0
        for p in [dest, *dest.rglob("*")]:
            st_ = os.lstat(p)
            assert stat.S_ISDIR(st_.st_mode) or stat.S_ISREG(st_.st_mode), p
            assert not st_.st_mode & 0o7022, (p, oct(st_.st_mode))
            assert dest in p.parents or p == dest
            total += st_.st_size if stat.S_ISREG(st_.st_mode) else 0
        assert total <= limits.resolved().max_bytes
        assert os.listdir(dest.parent) == [dest.name]
        return "unpacked"


@settings(max_examples=40, deadline=None, suppress_health_check=list(HealthCheck))
@given(crafted_zip())
def test_fuzz_crafted_zips_unpack_within_limits_or_refuse(data):
    check_fuzzed(data, FUZZ_LIMITS)


@pytest.mark.slow
@settings(max_examples=1500, deadline=None, suppress_health_check=list(HealthCheck))
@given(crafted_zip())
def test_fuzz_crafted_zips_many(data):
    check_fuzzed(data, FUZZ_LIMITS)


def test_fuzz_corpus_reaches_both_outcomes(tmp_path):
    """The fuzz strategy is not vacuous: it finds zips that unpack and zips that are refused."""
    seen = set()
    for data in (make_zip(tmp_path / "a.zip", [("p.json", "{}", None)]).read_bytes(),
                 bomb(tmp_path / "b.zip", 1).read_bytes()):
        seen.add(check_fuzzed(data, ZipLimits()))
    assert seen == {"refused", "unpacked"}


def test_plugin_json_in_the_zip_round_trips(tmp_path):
    body = {"language": "python", "executable": "main.py", "functions": ["f"]}
    dest = unpack_plugin_zip(plugin_zip(tmp_path), tmp_path / "cache")
    assert read_json_limited(dest / "p.json") == body
    assert json.loads((dest / "p.json").read_text()) == body
