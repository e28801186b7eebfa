"""Fixtures that stand in for conda, which these machines do not have.

There is no conda binary and no conda channel here, so the tests build what conda would
have left on disk, for real and offline:

* a local ``file://`` channel of small noarch packages built by hand (tar.bz2 with
  ``info/index.json``, ``info/paths.json``; one ships an ``activate.d`` hook and an
  ``env_vars.d`` file, as packages such as gdal or openjdk do), with its ``repodata.json``;
* conda-style prefixes: ``python -m venv --copies`` for a working interpreter, then the
  packages installed into it by py-rattler, which writes real ``conda-meta/*.json`` records,
  plus ``conda-meta/history`` and ``conda-meta/state`` with ``env_vars`` as
  ``conda env config vars set`` writes them;
* a conda installation's root prefix (``conda-meta/``, ``bin/conda``, ``condabin/conda``, the
  latter two small stand-in scripts) and ``.condarc``/``environments.txt``/``MAMBA_ROOT_PREFIX``
  layouts inside a temporary HOME.
"""

from __future__ import annotations

import hashlib
import importlib.util
import io
import json
import os
import subprocess
import sys
import tarfile
from dataclasses import dataclass
from pathlib import Path
from typing import Dict, Iterable, List, Optional

import pytest

if importlib.util.find_spec("rattler") is None:  # not imported here: see rattler_install
    pytest.skip("py-rattler builds the conda-style test prefixes", allow_module_level=True)

HISTORY = """==> 2026-10-01 12:00:00 <==
# cmd: /opt/conda/bin/conda create -n myenv ekl-hello=1.0 ekl-data
# conda version: 26.9.0
+file:///channel/noarch::ekl-data-0.1-h0_0
+file:///channel/noarch::ekl-hello-1.0-h0_0
# update specs: ['ekl-hello=1.0', 'ekl-data']
"""

HOOK = """# activate.d hook of ekl-data, as conda packages ship them
export EKL_DATA_HOOK="hooked:$CONDA_PREFIX"
echo "ekl-data activate hook ran"
"""


@dataclass
class Pkg:
    name: str
    version: str
    build: str
    fn: str
    path: Path
    md5: str
    sha256: str
    size: int

    @property
    def url(self) -> str:
        return self.path.as_uri()


@dataclass
class Channel:
    root: Path
    pkgs: Dict[str, Pkg]

    @property
    def url(self) -> str:
        return self.root.as_uri()

    def get(self, name: str, version: str) -> Pkg:
        return self.pkgs[f"{name}-{version}"]


def build_pkg(chan: Path, name: str, version: str, files: Dict[str, bytes],
               depends: Iterable[str] = ()) -> tuple:
    build = "h0_0"
    fn = f"{name}-{version}-{build}.tar.bz2"
    index = {"name": name, "version": version, "build": build, "build_number": 0,
             "depends": list(depends), "license": "Apache-2.0", "subdir": "noarch",
             "noarch": "generic", "timestamp": 1700000000000}
    paths = {"paths_version": 1, "paths": [
        {"_path": p, "path_type": "hardlink", "sha256": hashlib.sha256(c).hexdigest(),
         "size_in_bytes": len(c)} for p, c in files.items()]}
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w:bz2") as t:
        def add(n: str, data: bytes, mode: int = 0o644) -> None:
            ti = tarfile.TarInfo(n)
            ti.size, ti.mtime, ti.mode = len(data), 1700000000, mode
            t.addfile(ti, io.BytesIO(data))
        add("info/index.json", json.dumps(index).encode())
        add("info/paths.json", json.dumps(paths).encode())
        add("info/files", ("\n".join(files) + "\n").encode())
        for p, c in files.items():
            add(p, c, 0o755 if p.startswith("bin/") else 0o644)
    data = buf.getvalue()
    path = chan / "noarch" / fn
    path.write_bytes(data)
    md5, sha = hashlib.md5(data).hexdigest(), hashlib.sha256(data).hexdigest()
    rec = dict(index, md5=md5, sha256=sha, size=len(data))
    return Pkg(name, version, build, fn, path, md5, sha, len(data)), rec


def rattler_install(prefix: Path, pkgs: List[Pkg], cache: Path) -> None:
    """Install packages into prefix the way a conda-style installer does (records and all).

    py-rattler runs in a child process (ekl's own worker), because its threads can abort an
    interpreter that exits right after using it, and a pytest worker must not die that way.
    """
    req = {"op": "install", "files": [str(p.path) for p in pkgs], "prefix": str(prefix),
           "cache": str(cache)}
    cp = subprocess.run([sys.executable, "-m", "ekl.envs._rattler_worker"],
                        input=json.dumps(req), capture_output=True, text=True, env=_clean(),
                        timeout=120)
    assert cp.returncode == 0 and json.loads(cp.stdout.splitlines()[-1])["ok"], cp.stderr


def make_venv(prefix: Path, system_site: bool = False) -> None:
    args = [sys.executable, "-m", "venv", "--copies", "--without-pip"]
    if system_site:
        args.append("--system-site-packages")
    subprocess.run([*args, str(prefix)], check=True, env=_clean())


def _clean() -> Dict[str, str]:
    return {k: v for k, v in os.environ.items()
            if k not in ("PYTHONHOME", "PYTHONPATH", "VIRTUAL_ENV")}


def make_conda_prefix(prefix: Path, channel: Channel, *, versions: Optional[Dict[str, str]] = None,
                      state_env_vars: Optional[Dict[str, str]] = None, python: bool = True,
                      system_site: bool = False, cache: Optional[Path] = None) -> Path:
    """A conda-style environment at prefix: venv interpreter + rattler-written conda-meta."""
    versions = versions or {"ekl-hello": "1.0", "ekl-data": "0.1"}
    prefix.parent.mkdir(parents=True, exist_ok=True)
    if python:
        make_venv(prefix, system_site)
    rattler_install(prefix, [channel.get(n, v) for n, v in versions.items()],
                    cache or prefix.parent / ".rattler-cache")
    (prefix / "conda-meta" / "history").write_text(HISTORY)
    if state_env_vars is not None:
        (prefix / "conda-meta" / "state").write_text(json.dumps({"env_vars": state_env_vars}))
    return prefix


def make_conda_root(root: Path) -> Path:
    """A conda installation's root prefix, with stand-in ``conda`` scripts (never run unless a
    test asks for ``conda info``)."""
    (root / "conda-meta").mkdir(parents=True)
    (root / "conda-meta" / "history").write_text("")
    for d in ("bin", "condabin"):
        (root / d).mkdir()
        exe = root / d / "conda"
        exe.write_text("#!/bin/sh\necho 'stand-in conda: not expected to run' >&2\nexit 3\n")
        exe.chmod(0o755)
    (root / "envs").mkdir()
    return root


CONDA_VARS = ("CONDA_EXE", "_CONDA_EXE", "_CONDA_ROOT", "CONDA_PYTHON_EXE", "CONDA_PREFIX",
              "CONDA_SHLVL", "CONDA_DEFAULT_ENV", "CONDA_PROMPT_MODIFIER", "CONDA_ENVS_DIRS",
              "CONDA_ENVS_PATH", "CONDA_ROOT_PREFIX", "CONDA_ROOT", "CONDARC", "MAMBA_ROOT_PREFIX",
              "MAMBA_EXE", "XDG_CONFIG_HOME", "CONDA_SUBDIR", "_CE_M", "_CE_CONDA", "PS1",
              "PYTHONHOME", "PYTHONPATH", "VIRTUAL_ENV")


def write_conda_lock(path: Path, pkgs: List[Pkg], platform: str,
                     pip: Optional[List[dict]] = None) -> Path:
    """A conda-lock.yml (format version 1) as conda-lock 2.x writes it."""
    import yaml

    entries = []
    for p in pkgs:
        entries.append({"name": p.name, "version": p.version, "manager": "conda",
                        "platform": platform, "dependencies": {}, "url": p.url,
                        "hash": {"md5": p.md5, "sha256": p.sha256}, "category": "main",
                        "optional": False})
    for e in pip or []:
        entries.append(dict({"manager": "pip", "platform": platform, "dependencies": {},
                             "category": "main", "optional": False}, **e))
    doc = {"version": 1, "metadata": {
        "content_hash": {platform: "0" * 64}, "channels": [{"url": "file:///channel",
                                                            "used_env_vars": []}],
        "platforms": [platform], "sources": ["environment.yml"]}, "package": entries}
    path.write_text(yaml.safe_dump(doc, sort_keys=False))
    return path


def write_explicit(path: Path, pkgs: List[Pkg], platform: str, sha: bool = False) -> Path:
    lines = ["# This file may be used to create an environment using:",
             "# $ conda create --name <env> --file <this file>", f"# platform: {platform}",
             "@EXPLICIT"]
    lines += [f"{p.url}#{'sha256:' + p.sha256 if sha else p.md5}" for p in pkgs]
    path.write_text("\n".join(lines) + "\n")
    return path


def write_plugin(d: Path, name: str = "demo", env: Optional[str] = "myenv",
                 kind: Optional[str] = "conda", extra: Optional[dict] = None) -> Path:
    d.mkdir(parents=True, exist_ok=True)
    m: dict = {"version": "v1", "language": "python", "executable": "main.py",
               "sources": ["s"], "sinks": [], "functions": []}
    if kind:
        m["virtualEnvType"] = kind
    if env:
        m["env"] = env
    m.update(extra or {})
    (d / f"{name}.json").write_text(json.dumps(m))
    (d / "main.py").write_text("print('plugin')\n")
    (d / "sources").mkdir(exist_ok=True)
    (d / "sources" / "s.yaml").write_text("default:\n  interval: 1000\n")
    return d


def write_hook(prefix: Path, which: str, name: str, text: str) -> Path:
    """An ``etc/conda/{activate,deactivate}.d`` hook, as packages and users put them there."""
    d = prefix / "etc" / "conda" / which
    d.mkdir(parents=True, exist_ok=True)
    (d / name).write_text(text)
    return d / name


def write_env_vars_d(prefix: Path, name: str, text: str) -> Path:
    """A package's ``etc/conda/env_vars.d`` file (raw text, so tests can break it)."""
    d = prefix / "etc" / "conda" / "env_vars.d"
    d.mkdir(parents=True, exist_ok=True)
    (d / name).write_text(text)
    return d / name


def write_condarc(path: Path, **settings: object) -> Path:
    """A ``.condarc`` as ``conda config --set`` writes it."""
    import yaml

    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(yaml.safe_dump(settings, sort_keys=False))
    return path


def write_environments_txt(home: Path, prefixes: Iterable[Path]) -> Path:
    """``~/.conda/environments.txt``: conda appends every root and env it creates or uses."""
    p = home / ".conda" / "environments.txt"
    p.parent.mkdir(parents=True, exist_ok=True)
    p.write_text("".join(f"{x}\n" for x in prefixes))
    return p


def make_pixi_project(root: Path, channel: Channel, envs: Iterable[str] = ("default",),
                      manifest: str = "", cache: Optional[Path] = None) -> Path:
    """A pixi project: ``pixi.toml`` and ``.pixi/envs/<name>`` prefixes (pixi writes
    conda-meta records but no history)."""
    root.mkdir(parents=True, exist_ok=True)
    (root / "pixi.toml").write_text(manifest or (
        '[workspace]\nname = "demo-proj"\nversion = "0.3.1"\nchannels = ["conda-forge"]\n'
        'platforms = ["linux-64", "linux-aarch64"]\n\n[dependencies]\npython = "3.11.*"\n'))
    for e in envs:
        p = make_conda_prefix(root / ".pixi" / "envs" / e, channel,
                              cache=cache or root / ".rattler-cache")
        (p / "conda-meta" / "history").unlink()
    return root


def lock_of(manifest: dict) -> Optional[str]:
    """The ``ekl.lock`` field of a plugin JSON dict (what the plugin reader hands envs)."""
    return (manifest.get("ekl") or {}).get("lock")
