"""Every environment kind envs knows is accepted by every verb (one plugin reader decides).

Before the single reader, ``"virtualEnvType": "pixi"`` (or mamba, micromamba) was found by
``ekl env doctor`` and refused by ``ekl run``/``call``. Stand-ins for each tool, as in the
rest of tests/envs (no conda, mamba, micromamba or pixi binary exists here): a micromamba
root announced by MAMBA_ROOT_PREFIX, a mamba env under a conda root, a pixi project's
``.pixi/envs/default``, each a real interpreter with rattler-written conda-meta records.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from ekl.launcher.plugin import env_kinds, load
from ekl.launcher.settings import LaunchOptions
from ekl.launcher.start import open_plugin
from ekl.launcher.start.resolve import resolve

from .envs_testlib import make_conda_prefix, make_conda_root

REPO = Path(__file__).resolve().parents[2]
COMPAT = REPO / "tests" / "plugins" / "compat"


def _plugin(folder: Path, kind: str, env: str) -> Path:
    import shutil

    shutil.copytree(COMPAT, folder, ignore=shutil.ignore_patterns("__pycache__"))
    j = json.loads((folder / "compat.json").read_text())
    j.update(virtualEnvType=kind, env=env)
    # Without the source whose configure never returns, `ekl validate` runs every check and
    # passes instead of waiting out the 15 s command deadline on it, per kind (that deadline is
    # test_authoring's test_validate_stops_asking_a_plugin_whose_control_thread_hangs).
    j["sources"] = [s for s in j["sources"] if s != "stuck"]
    (folder / "sources" / "stuck.yaml").unlink()
    main = folder / "compat.py"
    code = main.read_text()
    assert ', "stuck": lambda: Stuck()}' in code
    main.write_text(code.replace(', "stuck": lambda: Stuck()}', "}"))
    if not env:
        j.pop("env")
    (folder / "compat.json").write_text(json.dumps(j))
    return folder


@pytest.fixture
def kinds(home: Path, channel, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> dict:
    """kind -> (plugin folder, prefix), each environment laid out as its tool does."""
    cache = tmp_path / "rc"
    out = {}
    root = make_conda_root(home / "miniforge3")
    monkeypatch.setenv("CONDA_EXE", str(root / "bin" / "conda"))
    out["conda"] = (_plugin(tmp_path / "c" / "compat", "conda", "cenv"),
                    make_conda_prefix(root / "envs" / "cenv", channel, cache=cache,
                                      system_site=True))
    out["mamba"] = (_plugin(tmp_path / "m" / "compat", "mamba", "menv"),
                    make_conda_prefix(root / "envs" / "menv", channel, cache=cache,
                                      system_site=True))
    monkeypatch.setenv("MAMBA_ROOT_PREFIX", str(home / "micromamba"))
    out["micromamba"] = (_plugin(tmp_path / "u" / "compat", "micromamba", "uenv"),
                         make_conda_prefix(home / "micromamba" / "envs" / "uenv", channel,
                                           cache=cache, system_site=True))
    proj = tmp_path / "proj"
    proj.mkdir()
    (proj / "pixi.toml").write_text("[project]\nname = 'p'\nchannels = []\nplatforms = []\n")
    pixi_prefix = make_conda_prefix(proj / ".pixi" / "envs" / "default", channel, cache=cache,
                                    system_site=True)
    (pixi_prefix / "conda-meta" / "history").unlink()  # pixi writes none
    out["pixi"] = (_plugin(proj / "compat", "pixi", ""), pixi_prefix)
    venv = tmp_path / "venv"
    subprocess.run([sys.executable, "-m", "venv", "--without-pip", "--system-site-packages",
                    str(venv)], check=True)
    out["venv"] = (_plugin(tmp_path / "v" / "compat", "venv", str(venv)), venv)
    assert set(out) == set(env_kinds())
    return out


def _ekl(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "ekl.launcher.cli", *args], text=True,
                          capture_output=True, timeout=120, env=dict(os.environ))


def test_every_kind_is_accepted_by_every_verb(kinds: dict) -> None:
    """One build of the five environments (they are slow to make), every verb on each."""
    for kind, (folder, prefix) in kinds.items():
        plugin = load(folder)
        assert plugin.env_kind == kind
        spec = resolve(plugin, LaunchOptions(lock_policy="off"))
        assert spec.interpreter.startswith(str(prefix)), (kind, spec.interpreter)
        with open_plugin(plugin, LaunchOptions(lock_policy="off")) as inst:  # run/tail/feed
            got = inst.start_function("where").exec([["CONDA_PREFIX", "VIRTUAL_ENV"]])
            assert got["executable"].startswith(str(prefix)), kind
            var = "VIRTUAL_ENV" if kind == "venv" else "CONDA_PREFIX"
            assert got["env"][var] == str(prefix), (kind, got["env"])
    for kind in ("mamba", "micromamba", "pixi"):  # the CLI, as a user types it
        folder, prefix = kinds[kind]
        cp = _ekl("call", str(folder), "where", '["CONDA_PREFIX"]', "--lock", "off")
        assert cp.returncode == 0, cp.stderr
        assert json.loads(cp.stdout)["env"]["CONDA_PREFIX"] == str(prefix)
        for verb in (("validate", str(folder), "--lock", "off"), ("env", "doctor", str(folder))):
            cp = _ekl(*verb)
            out = cp.stdout + cp.stderr
            # no refusal of the kind (doctor may name it, as the launcher's choice)
            assert "field 'virtualEnvType'" not in out and "is not supported" not in out, \
                (verb, out)
            assert "Traceback" not in cp.stderr, cp.stderr
            assert cp.returncode == 0, (verb, out)
        assert "[  ok] start:" in cp.stdout, (kind, cp.stdout)  # cp: the doctor's, last
