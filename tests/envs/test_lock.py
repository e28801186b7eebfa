"""Lock checking: conda-lock.yml v1 and @EXPLICIT lists against rattler-written records."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

import ekl.envs.lock as lockmod
from ekl.envs import EnvError, check_lock_for_launch, find_environment
from ekl.envs.lock import compare, current_subdir, read_lock

from .envs_testlib import lock_of, rattler_install, write_conda_lock, write_explicit, write_plugin

SUB = current_subdir()


def _plugin(tmp_path: Path, **kw) -> tuple:
    d = write_plugin(tmp_path / "demo", **kw)
    return d, json.loads((d / "demo.json").read_text())


def _upgrade_hello(myenv: Path, channel, tmp_path: Path) -> None:
    """What `conda install ekl-hello=1.1` does to the prefix, done by rattler."""
    rattler_install(myenv, [channel.get("ekl-hello", "1.1"), channel.get("ekl-data", "0.1")],
                    tmp_path / "rc2")


def test_clean_then_drift(myenv: Path, channel, tmp_path: Path) -> None:
    d, m = _plugin(tmp_path)
    write_conda_lock(d / "conda-lock.yml",
                     [channel.get("ekl-hello", "1.0"), channel.get("ekl-data", "0.1")], SUB)
    env = find_environment("conda", "myenv")
    assert check_lock_for_launch(d, lock_of(m), env, "strict") is None
    _upgrade_hello(myenv, channel, tmp_path)
    with pytest.raises(EnvError) as e:
        check_lock_for_launch(d, lock_of(m), env, "strict")
    msg = str(e.value)
    assert msg == (f"env {myenv} drifted from {d / 'conda-lock.yml'}: 1 changed (ekl-hello 1.0 "
                   f"-> 1.1); run `ekl env check {d}` for the list")
    assert check_lock_for_launch(d, lock_of(m), env, "warn") == msg
    assert check_lock_for_launch(d, lock_of(m), env, "off") is None


def test_missing_extra_and_hash(myenv: Path, channel, tmp_path: Path) -> None:
    d, _ = _plugin(tmp_path)
    hello = channel.get("ekl-hello", "1.0")
    fake = type(hello)(**{**hello.__dict__, "name": "ekl-absent"})
    lock = write_conda_lock(d / "conda-lock.yml", [hello, fake], SUB)
    drift = compare(read_lock(lock), myenv)
    assert drift.missing == ["ekl-absent 1.0 h0_0"]
    assert drift.extra == ["ekl-data 0.1 h0_0"]
    assert drift.changed == []
    # a record whose sha256 differs from the lock (a rebuilt package with the same name)
    rec = myenv / "conda-meta" / "ekl-hello-1.0-h0_0.json"
    data = json.loads(rec.read_text())
    data["sha256"] = "0" * 64
    rec.write_text(json.dumps(data))
    drift = compare(read_lock(lock), myenv)
    assert drift.changed and "sha256" in drift.changed[0]


def test_explicit_lists(myenv: Path, channel, tmp_path: Path) -> None:
    pk = [channel.get("ekl-hello", "1.0"), channel.get("ekl-data", "0.1")]
    for sha in (False, True):
        lock = write_explicit(tmp_path / f"x{sha}.txt", pk, SUB, sha=sha)
        parsed = read_lock(lock)
        assert parsed.format == "explicit" and len(parsed.conda) == 2
        assert compare(parsed, myenv).clean
    other = "osx-arm64" if SUB != "osx-arm64" else "linux-64"
    drift = compare(read_lock(write_explicit(tmp_path / "o.txt", pk, other)), myenv)
    assert drift.problems == [f"the lock covers {other}, not {SUB}"]
    bad = tmp_path / "bad.txt"
    bad.write_text(f"{pk[0].url}\n")
    with pytest.raises(EnvError, match="@EXPLICIT"):
        read_lock(bad)


def test_lock_named_in_manifest_and_cache(myenv: Path, channel, tmp_path: Path,
                                          monkeypatch: pytest.MonkeyPatch) -> None:
    d, m = _plugin(tmp_path, extra={"ekl": {"lock": "locks/prod.lock"}})
    (d / "locks").mkdir()
    write_explicit(d / "locks" / "prod.lock", [channel.get("ekl-hello", "1.0")], SUB)
    env = find_environment("conda", "myenv")
    first = check_lock_for_launch(d, lock_of(m), env, "warn")
    assert first is not None and "1 extra" in first
    # a repeated start reads the cached verdict and parses nothing
    monkeypatch.setattr(lockmod, "read_lock", lambda *a, **k: pytest.fail("not cached"))
    assert check_lock_for_launch(d, lock_of(m), env, "warn") == first
    monkeypatch.undo()
    _upgrade_hello(myenv, channel, tmp_path)  # conda-meta changes: the cache key changes
    assert "changed (ekl-hello 1.0 -> 1.1)" in check_lock_for_launch(d, lock_of(m), env, "warn")
    m2 = {"ekl": {"lock": "nope.yml"}}
    with pytest.raises(EnvError, match="nope.yml"):
        check_lock_for_launch(d, lock_of(m2), env, "warn")


def test_off_reads_nothing_and_no_lock(myenv: Path, tmp_path: Path) -> None:
    d, m = _plugin(tmp_path)
    env = find_environment("conda", "myenv")
    assert check_lock_for_launch(d, lock_of(m), env, "strict") is None  # no lock at all
    (d / "conda-lock.yml").write_text("version: [broken\n")
    assert check_lock_for_launch(d, lock_of(m), env, "off") is None
    # a lock it cannot read: a warning under warn (the start goes on), an error under strict
    warning = check_lock_for_launch(d, lock_of(m), env, "warn")
    assert warning is not None and "not valid YAML" in warning and "conda-lock.yml:2:" in warning
    with pytest.raises(EnvError, match="not valid YAML"):
        check_lock_for_launch(d, lock_of(m), env, "strict")
    with pytest.raises(EnvError, match="lock policy"):
        check_lock_for_launch(d, lock_of(m), env, "maybe")


def test_conda_lock_v2_refused(tmp_path: Path) -> None:
    p = tmp_path / "conda-lock.yml"
    p.write_text("version: 6\nenvironments: {}\npackages: []\n")
    with pytest.raises(EnvError, match="neither a conda-lock.yml"):
        read_lock(p)
    p.write_text("version: 2\nmetadata: {}\npackage: []\n")
    with pytest.raises(EnvError, match="version 2"):
        read_lock(p)


def test_pip_entries(myenv: Path, channel, tmp_path: Path) -> None:
    sp = next(myenv.glob("lib/python*/site-packages"))
    di = sp / "ekl_demo-1.0.dist-info"
    di.mkdir()
    (di / "INSTALLER").write_text("pip\n")
    stray = sp / "stray-2.0.dist-info"
    stray.mkdir()
    (stray / "INSTALLER").write_text("pip\n")
    pip = [{"name": "ekl-demo", "version": "1.0", "url": "file:///x.whl",
            "hash": {"sha256": "1" * 64}},
           {"name": "absent", "version": "3", "url": "file:///y.whl",
            "hash": {"sha256": "2" * 64}}]
    lock = write_conda_lock(tmp_path / "conda-lock.yml",
                            [channel.get("ekl-hello", "1.0"), channel.get("ekl-data", "0.1")],
                            SUB, pip=pip)
    drift = compare(read_lock(lock), myenv)
    assert drift.missing == ["absent 3 (pip)"]
    assert drift.extra == ["stray 2.0 (pip)"]
