"""Finding environments by conda's, micromamba's and pixi's rules, in a temporary HOME."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest

from ekl.envs import EnvError, find_environment, list_environments
from ekl.envs.locate import conda_config

from .envs_testlib import make_conda_prefix, make_conda_root, make_venv


def test_envs_dirs_order_from_condarc_files_and_env(home: Path, conda_root: Path,
                                                    monkeypatch: pytest.MonkeyPatch) -> None:
    (home / ".condarc").write_text("envs_dirs:\n  - ~/from-home-condarc\n")
    xdg = home / "xdg"
    (xdg / "conda" / "condarc.d").mkdir(parents=True)
    (xdg / "conda" / "condarc.d" / "10-site.yml").write_text("envs_dirs: [/srv/from-xdg]\n")
    monkeypatch.setenv("XDG_CONFIG_HOME", str(xdg))
    (conda_root / ".condarc").write_text("envs_dirs:\n  - $HOME/from-root-condarc\n")
    cfg = conda_config()
    # later files on conda's search path win; then the fixed dirs (root writable: root first)
    assert cfg.envs_dirs == [str(home / "from-home-condarc"), "/srv/from-xdg",
                             str(home / "from-root-condarc"), str(conda_root / "envs"),
                             str(home / ".conda" / "envs")]
    monkeypatch.setenv("CONDA_ENVS_DIRS", f"/a:{home}/b")
    assert conda_config().envs_dirs[:2] == ["/a", str(home / "b")]
    assert cfg.root_prefix == str(conda_root)


def test_root_prefix_from_env_and_read_only_root(home: Path, conda_root: Path,
                                                 monkeypatch: pytest.MonkeyPatch) -> None:
    other = make_conda_root(home / "other-root")
    (other / "conda-meta" / "history").chmod(0o444)
    monkeypatch.setenv("CONDA_ROOT_PREFIX", str(other))
    cfg = conda_config()
    assert cfg.root_prefix == str(other) and cfg.conda_root == str(conda_root)
    if os.geteuid() != 0:  # root can write anything, so conda treats the root as writable
        assert cfg.envs_dirs == [str(home / ".conda" / "envs"), str(other / "envs")]


def test_name_found_in_condarc_envs_dir(home: Path, channel, tmp_path: Path) -> None:
    (home / ".condarc").write_text(f"envs_dirs: [{home}/conda-envs]\n")
    p = make_conda_prefix(home / "conda-envs" / "ml", channel, cache=tmp_path / "rc")
    env = find_environment("conda", "ml")
    assert env.prefix == p and env.name == "ml" and env.kind == "conda"
    assert env.conda_root is None  # no conda installation in this HOME
    assert "envs_dirs" in env.found_in


def test_not_found_lists_every_place(home: Path, conda_root: Path,
                                     monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("MAMBA_ROOT_PREFIX", str(home / "mm"))
    with pytest.raises(EnvError) as e:
        find_environment("conda", "nope")
    msg = str(e.value)
    assert "\n" not in msg
    for place in (conda_root / "envs" / "nope", home / ".conda" / "envs" / "nope",
                  home / "mm" / "envs" / "nope"):
        assert str(place) in msg
    assert "ekl env create" in msg


def test_prefix_needs_conda_meta_history(conda_root: Path) -> None:
    half = conda_root / "envs" / "half"
    (half / "conda-meta").mkdir(parents=True)
    (half / "bin").mkdir()
    with pytest.raises(EnvError, match="not found"):
        find_environment("conda", "half")


def test_ambiguous_name(home: Path, conda_root: Path, channel, tmp_path: Path,
                        monkeypatch: pytest.MonkeyPatch) -> None:
    a = make_conda_prefix(conda_root / "envs" / "twin", channel, cache=tmp_path / "rc")
    monkeypatch.setenv("MAMBA_ROOT_PREFIX", str(home / "micromamba"))
    b = make_conda_prefix(home / "micromamba" / "envs" / "twin", channel, cache=tmp_path / "rc")
    with pytest.raises(EnvError) as e:
        find_environment(None, "twin")
    assert "ambiguous" in str(e.value) and str(a) in str(e.value) and str(b) in str(e.value)
    # the full path settles it
    assert find_environment(None, str(b)).kind == "micromamba"


def test_base_is_the_root_prefix(conda_root: Path, channel, tmp_path: Path) -> None:
    make_venv(conda_root)  # give the root an interpreter
    for name in ("base", "root"):
        env = find_environment("conda", name)
        assert env.prefix == conda_root
        assert env.activation({"PATH": "/bin"})["CONDA_DEFAULT_ENV"] == "base"


def test_environments_txt(home: Path, channel, tmp_path: Path) -> None:
    p = make_conda_prefix(home / "elsewhere" / "envs" / "reg", channel, cache=tmp_path / "rc")
    (home / ".conda").mkdir()
    (home / ".conda" / "environments.txt").write_text(f"{p}\n\n/does/not/exist\n")
    env = find_environment("conda", "reg")
    assert env.prefix == p and env.found_in == "~/.conda/environments.txt"
    listed = {e.prefix: e for e in list_environments()}
    assert listed[p].name == "reg"


def test_micromamba_root(home: Path, channel, tmp_path: Path,
                         monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("MAMBA_ROOT_PREFIX", str(home / "mamba"))
    p = make_conda_prefix(home / "mamba" / "envs" / "edge", channel, cache=tmp_path / "rc")
    env = find_environment("conda", "edge")  # conda kind also finds mamba envs
    assert env.kind == "micromamba" and env.prefix == p
    act = env.activation({"PATH": "/bin"})
    assert act["CONDA_PREFIX"] == str(p) and "CONDA_EXE" not in act


def test_pixi_default_env(home: Path, channel, tmp_path: Path) -> None:
    proj = tmp_path / "proj"
    (proj / "pixi.toml").parent.mkdir()
    (proj / "pixi.toml").write_text("[project]\nname='p'\n")
    p = make_conda_prefix(proj / ".pixi" / "envs" / "default", channel, cache=tmp_path / "rc")
    (p / "conda-meta" / "history").unlink()  # pixi does not need one
    plugin = proj / "plugins" / "demo"
    plugin.mkdir(parents=True)
    env = find_environment("pixi", "", plugin_dir=plugin)
    assert env.kind == "pixi" and env.prefix == p
    assert find_environment(None, "default", plugin_dir=plugin).prefix == p


def test_venv_relative_to_plugin_dir(home: Path, tmp_path: Path) -> None:
    plugin = tmp_path / "plugin"
    make_venv(plugin / "env")
    assert find_environment("venv", "env", plugin_dir=plugin).prefix == plugin / "env"
    assert find_environment(None, "./env", plugin_dir=plugin).kind == "venv"
    with pytest.raises(EnvError, match="is not a conda environment.*virtualEnvType"):
        find_environment("conda", "./env", plugin_dir=plugin)
    with pytest.raises(EnvError, match="does not exist"):
        find_environment("venv", "missing", plugin_dir=plugin)


def test_bad_inputs(home: Path) -> None:
    with pytest.raises(EnvError, match="virtualEnvType 'docker'"):
        find_environment("docker", "x")
    with pytest.raises(EnvError, match='empty "env"'):
        find_environment("conda", "")


def test_broken_condarc_is_one_line(home: Path) -> None:
    (home / ".condarc").write_text("envs_dirs: [unclosed\n")
    with pytest.raises(EnvError) as e:
        find_environment("conda", "x")
    assert ".condarc" in str(e.value) and "\n" not in str(e.value)


def test_conda_info_fallback(home: Path, conda_root: Path, channel, tmp_path: Path) -> None:
    """A conda binary, when there is one, is asked last; only its "envs" key is used."""
    hidden = make_conda_prefix(home / "hidden" / "envs" / "ghost", channel,
                               cache=tmp_path / "rc")
    exe = conda_root / "bin" / "conda"
    exe.write_text("#!/bin/sh\n[ \"$1 $2 $3\" = 'info --envs --json' ] || exit 3\n"
                   f"echo '{json.dumps({'envs': [str(hidden)], 'other': 1})}'\n")
    env = find_environment("conda", "ghost")
    assert env.prefix == hidden and env.found_in == "conda info --envs"
    exe.write_text("#!/bin/sh\necho 'not json'\n")
    with pytest.raises(EnvError, match="not found"):
        find_environment("conda", "ghost")


def test_list_environments(home: Path, myenv: Path, conda_root: Path, channel,
                           tmp_path: Path) -> None:
    other = make_conda_prefix(home / ".conda" / "envs" / "second", channel,
                              cache=tmp_path / "rc")
    envs = {e.prefix: e for e in list_environments()}
    assert envs[conda_root].name == "base"
    assert envs[myenv].name == "myenv" and envs[myenv].kind == "conda"
    assert envs[other].name == "second"
