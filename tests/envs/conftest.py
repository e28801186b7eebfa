"""Fixtures for the ekl.envs tests. The stand-ins for conda they build are described in
envs_testlib.py: a local file:// channel, conda-style prefixes and a conda root in a temporary
HOME."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Dict

import pytest

from .envs_testlib import (
    CONDA_VARS,
    HOOK,
    Channel,
    Pkg,
    build_pkg,
    make_conda_prefix,
    make_conda_root,
)


@pytest.fixture(scope="session")
def channel(tmp_path_factory: pytest.TempPathFactory) -> Channel:
    """A local file:// channel with a few tiny noarch packages (built once per worker)."""
    root = tmp_path_factory.mktemp("channel")
    for sub in ("noarch", "linux-64", "linux-aarch64"):
        (root / sub).mkdir()
    specs = [
        ("ekl-hello", "1.0", {"share/ekl-hello/hello.txt": b"hello 1.0\n"}, ()),
        ("ekl-hello", "1.1", {"share/ekl-hello/hello.txt": b"hello 1.1\n"}, ()),
        ("ekl-data", "0.1", {
            "share/ekl-data/data.txt": b"data\n",
            "etc/conda/activate.d/ekl-data.sh": HOOK.encode(),
            "etc/conda/env_vars.d/ekl-data.json":
                json.dumps({"EKL_DATA_DIR": "/opt/ekl-data", "EKL_SHARED": "from-pkg"}).encode(),
        }, ("ekl-hello",)),
    ]
    pkgs: Dict[str, Pkg] = {}
    records = {}
    for name, version, files, deps in specs:
        pkg, rec = build_pkg(root, name, version, files, deps)
        pkgs[f"{name}-{version}"] = pkg
        records[pkg.fn] = rec
    for sub in ("noarch", "linux-64", "linux-aarch64"):
        (root / sub / "repodata.json").write_text(json.dumps({
            "info": {"subdir": sub}, "packages": records if sub == "noarch" else {},
            "packages.conda": {}, "repodata_version": 1}))
    return Channel(root, pkgs)


@pytest.fixture
def home(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A temporary HOME with no conda configuration and no conda on PATH."""
    h = tmp_path / "home"
    h.mkdir()
    monkeypatch.setenv("HOME", str(h))
    for k in CONDA_VARS:
        monkeypatch.delenv(k, raising=False)
    monkeypatch.setenv("PATH", "/usr/local/bin:/usr/bin:/bin")
    monkeypatch.setenv("EKL_CACHE_DIR", str(tmp_path / "ekl-cache"))
    return h


@pytest.fixture
def conda_root(home: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A conda installation at $HOME/miniforge3, announced by CONDA_EXE as conda's hook does."""
    root = make_conda_root(home / "miniforge3")
    monkeypatch.setenv("CONDA_EXE", str(root / "bin" / "conda"))
    return root


@pytest.fixture
def myenv(conda_root: Path, channel: Channel, tmp_path: Path) -> Path:
    """``myenv`` under the conda root's envs/, with state env_vars (one of them unset)."""
    return make_conda_prefix(
        conda_root / "envs" / "myenv", channel, cache=tmp_path / "rattler-cache",
        state_env_vars={"EKL_MODE": "test", "ekl_lower": "upper-cased", "EKL_GONE": "***unset***",
                        "EKL_SHARED": "from-state"})
