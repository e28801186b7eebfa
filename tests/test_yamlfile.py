"""sources/S.yaml parsed once per version of the file (launcher/plugin/yamlfile.py): a
repeated ``ekl tail`` does not import PyYAML; an edit, a document JSON cannot hold, or a
cache folder others may write to all mean a parse. Real files, real subprocesses."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest

from ekl.launcher.errors import ManifestError
from ekl.launcher.plugin import yamlfile


@pytest.fixture
def cache(tmp_path, monkeypatch) -> Path:
    monkeypatch.setenv("EKL_CACHE_DIR", str(tmp_path / "cache"))
    return tmp_path / "cache" / yamlfile.SUBDIR


def loads_without_pyyaml(path: Path, cache_dir: Path) -> tuple:
    code = ("import sys, json\nfrom pathlib import Path\n"
            "from ekl.launcher.plugin import yamlfile\n"
            f"d = yamlfile.load(Path({str(path)!r}))\n"
            "print(json.dumps([d, 'yaml' in sys.modules]))")
    env = dict(os.environ, EKL_CACHE_DIR=str(cache_dir.parent))
    out = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True,
                         text=True, check=True).stdout
    return tuple(json.loads(out))


def test_a_second_read_uses_the_cache_and_an_edit_is_read_again(tmp_path, cache):
    f = tmp_path / "s.yaml"
    f.write_text("default:\n  interval: 0.2\n  start: 2021\n")
    os.utime(f, (1, 1))  # older than any read: safe to keep
    assert yamlfile.load(f) == {"default": {"interval": 0.2, "start": 2021}}
    assert len(list(cache.glob("*.json"))) == 1
    assert loads_without_pyyaml(f, cache) == ({"default": {"interval": 0.2, "start": 2021}},
                                              False)
    f.write_text("default:\n  interval: 1\n")
    os.utime(f, (2, 2))
    assert yamlfile.load(f) == {"default": {"interval": 1}}


def test_what_json_cannot_hold_is_parsed_every_time(tmp_path, cache):
    f = tmp_path / "s.yaml"
    f.write_text("default:\n  day: 2021-01-02\n  1: int key\n  n: .nan\n")
    os.utime(f, (1, 1))
    d = yamlfile.load(f)
    assert str(d["default"]["day"]) == "2021-01-02" and d["default"][1] == "int key"
    assert not list(cache.glob("*.json"))


def test_a_file_written_during_the_read_is_not_kept(tmp_path, cache):
    f = tmp_path / "s.yaml"
    f.write_text("default: {a: 1}\n")
    future = time.time() + 60  # stamped at or after the read began: it may be changing
    os.utime(f, (future, future))
    assert yamlfile.load(f) == {"default": {"a": 1}}
    assert not list(cache.glob("*.json"))


def test_invalid_yaml_is_one_line_naming_the_file(tmp_path, cache):
    f = tmp_path / "s.yaml"
    f.write_text("default: [unclosed\n")
    with pytest.raises(ManifestError) as e:
        yamlfile.load(f)
    assert e.value.problems[0].startswith(f"{f}: not valid YAML: ")


def test_odd_entries_and_a_shared_folder_are_misses(tmp_path, cache):
    f = tmp_path / "s.yaml"
    f.write_text("default: {a: 1}\n")
    os.utime(f, (1, 1))
    assert yamlfile.load(f) == {"default": {"a": 1}}
    [entry] = cache.glob("*.json")
    for junk in (b"not json", b"[1, 2]", json.dumps({"path": "/elsewhere", "sig": [],
                                                     "data": 5}).encode(),
                 b"[" * 100000):
        entry.write_bytes(junk)
        assert yamlfile.load(f) == {"default": {"a": 1}}
        entry.write_bytes(junk)
    entry.write_text(json.dumps({"path": str(f), "sig": list(yamlfile.signature(str(f))),
                                 "data": {"poisoned": True}}))
    os.chmod(cache, 0o777)  # others could have written that: not used
    assert yamlfile.load(f) == {"default": {"a": 1}}


def test_the_cache_keeps_only_the_newest_documents(tmp_path, cache, monkeypatch):
    monkeypatch.setattr(yamlfile, "MAX_ENTRIES", 3)
    f = tmp_path / "s.yaml"
    for i in range(6):  # every edit is a new key
        f.write_text(f"default: {{n: {i}}}\n")
        os.utime(f, (i + 1, i + 1))
        assert yamlfile.load(f) == {"default": {"n": i}}
    assert len(list(cache.iterdir())) == 3
