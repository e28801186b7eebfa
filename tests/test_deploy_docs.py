"""docs/deploy.md cannot drift: every YAML, TOML and unit example parses, the TOML one is a
valid supervise config, and every ``ekl`` command line in them is one the CLI accepts.

The command lines go through ekl's real parser (``build_parser``).
"""

from __future__ import annotations

import argparse
import configparser
import contextlib
import functools
import io
import os
import re
import shlex
import sys
from typing import List, Optional, Tuple

import pytest
import yaml

from conftest import REPO
from ekl.launcher.ops import config

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover
    import tomli as tomllib

DOC = REPO / "docs" / "deploy.md"


@functools.lru_cache(maxsize=None)
def parser() -> argparse.ArgumentParser:
    from ekl.launcher.cli import build_parser

    return build_parser()


def check_command_line(argv: List[str]) -> Optional[str]:
    """None when ``ekl ARGV`` parses, else argparse's complaint."""
    err = io.StringIO()
    try:
        with contextlib.redirect_stderr(err):
            args = parser().parse_args(argv)
    except SystemExit:
        return err.getvalue().strip().splitlines()[-1]
    if getattr(args, "func", None) is None:
        return "no verb"
    return None


# --- extracting the examples ----------------------------------------------------------------

def blocks() -> List[Tuple[str, int, str]]:
    """(language, line, text) of every fenced block."""
    text = DOC.read_text(encoding="utf-8")
    out = []
    for m in re.finditer(r"^```(\w*)\n(.*?)^```", text, re.S | re.M):
        out.append((m.group(1), text[: m.start()].count("\n") + 1, m.group(2)))
    return out


_OPS = {"&&", "||", ";", "|", "&"}


def shell_commands(script: str) -> List[List[str]]:
    """Every simple command of a shell snippet (continuations joined, comments dropped)."""
    script = script.replace("\\\n", " ")
    cmds: List[List[str]] = []
    for line in script.splitlines():
        try:
            lex = shlex.shlex(line, posix=True, punctuation_chars=";&|")
            lex.whitespace_split = True
            lex.commenters = "#"
            tokens = list(lex)
        except ValueError:
            continue
        cur: List[str] = []
        for t in tokens + [";"]:
            if t in _OPS:
                if cur:
                    cmds.append(cur)
                cur = []
            else:
                cur.append(t)
    return cmds


def ekl_argv(cmd: List[str]) -> Optional[List[str]]:
    """The arguments after ``ekl`` when ``cmd`` runs ekl (``/opt/ekl/bin/ekl``, ``RUN ekl``)."""
    while cmd and (re.fullmatch(r"[A-Z_]+=.*", cmd[0]) or cmd[0] in ("RUN", "sudo", "exec")):
        cmd = cmd[1:]
    if cmd and os.path.basename(cmd[0]) == "ekl":
        return cmd[1:]
    return None


def yaml_commands(node: object) -> List[List[str]]:
    out: List[List[str]] = []
    if isinstance(node, dict):
        for v in node.values():
            out += yaml_commands(v)
    elif isinstance(node, list):
        if node and all(isinstance(x, str) for x in node):
            if node[0] in ("sh", "/bin/sh", "bash") and "-c" in node:
                out += shell_commands(node[node.index("-c") + 1])
            else:
                out.append(list(node))
        else:
            for v in node:
                out += yaml_commands(v)
    return out


def parse_unit(text: str) -> configparser.ConfigParser:
    """systemd's unit syntax is ini-like: sections, Key=Value, # and ; comments."""
    cp = configparser.ConfigParser(interpolation=None, strict=False, delimiters=("=",),
                                   comment_prefixes=("#", ";"), inline_comment_prefixes=None)
    cp.optionxform = str  # type: ignore[assignment,method-assign]
    cp.read_string(text)
    return cp


def all_commands() -> List[Tuple[int, List[str]]]:
    found: List[Tuple[int, List[str]]] = []
    for lang, line, text in blocks():
        cmds: List[List[str]] = []
        if lang in ("sh", "dockerfile"):
            cmds = shell_commands(text)
        elif lang == "yaml":
            for doc in yaml.safe_load_all(text):
                cmds += yaml_commands(doc)
        elif lang == "ini":
            unit = parse_unit(text)
            for section in unit.sections():
                for key, value in unit.items(section):
                    if key.startswith("Exec"):
                        cmds += shell_commands(value.lstrip("@-:+!"))
        for c in cmds:
            argv = ekl_argv(c)
            if argv is not None:
                found.append((line, argv))
    return found


# --- the tests ------------------------------------------------------------------------------

def test_every_yaml_toml_and_unit_block_parses():
    langs = [lang for lang, _, _ in blocks()]
    assert langs.count("yaml") >= 5 and "toml" in langs and "ini" in langs and "dockerfile" in langs
    for lang, line, text in blocks():
        where = f"docs/deploy.md:{line} ({lang})"
        if lang == "yaml":
            docs = [d for d in yaml.safe_load_all(text) if d is not None]
            assert docs, where
        elif lang == "toml":
            tomllib.loads(text)
        elif lang == "ini":
            unit = parse_unit(text)
            assert unit.sections() == ["Unit", "Service", "Install"], where
        else:
            assert lang in ("sh", "dockerfile", "text"), f"{where}: add a check for {lang!r} blocks"


def test_the_unit_has_what_the_docs_promise():
    (text,) = [t for lang, _, t in blocks() if lang == "ini"]
    svc = parse_unit(text)["Service"]
    assert svc["Type"] == "notify" and svc["KillMode"] == "mixed"
    assert int(svc["WatchdogSec"]) > 0 and svc["Restart"] == "on-failure"
    assert svc["ExecReload"] == "/bin/kill -HUP $MAINPID"
    for key in ("NoNewPrivileges", "ProtectSystem", "ProtectHome", "PrivateDevices"):
        assert key in svc, key
    assert "PrivateTmp" not in svc and "ProtectControlGroups" not in svc  # see the notes


def test_the_pod_probes_the_plugin_and_the_sidecar_scrapes_the_shared_status_folder():
    docs = [d for lang, _, t in blocks() if lang == "yaml" for d in yaml.safe_load_all(t)]
    (dep,) = [d for d in docs if isinstance(d, dict) and d.get("kind") == "Deployment"]
    spec = dep["spec"]["template"]["spec"]
    assert spec["shareProcessNamespace"] is True
    ek, metrics_c = spec["containers"]
    for probe in ("readinessProbe", "livenessProbe"):
        assert ek[probe]["exec"]["command"][:3] == ["ekl", "status", "--check"]
    status_dir = {e["name"]: e["value"] for e in ek["env"]}["EKL_STATUS_DIR"]
    assert status_dir in metrics_c["command"]
    assert any(m["mountPath"] == status_dir for m in metrics_c["volumeMounts"])
    kuiper = [d for d in docs if isinstance(d, dict) and "portable" in d]
    assert kuiper and kuiper[0]["portable"]["pythonBin"].endswith("ekl-python")
    assert kuiper[0]["portable"]["initTimeout"] == 5000


def test_the_toml_example_is_a_valid_supervise_config(tmp_path):
    (text,) = [t for lang, _, t in blocks() if lang == "toml"]
    with pytest.raises(config.ConfigError) as e:
        config.parse(text, str(tmp_path / "supervise.toml"))
    # the plugin folders do not exist here; nothing else may be wrong
    assert all("does not exist" in p for p in e.value.problems), e.value.problems
    folders = []
    for p in tomllib.loads(text)["plugins"].values():
        folders.append(p["path"])
    fake = text
    for f in folders:
        local = tmp_path / f.lstrip("/")
        local.parent.mkdir(parents=True, exist_ok=True)
        local.touch() if local.suffix == ".json" else local.mkdir(parents=True, exist_ok=True)
        fake = fake.replace(f'"{f}"', f'"{local}"')
    c = config.parse(fake, str(tmp_path / "supervise.toml"))
    assert [p.name for p in c.plugins] == ["pysam", "modbus"] and len(c.pipelines) == 1
    # the key table in the doc lists every key the parser knows
    doc = DOC.read_text(encoding="utf-8")
    for key in config.PLUGIN_KEYS:
        assert f"`{key}`" in doc, f"docs/deploy.md does not describe the config key {key}"


def test_every_ekl_command_line_in_the_examples_is_accepted():
    found = all_commands()
    verbs = {argv[0] for _, argv in found}
    assert {"supervise", "status", "metrics", "restart", "env"} <= verbs, verbs
    bad = [f"docs/deploy.md:{line}: ekl {' '.join(argv)}: {why}"
           for line, argv in found if (why := check_command_line(argv))]
    assert not bad, "\n".join(bad)


def test_the_checker_rejects_what_it_should():
    assert check_command_line(["supervise", "--nope"]).endswith("unrecognized arguments: --nope")
    assert "expected at least one argument" in check_command_line(["status", "--check"])
    assert "invalid choice: 'frobnicate'" in check_command_line(["frobnicate"])
    assert "expected one argument" in check_command_line(["metrics", "--listen"])
    assert check_command_line(["restart", "--all", "--timeout", "5"]) is None
    assert ekl_argv(["journalctl", "-u", "ekl"]) is None
    assert shell_commands("a && /opt/x/ekl status --json | head # ekl no") == [
        ["a"], ["/opt/x/ekl", "status", "--json"], ["head"]]
