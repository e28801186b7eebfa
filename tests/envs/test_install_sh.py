"""The generated install.sh as eKuiper runs it, and ``ekl env install`` (issue 15, part 2).

eKuiper runs install.sh with ``/bin/sh`` in the unpacked plugin folder, in its own
environment: no conda activated, often not even conda on PATH. So every run here is
``env -i PATH=/usr/bin:/bin HOME=<tmp> /bin/sh install.sh`` (plus the one variable a case is
about), against conda-style prefixes built as envs_testlib describes (a real interpreter,
rattler-written conda-meta; no conda binary exists here, so ``conda info --base`` is a
stand-in script) and a real venv. The prefixes are made with ``--without-pip``; a conda env
has pip, so the tests lend them this venv's pip alone (a .pth to a folder holding only pip).
Requirements are a hand-made wheel with ``--no-index``, so nothing touches the network.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import zipfile
from pathlib import Path
from typing import Dict, Optional

import pytest

from ekl.launcher.authoring.scaffold import install_sh

from .envs_testlib import make_conda_prefix, make_conda_root, make_venv, write_conda_lock
from .test_env_cli import env_cli, one_line_error

REPO = Path(__file__).resolve().parents[2]
EKL_BIN = Path(sys.executable).parent / "ekl"


def make_wheel(d: Path, name: str = "ekltiny", version: str = "1.0") -> Path:
    """A pure-python wheel built by hand, so pip installs it with no index."""
    d.mkdir(parents=True, exist_ok=True)
    whl = d / f"{name}-{version}-py3-none-any.whl"
    di = f"{name}-{version}.dist-info"
    files = {f"{name}.py": f"VERSION = {version!r}\n",
             f"{di}/METADATA": f"Metadata-Version: 2.1\nName: {name}\nVersion: {version}\n",
             f"{di}/WHEEL": "Wheel-Version: 1.0\nGenerator: hand\nRoot-Is-Purelib: true\n"
                            "Tag: py3-none-any\n"}
    record = [f"{n},,{len(c)}" for n, c in files.items()] + [f"{di}/RECORD,,"]
    with zipfile.ZipFile(whl, "w") as z:
        for n, c in files.items():
            z.writestr(n, c)
        z.writestr(f"{di}/RECORD", "\n".join(record) + "\n")
    return whl


def lend_pip(prefix: Path, tmp: Path) -> None:
    """Give a --without-pip prefix this venv's pip (only pip) through a .pth file."""
    import pip

    lend = tmp / "pip-only"
    if not lend.is_dir():
        lend.mkdir()
        (lend / "pip").symlink_to(Path(pip.__file__).parent)
    site = next(prefix.glob("lib/python*/site-packages"))
    (site / "ekl-test-pip.pth").write_text(str(lend) + "\n")


def installed(prefix: Path, name: str = "ekltiny") -> bool:
    return any(prefix.glob(f"lib/python*/site-packages/{name}.py"))


def plugin(d: Path, env: Optional[str], kind: Optional[str] = "conda",
           vendored: bool = True, name: str = "demo") -> Path:
    """A plugin folder as eKuiper unpacks it: JSON, main program, requirements, install.sh."""
    d.mkdir(parents=True)
    m: dict = {"version": "v1", "language": "python", "executable": "main.py",
               "functions": ["f"]}
    if kind:
        m["ekl"] = {"virtualEnvType": kind, "env": env} if env else {"virtualEnvType": kind}
    (d / f"{name}.json").write_text(json.dumps(m, indent=2))
    (d / "main.py").write_text("print('plugin')\n")
    whl = make_wheel(d / "wheels")
    (d / "requirements.txt").write_text(f"--no-index\n# the plugin's own\n./wheels/{whl.name}\n")
    (d / "install.sh").write_text(install_sh(name))
    (d / "install.sh").chmod(0o755)
    if vendored:  # the SDK travels in the zip: install.sh must not install one
        (d / "ekuiper").mkdir()
        (d / "ekuiper" / "_vendored.json").write_text('{"version": "0.1.0", "files": {}}')
    return d


def run_sh(folder: Path, home: Path, extra: Optional[Dict[str, str]] = None,
           path: str = "/usr/bin:/bin") -> subprocess.CompletedProcess:
    env = {"PATH": path, "HOME": str(home), **(extra or {})}
    return subprocess.run(["/usr/bin/env", "-i", *[f"{k}={v}" for k, v in env.items()],
                           "/bin/sh", str(folder / "install.sh")], capture_output=True,
                          text=True, timeout=120, cwd="/")


@pytest.fixture
def env_prefix(tmp_path: Path, channel, home: Path) -> Path:
    """One conda-style prefix with pip, moved between the places conda looks (built once)."""
    p = make_conda_prefix(tmp_path / "made" / "envs" / "plugenv", channel,
                          cache=tmp_path / "rc")
    lend_pip(p, tmp_path)
    return p


def move(prefix: Path, dest: Path) -> Path:
    dest.parent.mkdir(parents=True, exist_ok=True)
    shutil.move(str(prefix), str(dest))
    return dest


def test_conda_env_found_as_conda_finds_it_with_nothing_in_the_environment(
        env_prefix: Path, home: Path, tmp_path: Path) -> None:
    d = plugin(tmp_path / "p", "plugenv")
    # 1. CONDA_EXE names a conda installation outside the usual places
    root = make_conda_root(tmp_path / "odd" / "conda")
    prefix = move(env_prefix, root / "envs" / "plugenv")
    cp = run_sh(d, home, {"CONDA_EXE": str(root / "bin" / "conda")})
    assert cp.returncode == 0, cp.stderr
    assert installed(prefix) and f"at {prefix}" in cp.stdout
    assert "demo: ekl's SDK is vendored" in cp.stdout and "PyPI" not in cp.stdout
    # 2. no CONDA_EXE: `conda info --base` from a conda on PATH
    bindir = tmp_path / "bin"
    bindir.mkdir()
    (bindir / "conda").write_text(f"#!/bin/sh\n[ \"$1 $2\" = 'info --base' ] && "
                                  f"echo {root} && exit 0\nexit 3\n")
    (bindir / "conda").chmod(0o755)
    cp = run_sh(d, home, path=f"/usr/bin:/bin:{bindir}")
    assert cp.returncode == 0 and f"at {prefix}" in cp.stdout, cp.stderr
    # 3. envs_dirs in ~/.condarc (a block list, a comment, ~ and a flag)
    prefix = move(prefix, tmp_path / "custom-envs" / "plugenv")
    (home / ".condarc").write_text(f"channels: [conda-forge]\nenvs_dirs:\n  # mine\n"
                                   f"  - ~/nothing-here\n  - {tmp_path}/custom-envs  #!top\n"
                                   f"pkgs_dirs:\n  - /tmp/pkgs\n")
    cp = run_sh(d, home)
    assert cp.returncode == 0 and f"at {prefix}" in cp.stdout, cp.stderr
    # the same in flow style, from $CONDARC
    (home / ".condarc").unlink()
    rc = tmp_path / "rc.yml"
    rc.write_text(f"envs_dirs: ['{tmp_path}/custom-envs', /nowhere]\n")
    cp = run_sh(d, home, {"CONDARC": str(rc)})
    assert cp.returncode == 0 and f"at {prefix}" in cp.stdout, cp.stderr
    # 4. ~/.conda/environments.txt, which conda keeps of every env it made
    prefix = move(prefix, tmp_path / "elsewhere" / "envs" / "plugenv")
    (home / ".conda").mkdir()
    (home / ".conda" / "environments.txt").write_text(f"/gone/envs/x\n{prefix}\n")
    cp = run_sh(d, home)
    assert cp.returncode == 0 and f"at {prefix}" in cp.stdout, cp.stderr
    # 5. the env given as a path relative to the plugin folder
    prefix = move(prefix, d / "env")
    (d / "demo.json").write_text(json.dumps({"language": "python", "executable": "main.py",
                                             "functions": ["f"], "virtualEnvType": "conda",
                                             "env": "./env"}))
    cp = run_sh(d, home)
    assert cp.returncode == 0 and f"at {d}/./env" in cp.stdout and installed(prefix), cp.stderr
    # nothing to install is fine, and still never an SDK with one vendored
    (d / "requirements.txt").unlink()
    cp = run_sh(d, home)
    assert cp.returncode == 0, cp.stderr
    assert cp.stdout.splitlines() == ["demo: nothing to install (no requirements.txt, or it "
                                      "lists no package)",
                                      "demo: ekl's SDK is vendored in ./ekuiper/; no SDK installed"]


def test_missing_conda_env_is_one_line_naming_it(home: Path, tmp_path: Path) -> None:
    d = plugin(tmp_path / "p", "nosuchenv")
    (home / ".condarc").write_text("envs_dirs:\n  - /srv/envs\n")
    cp = run_sh(d, home)
    assert cp.returncode == 1 and cp.stdout.strip() == ""
    lines = cp.stderr.strip().splitlines()
    assert len(lines) == 1, cp.stderr
    assert lines[0].startswith("demo: error: conda environment 'nosuchenv' not found (looked in:")
    assert "/srv/envs" in lines[0] and f"{home}/.conda/envs" in lines[0]
    # an env name install.sh cannot read safely is refused, not guessed
    (d / "demo.json").write_text('{"executable": "main.py", "virtualEnvType": "conda", '
                                 '"env": "we\\"ird"}')
    cp = run_sh(d, home)
    assert cp.returncode == 1 and "field 'env' has characters" in cp.stderr


def test_venv_path_and_the_default_choice(home: Path, tmp_path: Path) -> None:
    venv = tmp_path / "v"
    make_venv(venv)
    lend_pip(venv, tmp_path)
    d = plugin(tmp_path / "p", "../v", kind="venv")
    cp = run_sh(d, home)
    assert cp.returncode == 0 and installed(venv), cp.stderr
    assert f"installing into venv {d}/../v" in cp.stdout
    d2 = plugin(tmp_path / "p2", str(tmp_path / "absent"), kind="venv")
    cp = run_sh(d2, home)
    assert cp.returncode == 1 and "has no bin/python; create it with: python3 -m venv" \
        in cp.stderr and len(cp.stderr.strip().splitlines()) == 1
    # no environment in the JSON: today's choice ($1 here)
    d3 = plugin(tmp_path / "p3", None, kind=None)
    for f in venv.glob("lib/python*/site-packages/ekltiny*"):
        shutil.rmtree(f) if f.is_dir() else f.unlink()
    cp = subprocess.run(["/usr/bin/env", "-i", "PATH=/usr/bin:/bin", f"HOME={home}", "/bin/sh",
                         str(d3 / "install.sh"), str(venv / "bin" / "python")],
                        capture_output=True, text=True, timeout=120)
    assert cp.returncode == 0 and installed(venv), cp.stderr
    assert f"demo: installing into {venv}" in cp.stdout


def test_with_ekl_on_path_install_sh_asks_ekl(env_prefix: Path, home: Path,
                                              tmp_path: Path) -> None:
    root = make_conda_root(tmp_path / "srv" / "conda")
    prefix = move(env_prefix, root / "envs" / "plugenv")
    d = plugin(tmp_path / "p", "plugenv")
    bindir = tmp_path / "bin"
    bindir.mkdir()
    (bindir / "ekl").symlink_to(EKL_BIN)
    cp = run_sh(d, home, {"CONDA_EXE": str(root / "bin" / "conda")},
                path=f"/usr/bin:/bin:{bindir}")
    assert cp.returncode == 0, cp.stderr
    assert "demo: installing with ekl into conda environment plugenv" in cp.stdout
    assert f"ekl: installing {d}/requirements.txt into {prefix}" in cp.stderr
    assert "Processing" in cp.stdout + cp.stderr  # pip's own progress lines, shown
    assert installed(prefix)
    # an older ekl, whose `env install` ran install.sh (a stand-in: that ekl is not
    # installable here), is not asked: that would run this script again, forever
    for f in prefix.glob("lib/python*/site-packages/ekltiny*"):
        shutil.rmtree(f) if f.is_dir() else f.unlink()
    (bindir / "ekl").unlink()
    (bindir / "ekl").write_text("#!/bin/sh\n[ \"$3\" = --help ] && echo 'usage: ekl env install "
                                "plugin' && exit 0\necho 'old ekl ran' >&2; exit 9\n")
    (bindir / "ekl").chmod(0o755)
    cp = run_sh(d, home, {"CONDA_EXE": str(root / "bin" / "conda")},
                path=f"/usr/bin:/bin:{bindir}")
    assert cp.returncode == 0 and "old ekl ran" not in cp.stderr, cp.stderr
    assert f"installing into conda environment plugenv at {prefix}" in cp.stdout
    assert installed(prefix)


def test_ekl_env_install_keeps_pips_output_and_fails_in_one_line(
        env_prefix: Path, conda_root: Path, tmp_path: Path) -> None:
    prefix = move(env_prefix, conda_root / "envs" / "plugenv")
    d = plugin(tmp_path / "p", "plugenv")
    cp = env_cli("install", str(d))
    assert cp.returncode == 0, cp.stderr
    assert installed(prefix)
    log = next(Path(os.environ["EKL_CACHE_DIR"]).glob("logs/pip-install-plugenv-*.log"))
    assert "ekltiny" in log.read_text() and f"(pip's output is also kept in {log})" in cp.stderr
    # -r, and a failing pip: one line naming the file, the env and the log
    bad = tmp_path / "bad.txt"
    bad.write_text("--no-index\nno-such-package-ekl==1\n")
    err = one_line_error(env_cli("install", str(d), "-r", str(bad)), 1)
    assert f"pip install -r {bad} into {prefix} failed with exit code" in err
    assert str(log) in err and "no-such-package-ekl" in log.read_text()
    # nothing to install; a missing file; a plugin without an env
    empty = tmp_path / "empty.txt"
    empty.write_text("# nothing\n\n")
    cp = env_cli("install", str(d), "-r", str(empty))
    assert cp.returncode == 0 and "lists nothing to install" in cp.stderr
    assert "no such requirements file" in one_line_error(
        env_cli("install", str(d), "-r", str(tmp_path / "nope.txt")), 2)
    d2 = plugin(tmp_path / "p2", None, kind=None)
    assert "names no environment" in one_line_error(env_cli("install", str(d2)), 2)


def test_env_create_installs_requirements_after_the_lock(conda_root: Path, channel,
                                                         tmp_path: Path) -> None:
    from ekl.envs.lock import current_subdir

    d = plugin(tmp_path / "p", "built")
    write_conda_lock(d / "conda-lock.yml", [channel.get("ekl-hello", "1.0")], current_subdir())
    (d / "requirements.txt").write_text("# nothing beyond the lock\n")
    cp = env_cli("create", str(d))
    assert cp.returncode == 0, cp.stderr
    assert "verified 1 packages" in cp.stderr
    assert "requirements.txt lists nothing to install" in cp.stderr
