"""The docs cannot drift: the CLI reference is generated, every message is explained, and
the user guide's commands run."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest
from messages import fragment, normalize, templates

from conftest import REPO

DOCS = REPO / "docs"
REGENERATE = "python -m ekl.launcher.cli.clidoc > docs/cli.md"


def test_cli_reference_is_generated_from_the_parser():
    from ekl.launcher.cli.clidoc import render

    current = (DOCS / "cli.md").read_text(encoding="utf-8")
    assert current == render(), f"docs/cli.md is stale; regenerate it: {REGENERATE}"


def test_cli_reference_lists_every_verb():
    from ekl.launcher.cli import build_parser
    from ekl.launcher.cli.clidoc import _subparsers

    text = (DOCS / "cli.md").read_text(encoding="utf-8")
    for name, _, _ in _subparsers(build_parser()):
        assert f"### `ekl {name}`" in text


def test_every_error_message_is_in_troubleshooting():
    doc = normalize((DOCS / "troubleshooting.md").read_text(encoding="utf-8"))
    found = templates()
    assert len(found) > 100  # the extractor still sees the messages
    missing = []
    for path, line, template in found:
        frag = fragment(template)
        if frag is not None and normalize(frag) not in doc:
            missing.append(f"{path}:{line}: {template}")
    assert not missing, ("docs/troubleshooting.md does not explain these messages (add a row "
                         "quoting each, … for the variable parts):\n" + "\n".join(missing))


def doc_test_blocks(path: Path) -> list:
    """The ```sh blocks preceded by a ``<!-- doc-test -->`` line, in order."""
    blocks = re.findall(r"<!-- doc-test -->\n```sh\n(.*?)```", path.read_text(encoding="utf-8"),
                        re.S)
    return [b.strip() for b in blocks]


def test_user_guide_commands_run(tmp_path):
    blocks = doc_test_blocks(DOCS / "user-guide.md")
    assert len(blocks) >= 6
    script = "set -eu\n" + "\n".join(f"echo '### block {i}'\n{b}" for i, b in enumerate(blocks))
    env = dict(os.environ)
    env["PATH"] = f"{Path(sys.executable).parent}{os.pathsep}{env.get('PATH', '')}"
    env.pop("PYTEST_XDIST_WORKER", None)
    env.pop("PYTEST_ADDOPTS", None)
    cp = subprocess.run(["/bin/sh", "-c", script], cwd=tmp_path, env=env, capture_output=True,
                        text=True, timeout=120)
    assert cp.returncode == 0, f"the user guide's commands failed:\n{cp.stdout}\n{cp.stderr}"
    out = cp.stdout
    assert '"mything_upper": "DEV1 0"' in out
    assert '"HELLO"' in out
    assert "4 passed" in out
    assert (tmp_path / "mything.zip").is_file()
    assert "mything.json" in out


@pytest.mark.parametrize("doc", ["user-guide.md", "troubleshooting.md", "cli.md"])
def test_docs_link_to_existing_files(doc):
    text = (DOCS / doc).read_text(encoding="utf-8")
    for target in re.findall(r"\]\(([^)#:]+\.md)", text):
        assert (DOCS / target).is_file() or target in ("environments.md", "sdk.md"), target


def test_supervisor_settings_table_matches_the_defaults():
    """docs/launcher.md's settings table says the defaults the code has."""
    import re

    from ekl.launcher.settings import SupervisorSettings
    from ekuiper.record import fields

    text = (DOCS / "launcher.md").read_text(encoding="utf-8")
    defaults = {f.name: f.default for f in fields(SupervisorSettings)}
    seen = 0
    for names, values in re.findall(r"^\| `([a-z_]+(?:` / `[a-z_]+)*)` \| ([^|]+) \|", text, re.M):
        for name, value in zip(names.split("` / `"), values.split(" / ")):
            if name not in defaults:
                continue
            seen += 1
            want = defaults[name]
            value = value.strip().strip("`")
            if want is None:
                assert value == "none", (name, value)
            elif isinstance(want, str):
                assert value == want, (name, value, want)
            else:
                assert float(value) == float(want), (name, value, want)
    assert seen >= len(defaults) - 1, f"only {seen} settings documented"
