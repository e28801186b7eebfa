"""ekl.launcher.ops.config: the supervise TOML file, its problems, and the reload diff."""

from __future__ import annotations

import os
import random
import shutil
from pathlib import Path

import pytest

from conftest import EXAMPLES
from ekl.launcher.ops import config
from ekl.launcher.ops.config import ConfigError
from ekuiper import record

GOOD = """\
# ekl supervise --config supervise.toml
[supervise]
status_file = "run/status.json"
log_dir = "logs"
log_format = "json"

[defaults]
restart = "on-failure"
max_rss_mb = 512
health_interval_s = 2

[plugins.pysam]
path = "plugins/pysam"
max_rss_mb = 256
lock_policy = "strict"
extra_env = { HTTP_PROXY = "http://proxy:3128" }

[plugins.other]
path = "plugins/other/other.json"
python = "envs/other/bin/python"
restart = "always"
send_timeout_ms = 2000
init_timeout_s = 10
sdk = "ekl"

[pipelines.reverse]
plugin = "pysam"
source = "pyjson"
config = { interval = 0.5, tags = ["a", "b"] }
function = "revert"
field = "name"
sink = "print"
properties = { level = 2 }
"""


@pytest.fixture
def tree(tmp_path: Path) -> Path:
    shutil.copytree(EXAMPLES / "pysam", tmp_path / "plugins" / "pysam")
    (tmp_path / "plugins" / "other").mkdir()
    (tmp_path / "plugins" / "other" / "other.json").write_text("{}")
    return tmp_path


def write(tree: Path, text: str, name: str = "supervise.toml") -> str:
    p = tree / name
    p.write_text(text)
    return str(p)


def problems(path: str) -> list:
    with pytest.raises(ConfigError) as e:
        config.load(path)
    assert str(e.value) == "\n".join(e.value.problems)
    return e.value.problems


def test_a_good_file_becomes_frozen_records_with_paths_from_its_folder(tree):
    c = config.load(write(tree, GOOD))
    assert [p.name for p in c.plugins] == ["pysam", "other"]
    assert c.status_file == str(tree / "run" / "status.json") and c.log_dir == str(tree / "logs")
    assert c.log_format == "json"
    pysam = c.plugin("pysam")
    assert pysam is not None and pysam.path == str(tree / "plugins" / "pysam")
    assert dict(pysam.supervisor) == {"restart": "on-failure", "max_rss_mb": 256,
                                      "health_interval_s": 2}
    assert dict(pysam.launch) == {"lock_policy": "strict",
                                  "extra_env": {"HTTP_PROXY": "http://proxy:3128"}}
    other = c.plugin("other")
    assert other.launch["python"] == str(tree / "envs" / "other" / "bin" / "python")
    assert dict(other.host) == {"init_timeout_s": 10} and dict(other.ekl_section) == {"sdk": "ekl"}
    (pipe,) = c.pipelines
    assert (pipe.plugin, pipe.source, pipe.function, pipe.field, pipe.sink) == (
        "pysam", "pyjson", "revert", "name", "print")
    assert config.thaw(pipe.config) == {"interval": 0.5, "tags": ["a", "b"]}
    assert pipe.conf_key == "default" and pipe.datasource == ""
    with pytest.raises(record.FrozenInstanceError):
        pysam.path = "/elsewhere"  # type: ignore[misc]
    with pytest.raises(TypeError):
        pysam.supervisor["restart"] = "never"  # type: ignore[index]


def _settings_classes():
    """ekl's settings classes and the plugin JSON's ``ekl`` section keys."""
    from ekl.launcher.plugin import EKL_SECTION_KEYS
    from ekl.launcher.settings import HostSettings, LaunchOptions, SupervisorSettings
    return SupervisorSettings, HostSettings, LaunchOptions, EKL_SECTION_KEYS


def test_every_per_plugin_setting_of_the_cli_and_the_json_is_a_key(tree):
    Sup, Host, Launch, section = _settings_classes()
    keys = set(config.PLUGIN_KEYS)
    # vendor_sdk is read by `ekl package` only: nothing a running plugin is supervised with
    missing = ({f.name for f in record.fields(Sup)} | (section - {"vendor_sdk"})) - keys
    missing |= {f.name for f in record.fields(Host)} - keys - {"plugin_send_timeout_ms"}
    missing |= {f.name for f in record.fields(Launch)} - keys
    assert not missing, f"config.PLUGIN_KEYS lacks {sorted(missing)}"
    # and the groups splat straight into ekl's own classes
    c = config.load(write(tree, GOOD))
    for pc in c.plugins:
        sup = dict(pc.supervisor)
        sup.pop("call_timeout_s", None)  # issue 11's setting, added by the supervision work
        Sup(**sup)
        Host(**config.thaw(pc.host))
        Launch(**config.thaw(pc.launch))


def test_every_problem_at_once_with_line_key_and_fix(tree):
    text = """\
[supervise]
status_file = "s.json"
log_format = "xml"

[defaults]
restart = "sometimes"
max_rss_mb = -3

[plugins.pysam]
path = "plugins/pysam"
health_interval_s = 0
pyhton = "x"
start_limit = 2.5
conda_run = "yes"
extra_env = { "BAD-NAME" = "x" }

[plugins.ghost]
path = "nope"

[plugins.twin]
path = "plugins/pysam/"

[pipelines.up]
plugin = "pysam"
source = "pyjson"
sink = "print"
field = "f"
config = { when = 1979-05-27 }

[pipelines.x]
plugin = "nobody"

[extra]
a = 1
"""
    p = write(tree, text)
    assert problems(p) == [
        f"{p}:33: extra: is not a known key; use one of defaults, pipelines, plugins, supervise",
        f"{p}:3: supervise.log_format: is 'xml'; use 'text' or 'json'",
        f"{p}:6: defaults.restart: is 'sometimes'; use 'always' or 'on-failure' or 'never'",
        f"{p}:7: defaults.max_rss_mb: is -3; use a number > 0",
        f"{p}:11: plugins.pysam.health_interval_s: is 0; use a number > 0",
        f"{p}:12: plugins.pysam.pyhton: is not a known key; did you mean 'python'?",
        f"{p}:13: plugins.pysam.start_limit: is 2.5; use an integer >= 1",
        f"{p}:14: plugins.pysam.conda_run: is 'yes'; use true or false",
        f"{p}:15: plugins.pysam.extra_env: has BAD-NAME = 'x'; use NAME = \"value\" pairs (names "
        f"of letters, digits, _; string values)",
        f"{p}:18: plugins.ghost.path: {tree}/nope does not exist; give the plugin's folder, "
        f"NAME.json or zip",
        f"{p}:21: plugins.twin.path: is also plugins.pysam.path; each plugin runs once per launcher",
        f"{p}:28: pipelines.up.config: holds a TOML date/time or inf/nan, which cannot be sent to "
        f"the plugin as JSON; write it as a string or number",
        f"{p}:27: pipelines.up.field: is set without function; add function = \"...\" or remove field",
        f"{p}:30: pipelines.x: has no source; add source = \"...\"",
        f"{p}:30: pipelines.x: has no sink; add sink = \"...\"",
        f"{p}:31: pipelines.x.plugin: is 'nobody', not a plugin of this file; declare "
        f"[plugins.nobody] or use one of ghost, pysam, twin",
    ]


def test_syntax_errors_and_unreadable_files_are_one_line(tree):
    p = write(tree, '[plugins.a]\npath = "x"\nrestart = \n')
    assert problems(p) == [f"{p}:3: not valid TOML: Invalid value (column 11); fix the syntax"]
    assert problems(str(tree / "missing.toml")) == [
        f"--config {tree}/missing.toml: no such file; give the supervise TOML file (see docs/deploy.md)"]
    assert problems(str(tree)) == [f"--config {tree}: is a folder; give the supervise TOML file"]
    os.mkfifo(tree / "fifo.toml")
    assert problems(str(tree / "fifo.toml")) == [
        f"--config {tree}/fifo.toml: not a regular file; give the supervise TOML file"]
    big = tree / "big.toml"
    with open(big, "wb") as f:
        f.truncate(config.MAX_CONFIG_BYTES + 1)
    assert problems(str(big)) == [f"--config {big}: larger than 1024 KiB; not a supervise config file"]
    bad = tree / "latin1.toml"
    bad.write_bytes(b'# ok\n[plugins.a]\npath = "caf\xe9"\n')
    assert problems(str(bad)) == [f"{bad}:3: not UTF-8 text (byte 28); save the file as UTF-8"]
    assert problems(write(tree, "")) == [f"{tree}/supervise.toml: declares no plugins; add a "
                                         f"[plugins.NAME] table with path = \"...\""]
    assert problems(write(tree, "plugins = 3\n")) == [f"{tree}/supervise.toml:1: plugins: must be a "
                                                      f"table: [plugins]"]


def test_garbage_never_escapes_as_anything_but_config_error(tree):
    rnd = random.Random(1234)
    base = GOOD.encode()
    for i in range(150):
        data = bytearray(base)
        for _ in range(rnd.randint(1, 8)):
            op = rnd.random()
            pos = rnd.randrange(len(data))
            if op < 0.4:
                data[pos] = rnd.randrange(256)
            elif op < 0.7:
                del data[pos: pos + rnd.randint(1, 20)]
            else:
                data[pos:pos] = rnd.choice([b"=", b"[", b"]", b'"', b"\n", b"{", b"inf", b"-1",
                                            b"[[plugins]]\n", b"\x00", b"path", b"."])
        p = tree / f"fuzz{i}.toml"
        p.write_bytes(bytes(data))
        try:
            config.load(str(p))
        except ConfigError as e:
            assert e.problems and all("\n" not in line and line for line in e.problems)


def test_diff_says_what_a_reload_does(tree):
    old = config.load(write(tree, GOOD))
    assert config.diff(old, config.load(write(tree, GOOD))).empty
    new_text = (GOOD.replace("max_rss_mb = 256\n", "max_rss_mb = 300\n")
                .replace("[plugins.other]", "[plugins.third]\npath = \"plugins/other\"\n\n[plugins.other]")
                .replace('properties = { level = 2 }', 'properties = { level = 3 }')
                .replace('log_format = "json"', 'log_format = "text"'))
    d = config.diff(old, config.load(write(tree, new_text)))
    assert (d.added, d.removed, d.changed, d.unchanged) == (("third",), (), ("pysam",), ("other",))
    assert d.pipelines_changed == ("reverse",) and d.launcher_changed == ("log_format",)
    # a [defaults] change reaches every plugin that does not set the key itself
    slower = GOOD.replace("health_interval_s = 2", "health_interval_s = 5")
    d = config.diff(old, config.load(write(tree, slower)))
    assert d.changed == ("pysam", "other")
    gone = GOOD[:GOOD.index("[plugins.other]")] + GOOD[GOOD.index("[pipelines.reverse]"):]
    d = config.diff(old, config.load(write(tree, gone)))
    assert d.removed == ("other",) and d.unchanged == ("pysam",)


def test_a_bad_reload_keeps_the_running_config(tree):
    path = write(tree, GOOD)
    r = config.Reloader(path)
    first = r.load()
    write(tree, GOOD.replace('restart = "always"', 'restart = "often"'))
    with pytest.raises(ConfigError):
        r.reload()
    assert r.current is first
    write(tree, GOOD.replace('restart = "always"', 'restart = "never"'))
    d = r.reload()
    assert d.changed == ("other",) and r.current is not first

