"""``ekl env create``/``install``/``pack`` with py-rattler, venv and conda-pack, offline."""

from __future__ import annotations

import hashlib
import json
import os
import subprocess
import sys
import tarfile
import zipfile
from pathlib import Path

import pytest

from ekl.envs import EnvError, find_environment
from ekl.envs.build import Progress, create, pack
from ekl.envs.lock import compare, current_subdir, read_lock
from ekl.envs.model import EnvFailed
from ekl.launcher.plugin import load

from .envs_testlib import make_conda_prefix, write_conda_lock, write_explicit, write_plugin

SUB = current_subdir()


def make_wheel(d: Path, name: str = "ekl_demo", version: str = "1.0") -> Path:
    """A pure-python wheel built by hand, so pip can install it with no index."""
    whl = d / f"{name}-{version}-py3-none-any.whl"
    di = f"{name}-{version}.dist-info"
    files = {f"{name}.py": f"VERSION = {version!r}\n",
             f"{di}/METADATA": f"Metadata-Version: 2.1\nName: {name.replace('_', '-')}\n"
                               f"Version: {version}\n",
             f"{di}/WHEEL": "Wheel-Version: 1.0\nGenerator: hand\nRoot-Is-Purelib: true\n"
                            "Tag: py3-none-any\n"}
    record = [f"{n},sha256=,{len(c)}" for n, c in files.items()] + [f"{di}/RECORD,,"]
    with zipfile.ZipFile(whl, "w") as z:
        for n, c in files.items():
            z.writestr(n, c)
        z.writestr(f"{di}/RECORD", "\n".join(record) + "\n")
    return whl


def _say(tmp_path: Path) -> tuple:
    log = open(tmp_path / "progress.log", "w+")
    return Progress(log), log


def test_create_from_conda_lock_with_rattler(conda_root: Path, channel, tmp_path: Path) -> None:
    d = write_plugin(tmp_path / "demo", env="fresh")
    pk = [channel.get("ekl-hello", "1.0"), channel.get("ekl-data", "0.1")]
    write_conda_lock(d / "conda-lock.yml", pk, SUB)
    say, log = _say(tmp_path)
    prefix = create(load(str(d)).env_request(), say=say)
    assert prefix == str(conda_root / "envs" / "fresh")
    # the written records, not only the exit code
    recs = {json.loads(p.read_text())["name"]: json.loads(p.read_text())
            for p in Path(prefix, "conda-meta").glob("*.json")}
    assert {n: r["sha256"] for n, r in recs.items()} == {p.name: p.sha256 for p in pk}
    assert Path(prefix, "conda-meta", "history").read_text().startswith("==> ")
    assert Path(prefix, "etc/conda/activate.d/ekl-data.sh").is_file()
    assert compare(read_lock(d / "conda-lock.yml"), Path(prefix)).clean
    log.seek(0)
    text = log.read()
    assert "[1/2] verified" in text and "verified 2 packages against conda-lock.yml" in text
    with pytest.raises(EnvError, match="already exists"):
        create(load(str(d)).env_request(), say=say)


def test_create_refuses_tampered_package_and_leaves_nothing(conda_root: Path, channel,
                                                             tmp_path: Path) -> None:
    d = write_plugin(tmp_path / "demo", env="./env")
    good = channel.get("ekl-hello", "1.0")
    tampered = tmp_path / good.fn
    tampered.write_bytes(good.path.read_bytes() + b"\0")
    bad = type(good)(**{**good.__dict__, "path": tampered})
    write_explicit(d / "conda-lock.yml", [channel.get("ekl-data", "0.1"), bad], SUB, sha=True)
    say, _ = _say(tmp_path)
    with pytest.raises(EnvFailed, match="does not match the lock"):
        create(load(str(d)).env_request(), say=say)
    assert not (d / "env").exists()


def test_create_from_explicit_into_path(home: Path, channel, tmp_path: Path) -> None:
    d = write_plugin(tmp_path / "demo", env="envs/local")
    write_explicit(d / f"conda-{SUB}.lock", [channel.get("ekl-hello", "1.1")], SUB)
    say, _ = _say(tmp_path)
    prefix = create(load(str(d)).env_request(), tool="rattler", say=say)
    assert prefix == str(d / "envs" / "local")
    assert (d / "envs/local/conda-meta/ekl-hello-1.1-h0_0.json").is_file()


def test_create_from_environment_yml_with_solver(home: Path, channel, tmp_path: Path) -> None:
    d = write_plugin(tmp_path / "demo", env="./env")
    (d / "environment.yml").write_text(
        f"name: demo\nchannels:\n  - {channel.url}\ndependencies:\n  - ekl-data\n")
    say, _ = _say(tmp_path)
    prefix = Path(create(load(str(d)).env_request(), say=say))
    names = sorted(p.name for p in (prefix / "conda-meta").glob("*.json"))
    assert names == ["ekl-data-0.1-h0_0.json", "ekl-hello-1.1-h0_0.json"]


def test_create_venv_from_requirements(home: Path, tmp_path: Path) -> None:
    d = write_plugin(tmp_path / "demo", env=".venv", kind="venv")
    whl = make_wheel(tmp_path)
    (d / "requirements.txt").write_text(f"--no-index\n{whl}\n")
    say, _ = _say(tmp_path)
    prefix = create(load(str(d)).env_request(), say=say)
    env = find_environment("venv", ".venv", plugin_dir=d)
    assert str(env.prefix) == prefix
    out = subprocess.run([str(env.python), "-c", "import ekl_demo; print(ekl_demo.VERSION)"],
                         env=env.activation({"PATH": "/usr/bin:/bin"}), capture_output=True,
                         text=True, check=True)
    assert out.stdout.strip() == "1.0"


def test_nothing_to_build_from(home: Path, tmp_path: Path) -> None:
    d = write_plugin(tmp_path / "demo", env="x")
    with pytest.raises(EnvError, match="nothing to build from"):
        create(load(str(d)).env_request())
    (d / "requirements.txt").write_text("")
    with pytest.raises(EnvError, match="virtualEnvType"):
        create(load(str(d)).env_request())


def test_missing_extra_says_which(conda_root: Path, channel, tmp_path: Path,
                                  monkeypatch: pytest.MonkeyPatch) -> None:
    d = write_plugin(tmp_path / "demo", env="./env")
    write_conda_lock(d / "conda-lock.yml", [channel.get("ekl-hello", "1.0")], SUB)
    monkeypatch.setitem(sys.modules, "rattler", None)  # as if py-rattler were not installed
    with pytest.raises(EnvError) as e:
        create(load(str(d)).env_request(), say=_say(tmp_path)[0])
    assert "pip install 'ekuiper-launcher[rattler]'" in str(e.value)
    assert not (d / "env").exists()
    monkeypatch.setitem(sys.modules, "conda_pack", None)
    with pytest.raises(EnvError, match=r"ekuiper-launcher\[pack\]"):
        d2 = write_plugin(tmp_path / "p2", env="myenv")
        make_conda_prefix(conda_root / "envs" / "myenv", channel, cache=tmp_path / "rc")
        pack(load(str(d2)).env_request(), str(tmp_path / "x.tar.gz"))


def test_pack_unpack_and_run_without_conda(myenv: Path, conda_root: Path, tmp_path: Path,
                                           monkeypatch: pytest.MonkeyPatch) -> None:
    pytest.importorskip("conda_pack")
    d = write_plugin(tmp_path / "demo")
    with pytest.raises(EnvError, match="tar.gz"):
        pack(load(str(d)).env_request(), str(tmp_path / "x.zip"))
    out = pack(load(str(d)).env_request(), str(tmp_path / "demo-env.tar.gz"), say=_say(tmp_path)[0])
    dest = tmp_path / "edge" / "envs" / "demo"
    dest.mkdir(parents=True)
    with tarfile.open(out) as t:
        t.extractall(dest)  # noqa: S202 - our own archive
    # the edge machine: no conda anywhere
    monkeypatch.delenv("CONDA_EXE")
    conda_root.rename(conda_root.with_name("gone"))
    subprocess.run([str(dest / "bin/python"), str(dest / "bin/conda-unpack")], check=True,
                   cwd=dest, capture_output=True)
    env = find_environment("conda", str(dest))
    assert env.conda_root is None
    code = "import os, sys; print(sys.prefix, os.environ['EKL_DATA_HOOK'], os.environ['EKL_MODE'])"
    cp = subprocess.run(env.wrap_command([str(env.python), "-c", code]),
                        env=env.activation({"PATH": "/usr/bin:/bin"}), capture_output=True,
                        text=True, check=True)
    assert cp.stdout.split() == [str(dest), f"hooked:{dest}", "test"]


def test_file_hashes_match_channel(channel) -> None:
    for p in channel.pkgs.values():
        assert hashlib.sha256(p.path.read_bytes()).hexdigest() == p.sha256
        assert os.path.getsize(p.path) == p.size
