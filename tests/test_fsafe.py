"""Shared folders another local user may have prepared: real folders, real owners (chown
as root), real symlinks, real threads and processes."""

from __future__ import annotations

import os
import stat
import subprocess
import sys
import threading
from pathlib import Path

import pytest

from ekl.launcher import fsafe
from ekl.launcher.errors import EklError
from ekl.launcher.fsafe import (
    atomic_write,
    default_status_dir,
    ensure_private_dir,
    private_tmp_dir,
    status_dir_candidates,
)

root_only = pytest.mark.skipif(os.geteuid() != 0, reason="chown to another user needs root")


def mode(p) -> int:
    return stat.S_IMODE(os.lstat(p).st_mode)


def temp_files(folder: Path) -> list:
    return [n for n in os.listdir(folder) if n.endswith(".tmp")]


# --- ensure_private_dir ---------------------------------------------------------------------


def test_created_0700_with_parents_under_umask_000(tmp_path):
    target = tmp_path / "a" / "b" / "status"
    old = os.umask(0)
    try:
        assert ensure_private_dir(target, "status folder") == target
    finally:
        os.umask(old)
    for p in (tmp_path / "a", tmp_path / "a" / "b", target):
        assert mode(p) == 0o700, p
    assert ensure_private_dir(target, "status folder") == target  # existing and fine


def test_existing_private_folder_is_accepted_untouched(tmp_path):
    d = tmp_path / "mine"
    d.mkdir()
    os.chmod(d, 0o755)  # readable by others, writable by nobody else: fine, left alone
    ensure_private_dir(d, "cache folder")
    assert mode(d) == 0o755


@root_only
def test_folder_owned_by_another_user_is_refused(tmp_path):
    d = tmp_path / "ekl-status"
    d.mkdir(mode=0o700)
    os.chown(d, 65534, 65534)
    with pytest.raises(EklError) as e:
        ensure_private_dir(d, "status folder", "EKL_STATUS_DIR")
    msg = str(e.value)
    assert msg.startswith(f"status folder {d} belongs to ") and "uid 65534" in msg
    assert f"rm -r {d}" in msg and "set EKL_STATUS_DIR to a folder of your own" in msg
    assert "\n" not in msg


@pytest.mark.parametrize("bits", [0o770, 0o707, 0o777, 0o1777])
def test_group_or_world_writable_folder_is_refused(tmp_path, bits):
    d = tmp_path / "shared"
    d.mkdir()
    os.chmod(d, bits)
    with pytest.raises(EklError, match=rf"can be written by other users \(mode {bits:04o}\); "
                                       rf"make it private: chmod 700 {d}"):
        ensure_private_dir(d, "cache folder")
    assert mode(d) == bits  # refused, not "fixed" behind the owner's back


def test_symlink_at_the_folder_is_refused(tmp_path):
    victim = tmp_path / "victim"
    victim.mkdir(mode=0o700)
    link = tmp_path / "ekl-status"
    link.symlink_to(victim)
    with pytest.raises(EklError, match=rf"status folder {link} is a symbolic link \(to {victim}\)"
                                       rf"; .*remove it \(rm {link}\) or set EKL_STATUS_DIR"):
        ensure_private_dir(link, "status folder", "EKL_STATUS_DIR")
    dangling = tmp_path / "dangling"
    dangling.symlink_to(tmp_path / "nowhere")
    with pytest.raises(EklError, match="is a symbolic link"):
        ensure_private_dir(dangling, "status folder")
    assert not (tmp_path / "nowhere").exists()


def test_a_file_at_the_folder_is_refused(tmp_path):
    f = tmp_path / "status"
    f.write_text("x")
    with pytest.raises(EklError, match=rf"exists and is not a folder; remove it \(rm {f}\)"):
        ensure_private_dir(f, "status folder")


def test_cannot_create_is_one_line(tmp_path):
    (tmp_path / "file").write_text("x")
    with pytest.raises(EklError, match=r"cannot create it: Not a directory; create it yourself"):
        ensure_private_dir(tmp_path / "file" / "sub", "socket folder")


# --- atomic_write -----------------------------------------------------------------------------


def test_atomic_write_mode_under_umask_000(tmp_path):
    p = tmp_path / "s.json"
    old = os.umask(0)
    try:
        atomic_write(p, b"{}")
        atomic_write(tmp_path / "x", b"1", mode=0o644)
    finally:
        os.umask(old)
    assert p.read_bytes() == b"{}" and mode(p) == 0o600
    assert mode(tmp_path / "x") == 0o644
    atomic_write(p, b"[]", fsync=True)
    assert p.read_bytes() == b"[]" and temp_files(tmp_path) == []


def test_atomic_write_replaces_a_symlink_instead_of_following_it(tmp_path):
    victim = tmp_path / "passwd"
    victim.write_text("root:x:0:0\n")
    p = tmp_path / "plugin.json"
    p.symlink_to(victim)
    atomic_write(p, b'{"state": "RUNNING"}')
    assert victim.read_text() == "root:x:0:0\n"
    assert not p.is_symlink() and p.read_bytes() == b'{"state": "RUNNING"}'


def test_symlinks_at_predictable_temp_names_are_never_followed(tmp_path, monkeypatch):
    """An attacker who plants links at the names ekl used to use (NAME.tmp, .NAME.PID.tmp),
    and even one who guesses the random names (simulated by fixing the first guesses), never
    gets a write through them: O_EXCL|O_NOFOLLOW refuses the name and another is tried."""
    victim = tmp_path / "victim"
    victim.write_text("precious")
    p = tmp_path / "plugin.json"
    guessed = [tmp_path / f".plugin.json.{i}.tmp" for i in range(3)]
    for link in [tmp_path / "plugin.json.tmp", tmp_path / f".plugin.json.{os.getpid()}.tmp",
                 *guessed]:
        link.symlink_to(victim)
    names = iter(guessed)
    real = fsafe._temp_name
    monkeypatch.setattr(fsafe, "_temp_name", lambda path: next(names, None) or real(path))
    atomic_write(p, b"status")
    assert victim.read_text() == "precious" and p.read_bytes() == b"status"
    assert all(g.is_symlink() for g in guessed)  # untouched, not removed either


def test_every_name_taken_is_an_oserror_and_nothing_is_left(tmp_path, monkeypatch):
    taken = tmp_path / ".x.taken.tmp"
    taken.write_text("")
    monkeypatch.setattr(fsafe, "_temp_name", lambda path: taken)
    with pytest.raises(FileExistsError, match="random temporary names were all taken"):
        atomic_write(tmp_path / "x", b"1")
    assert not (tmp_path / "x").exists()


def test_a_failed_replace_removes_the_temp_file(tmp_path):
    d = tmp_path / "status.json"
    d.mkdir()
    (d / "keep").write_text("1")  # a non-empty folder where the file goes: rename fails
    with pytest.raises(OSError):
        atomic_write(d, b"{}")
    assert temp_files(tmp_path) == [] and (d / "keep").exists()


@pytest.mark.parametrize("per_thread", [
    50, pytest.param(200, marks=pytest.mark.slow, id="soak-200")])
def test_twenty_threads_times_many_writes(tmp_path, per_thread):
    """20 writers at once; 50 writes each already race every step of atomic_write (each
    write is a temp file and a rename); the 200-write soak runs under -m slow."""
    p = tmp_path / "status.json"
    errors = []
    writes = {f"thread {t} write {i}".encode() for t in range(20) for i in range(per_thread)}

    def writer(t: int) -> None:
        try:
            for i in range(per_thread):
                atomic_write(p, f"thread {t} write {i}".encode())
        except BaseException as e:  # noqa: BLE001 - collected and asserted below
            errors.append(e)

    threads = [threading.Thread(target=writer, args=(t,)) for t in range(20)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    assert not errors and not any(t.is_alive() for t in threads)
    assert p.read_bytes() in writes
    assert temp_files(tmp_path) == []


WRITER = """
import sys
from ekl.launcher.fsafe import atomic_write
for i in range(150):
    atomic_write(sys.argv[1], ("%s %d" % (sys.argv[2], i)).encode() * 100)
"""


def test_processes_writing_while_another_reads(tmp_path):
    """Three processes write, this one reads all along: every read is one whole write."""
    p = tmp_path / "status.json"
    atomic_write(p, b"start " * 100)
    procs = [subprocess.Popen([sys.executable, "-c", WRITER, str(p), f"proc{k}"])
             for k in range(3)]
    try:
        seen = 0
        while any(pr.poll() is None for pr in procs):
            data = p.read_bytes()
            unit = data[:len(data) // 100]
            assert data == unit * 100, data[:80]
            seen += 1
        assert [pr.wait(60) for pr in procs] == [0, 0, 0]
    finally:
        for pr in procs:
            if pr.poll() is None:
                pr.kill()
                pr.wait()
    assert seen > 0 and temp_files(tmp_path) == []


# --- default folders ---------------------------------------------------------------------------


def test_default_status_dir(monkeypatch):
    monkeypatch.setenv("EKL_STATUS_DIR", "/srv/ekl")
    monkeypatch.setenv("XDG_RUNTIME_DIR", "/run/user/1000")
    assert default_status_dir() == "/srv/ekl"
    assert status_dir_candidates() == ["/srv/ekl"]
    monkeypatch.delenv("EKL_STATUS_DIR")
    assert default_status_dir() == "/run/user/1000/ekl"
    uid = os.geteuid()
    assert status_dir_candidates() == ["/run/user/1000/ekl", f"/tmp/ekl-status-{uid}"]
    monkeypatch.setenv("XDG_RUNTIME_DIR", "")
    assert default_status_dir() == f"/tmp/ekl-status-{uid}"
    monkeypatch.delenv("XDG_RUNTIME_DIR")
    assert status_dir_candidates() == [f"/tmp/ekl-status-{uid}"]


def test_private_tmp_dir_is_0700_under_any_umask():
    old = os.umask(0o277)
    try:
        d = private_tmp_dir("ekl-test-")
    finally:
        os.umask(old)
    try:
        assert d.startswith("/tmp/ekl-test-") and mode(d) == 0o700
        ensure_private_dir(d, "socket folder")
    finally:
        os.rmdir(d)
