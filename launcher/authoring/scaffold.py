"""``ekl init NAME``: a plugin skeleton that runs, validates, packages and passes its tests.

The skeleton is deliberately small but complete, so that every file eKuiper looks at is
there from the start and the author only edits: the plugin JSON, the main program, one
source, one sink and one function, ``sources/{source}.yaml``, eKuiper's metadata JSON for
each symbol (what its UI shows), ``requirements.txt`` with an ``install.sh`` that installs
into the environment it runs in, and a pytest file using ekl's fixture.

Symbol names carry the plugin's name (``NAME_source``, ``NAME_sink``, ``NAME_upper``):
eKuiper keeps one namespace per symbol kind across *all* installed plugins, so generic
names like ``print`` collide.
"""

from __future__ import annotations

import json
import os
import re
from pathlib import Path
from typing import Dict, List, Optional

from ..errors import EklError

#: eKuiper plugin and symbol names: letters, digits and underscores. The first character
#: may not be a digit: function names are SQL identifiers, and the main program's name
#: doubles as a Python module name.
NAME_RE = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")


def check_name(name: str) -> None:
    """Refuse names eKuiper (or Python, or SQL) would trip over, in one line."""
    if not NAME_RE.match(name):
        raise EklError(f"invalid plugin name {name!r}: use letters, digits and underscores, "
                       f"starting with a letter or underscore (e.g. my_plugin)")


def symbols_for(name: str) -> Dict[str, str]:
    return {"source": f"{name}_source", "sink": f"{name}_sink", "function": f"{name}_upper"}


def _about(description: str) -> dict:
    return {"trial": True,
            "author": {"name": "", "email": "", "company": "", "website": ""},
            "helpUrl": {"en_US": "", "zh_CN": ""},
            "description": {"en_US": description, "zh_CN": description}}


def _prop(name: str, default: object, typ: str, hint: str, optional: bool = True) -> dict:
    return {"name": name, "default": default, "optional": optional, "control": "text",
            "type": typ, "hint": {"en_US": hint, "zh_CN": hint},
            "label": {"en_US": name, "zh_CN": name}}


def _json(obj: object) -> str:
    return json.dumps(obj, indent=2, ensure_ascii=False) + "\n"


MAIN = '''"""The @NAME@ plugin: maps each symbol name to its factory. eKuiper (or ekl) runs this file.

The names here must equal the lists in @NAME@.json, and the name given to PluginConfig
must equal the JSON file's name; `ekl validate` checks both.
"""

from ekuiper import PluginConfig, plugin
from @NAME@_function import UpperFunction
from @NAME@_sink import PrintSink
from @NAME@_source import CounterSource

if __name__ == "__main__":
    plugin.start(PluginConfig(
        "@NAME@",
        {"@SOURCE@": lambda: CounterSource()},
        {"@SINK@": lambda: PrintSink()},
        {"@FUNCTION@": lambda: UpperFunction()},
    ))
'''

SOURCE = '''"""Source ``@SOURCE@``: emits ``{"text": "<datasource> <n>", "seq": n}`` every ``interval`` s.

The stream's DATASOURCE becomes the text's prefix; ``conf`` is the chosen section of
sources/@SOURCE@.yaml merged with the stream's options.
"""

import threading
from typing import Any, Dict

from ekuiper import Context, Source


class CounterSource(Source):
    def __init__(self) -> None:
        self.prefix = "hello"
        self.interval = 1.0
        self.stopped = threading.Event()

    def configure(self, datasource: str, conf: Dict[str, Any]) -> None:
        if datasource:
            self.prefix = datasource
        self.interval = float(conf.get("interval", self.interval))
        if self.interval < 0:
            raise ValueError(f"interval must be >= 0, got {self.interval}")

    def open(self, ctx: Context) -> None:
        ctx.get_logger().info("@SOURCE@ emitting every %.2f s", self.interval)
        n = 0
        while not self.stopped.is_set():
            ctx.emit({"text": f"{self.prefix} {n}", "seq": n}, {"source": "@SOURCE@"})
            n += 1
            self.stopped.wait(self.interval)

    def close(self, ctx: Context) -> None:
        self.stopped.set()
'''

SINK = '''"""Sink ``@SINK@``: prints every record it receives, and acks it when the rule asks."""

from typing import Any, Dict

from ekuiper import Context, Sink


class PrintSink(Sink):
    def __init__(self) -> None:
        self.prefix = "@NAME@:"

    def configure(self, conf: Dict[str, Any]) -> None:
        self.prefix = str(conf.get("prefix", self.prefix))

    def open(self, ctx: Context) -> None:
        ctx.get_logger().info("@SINK@ open")

    def collect(self, ctx: Context, data: Any) -> None:
        text = data.decode("utf-8", "replace") if isinstance(data, bytes) else str(data)
        print(self.prefix, text, flush=True)
        ctx.ack_ok()  # sent only when the rule sets requireAck

    def close(self, ctx: Context) -> None:
        ctx.get_logger().info("@SINK@ closed")
'''

FUNCTION = '''"""Function ``@FUNCTION@``: upper-cases a string, e.g. ``SELECT @FUNCTION@(text) FROM s``."""

from typing import Any, List

from ekuiper import Context, Function


class UpperFunction(Function):
    def validate(self, args: List[Any]) -> str:
        # eKuiper passes the parsed argument expressions here: only their count is dependable.
        if len(args) != 1:
            return f"@FUNCTION@ takes exactly one argument, got {len(args)}"
        return ""

    def exec(self, args: List[Any], ctx: Context) -> Any:
        value = args[0]
        if not isinstance(value, str):
            raise TypeError(f"@FUNCTION@ needs a string, got {type(value).__name__}")
        return value.upper()

    def is_aggregate(self) -> bool:
        return False
'''

SOURCE_YAML = '''# Configuration of the @SOURCE@ source. eKuiper passes the section the stream names
# with CONF_KEY (default: "default") to configure(); stream options are merged over it.
default:
  interval: 1.0
fast:
  interval: 0.01
'''

REQUIREMENTS = '''# The plugin's own Python dependencies, one per line (pip's format), e.g.:
# requests>=2.31
#
# install.sh installs them into the environment it runs in. The eKuiper SDK (import name
# "ekuiper") is installed by install.sh only when that environment has none: ekl's SDK
# (ekl-sdk) or the official one (PyPI "ekuiper") both work; do not list it here.
'''

INSTALL_SH = '''#!/bin/sh
# eKuiper runs this with /bin/sh in the plugin folder after unpacking the zip (the REST
# call's "shellParas" become its arguments). It installs requirements.txt into the Python
# environment the plugin will run in, chosen as: $1, $PYTHON, the active virtualenv or
# conda environment, then eKuiper's default pythonBin "python", then python3.
set -eu
cd "$(dirname "$0")"
PY="${1:-${PYTHON:-}}"
if [ -z "$PY" ]; then
    if [ -n "${VIRTUAL_ENV:-}" ] && [ -x "$VIRTUAL_ENV/bin/python" ]; then
        PY="$VIRTUAL_ENV/bin/python"
    elif [ -n "${CONDA_PREFIX:-}" ] && [ -x "$CONDA_PREFIX/bin/python" ]; then
        PY="$CONDA_PREFIX/bin/python"
    elif command -v python >/dev/null 2>&1; then
        PY=python
    else
        PY=python3
    fi
fi
echo "@NAME@: installing into $("$PY" -c 'import sys; print(sys.prefix)')"
if grep -qv '^[[:space:]]*\\(#.*\\)\\{0,1\\}$' requirements.txt; then
    "$PY" -m pip install --disable-pip-version-check -r requirements.txt
fi
if ! "$PY" -c 'import ekuiper' >/dev/null 2>&1; then
    "$PY" -m pip install --disable-pip-version-check ekuiper
fi
'''

TEST = '''"""Tests for the @NAME@ plugin, run by pytest with ekl's plugin (installed with ekl).

The ``ekl_plugin`` fixture starts this folder's plugin under ekl's host (no eKuiper
needed) and stops it, with every process and socket, when the test ends.
"""


def test_function_upper_cases(ekl_plugin):
    assert ekl_plugin.call("@FUNCTION@", "abc") == "ABC"


def test_function_rejects_numbers(ekl_plugin):
    import pytest

    from ekl.launcher.errors import FunctionError

    with pytest.raises(FunctionError, match="needs a string, got int"):
        ekl_plugin.call("@FUNCTION@", 42)


def test_source_emits_with_datasource_and_config(ekl_plugin):
    records = ekl_plugin.read("@SOURCE@", 3, datasource="demo", config={"interval": 0.01})
    assert records == [{"text": f"demo {n}", "seq": n} for n in range(3)]


def test_sink_acks_every_record(ekl_plugin):
    acks = ekl_plugin.feed("@SINK@", [{"text": "a"}, {"text": "b"}], require_ack=True)
    assert acks == [None, None]  # None: success; a text: the sink's error
'''

README = '''# @NAME@ — an eKuiper Python plugin

Made with `ekl init`. Symbols: source `@SOURCE@`, sink `@SINK@`, function `@FUNCTION@`.

```sh
ekl run .  --count 3       # source -> function -> sink, printed as JSON lines
ekl call . @FUNCTION@ '"hi"'
python -m pytest           # the tests in test_@NAME@.py, with ekl's pytest plugin
ekl validate .             # what eKuiper checks at install time, and at run time
ekl package . -o @NAME@.zip  # the zip to install with POST /plugins/portables
```
'''

GITIGNORE = '''__pycache__/
*.pyc
.pytest_cache/
.venv/
*.zip
'''


def render(name: str) -> Dict[str, str]:
    """Every file of the skeleton, relative path -> text."""
    s = symbols_for(name)
    manifest = {"version": "v0.1.0", "language": "python", "executable": f"{name}.py",
                "sources": [s["source"]], "sinks": [s["sink"]], "functions": [s["function"]]}
    source_meta = {
        "about": _about("Emits a counting text record; the stream's DATASOURCE is its prefix."),
        "libs": [],
        "properties": {"default": [_prop("interval", 1.0, "float", "Seconds between records")]},
        "node": {"category": "source", "icon": "iconPath",
                 "label": {"en_US": s["source"], "zh_CN": s["source"]}},
    }
    sink_meta = {
        "about": _about("Prints every record it receives."),
        "libs": [],
        "properties": [_prop("prefix", f"{name}:", "string", "Printed before each record")],
        "node": {"category": "sink", "icon": "iconPath",
                 "label": {"en_US": s["sink"], "zh_CN": s["sink"]}},
    }
    func_meta = {
        "about": _about("Upper-cases a string."),
        "libs": [],
        "name": name,
        "functions": [{
            "name": s["function"], "example": f"{s['function']}(col1)",
            "hint": {"en_US": "Upper-case the input string", "zh_CN": "Upper-case the input string"},
            "args": [{"name": "value", "optional": False, "control": "field", "type": "string",
                      "hint": {"en_US": "The string to upper-case", "zh_CN": "The string"},
                      "label": {"en_US": "Value", "zh_CN": "Value"}}],
            "return": {"type": "string", "hint": {"en_US": "The upper-cased string",
                                                  "zh_CN": "The upper-cased string"}},
            "node": {"category": "function", "icon": "iconPath",
                     "label": {"en_US": s["function"], "zh_CN": s["function"]}},
        }],
    }

    def sub(text: str) -> str:
        return (text.replace("@NAME@", name).replace("@SOURCE@", s["source"])
                .replace("@SINK@", s["sink"]).replace("@FUNCTION@", s["function"]))

    return {
        f"{name}.json": _json(manifest),
        f"{name}.py": sub(MAIN),
        f"{name}_source.py": sub(SOURCE),
        f"{name}_sink.py": sub(SINK),
        f"{name}_function.py": sub(FUNCTION),
        f"sources/{s['source']}.yaml": sub(SOURCE_YAML),
        f"sources/{s['source']}.json": _json(source_meta),
        f"sinks/{s['sink']}.json": _json(sink_meta),
        f"functions/{s['function']}.json": _json(func_meta),
        "requirements.txt": REQUIREMENTS,
        "install.sh": sub(INSTALL_SH),
        f"test_{name}.py": sub(TEST),
        "README.md": sub(README),
        ".gitignore": GITIGNORE,
    }


def init_plugin(name: str, directory: Optional[str | os.PathLike[str]] = None) -> List[Path]:
    """Write the skeleton into ``directory`` (default ``./NAME``); returns the files written.

    An existing non-empty folder is refused rather than merged into: overwriting an
    author's files, or mixing two plugins, is never what ``init`` was asked for.
    """
    check_name(name)
    folder = Path(directory) if directory is not None else Path(name)
    if folder.exists() and not folder.is_dir():
        raise EklError(f"{folder} exists and is not a folder; give another --dir")
    if folder.is_dir() and any(folder.iterdir()):
        raise EklError(f"{folder} exists and is not empty; give a new or empty folder with "
                       f"--dir (ekl init never overwrites files)")
    files = render(name)
    written: List[Path] = []
    try:
        folder.mkdir(parents=True, exist_ok=True)
        for rel, text in files.items():
            path = folder / rel
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_text(text, encoding="utf-8")
            if rel == "install.sh":
                path.chmod(0o755)
            written.append(path)
    except OSError as e:
        raise EklError(f"cannot write the plugin into {folder}: {e.strerror} "
                       f"({e.filename or folder})") from None
    return written
