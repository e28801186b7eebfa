"""``ekl init NAME``: a plugin skeleton that runs, validates, packages and passes its tests.

The skeleton is deliberately small but complete, so that every file eKuiper looks at is
there from the start and the author only edits: the plugin JSON, the main program, one
source, one sink and one function, ``sources/{source}.yaml``, eKuiper's metadata JSON for
each symbol (what its UI shows), ``requirements.txt`` with an ``install.sh`` that installs
it into the environment the JSON names (found as conda finds it, with ``/bin/sh`` alone,
because eKuiper runs it in its own unactivated environment), and a pytest file using
ekl's fixture. ``--vendor-sdk`` records ``"ekl": {"vendor_sdk": true}`` in the JSON.

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
# install.sh installs them into the environment the plugin's JSON names (or, with none,
# the one it runs in). Do not list the eKuiper SDK (import name "ekuiper") here: with
# `ekl package --vendor-sdk` ekl's SDK travels inside the zip; otherwise install.sh
# installs PyPI's "ekuiper" only when that environment has no SDK.
'''

#: The first line after the shebang marks an install.sh ekl wrote: ``ekl package`` refreshes
#: such a file (in the zip) to the current version, and leaves any other install.sh alone.
INSTALL_SH_MARK = "# ekl-install-sh "
#: the second line of the install.sh ekl wrote before it had the marker
OLD_INSTALL_SH_LINE = "# eKuiper runs this with /bin/sh in the plugin folder after unpacking the zip"
INSTALL_SH = r'''#!/bin/sh
# ekl-install-sh 2: written by ekl (init/package); `ekl package` refreshes this file while
# this line is here. Delete the line to keep your own edits.
#
# eKuiper runs this with /bin/sh in the plugin folder after unpacking the zip, in its own
# environment (nothing activated). It installs requirements.txt into the environment the
# plugin's JSON names ("virtualEnvType"/"env", at the top level or in "ekl"):
#   conda, mamba, micromamba, pixi: that environment, never activated: `ekl env install`
#     when ekl is on PATH, else the environment's own python, found as conda finds it
#     ($CONDA_EXE, `conda info --base`, envs_dirs in .condarc, ~/.conda/environments.txt);
#   venv: that venv's python;
#   none: $1, $PYTHON, the active virtualenv or conda env, `python`, then python3.
# With ekl's SDK vendored (ekuiper/_vendored.json beside the main program) it never
# installs an SDK; otherwise it installs PyPI's `ekuiper` only when the environment has none.
set -eu
cd "$(dirname "$0")"
here=$(pwd)
NAME=@NAME@
JSON="$NAME.json"
say() { echo "$NAME: $*"; }
die() { echo "$NAME: error: $*" >&2; exit 1; }

[ -f "$JSON" ] || die "$JSON is not beside install.sh in $here; reinstall the plugin's zip"
flat=$(tr '\n\r\t' '   ' < "$JSON")
# A string field of the JSON (top level or "ekl" section), read with sed alone.
field() {
    v=$(printf '%s\n' "$flat" | sed -n 's/.*"'"$1"'"[[:space:]]*:[[:space:]]*"\([^"\\]*\)".*/\1/p')
    if [ -z "$v" ] && printf '%s\n' "$flat" | grep -q '"'"$1"'"[[:space:]]*:[[:space:]]*"'; then
        die "$JSON: field '$1' has characters install.sh cannot read (quotes or" \
            "backslashes); use a plain name or path"
    fi
    printf '%s' "$v"
}
vet=$(field virtualEnvType)
envname=$(field env)
exe=$(field executable)
exedir=$(dirname "${exe:-x}")

# "~/x" and relative paths (from the plugin folder, as ekl does) -> absolute
abspath() {
    case "$1" in
        "~") printf '%s' "${HOME:-}" ;;
        "~/"*) printf '%s/%s' "${HOME:-}" "${1#"~/"}" ;;
        /*) printf '%s' "$1" ;;
        *) printf '%s/%s' "$here" "$1" ;;
    esac
}

# envs_dirs (or envs_path) entries of one .condarc, one per line: block or [flow] lists
envs_dirs_of() {
    awk '
        function clean(x) { sub(/[[:space:]]+#.*$/, "", x); gsub(/#!(important|top|bottom)/, "", x);
                            gsub(/^[[:space:]"\047]+|[[:space:]"\047]+$/, "", x); return x }
        /^(envs_dirs|envs_path)[[:space:]]*:/ {
            v = $0; sub(/^[^:]*:[[:space:]]*/, "", v)
            if (v ~ /^\[/) { gsub(/[][]/, "", v); n = split(v, a, ",")
                             for (i = 1; i <= n; i++) { x = clean(a[i]); if (x != "") print x }
                             inlist = 0 }
            else if (clean(v) != "") { print clean(v); inlist = 0 }
            else inlist = 1
            next }
        inlist && /^[[:space:]]*-/ { x = $0; sub(/^[[:space:]]*-[[:space:]]*/, "", x); x = clean(x)
                                     if (x != "") print x; next }
        inlist && /^[[:space:]]*(#.*)?$/ { next }
        { inlist = 0 }
    ' "$1" 2>/dev/null || true
}

# The conda installation roots, most specific first: $CONDA_EXE, `conda info --base`,
# $MAMBA_ROOT_PREFIX, then where installers put conda (a service's environment rarely says).
conda_roots() {
    if [ -n "${CONDA_EXE:-}" ]; then dirname "$(dirname "$CONDA_EXE")"; fi
    if command -v conda >/dev/null 2>&1; then conda info --base 2>/dev/null || true; fi
    if [ -n "${MAMBA_ROOT_PREFIX:-}" ]; then printf '%s\n' "$MAMBA_ROOT_PREFIX"; fi
    for r in "${HOME:-/nonexistent}/miniforge3" "${HOME:-/nonexistent}/miniconda3" \
             "${HOME:-/nonexistent}/anaconda3" "${HOME:-/nonexistent}/mambaforge" \
             "${HOME:-/nonexistent}/micromamba" "${HOME:-/nonexistent}/.local/share/mamba" \
             /opt/conda /opt/miniforge3 /opt/miniconda3 /opt/anaconda3; do
        if [ -d "$r/conda-meta" ] || [ -d "$r/envs" ]; then printf '%s\n' "$r"; fi
    done
}

# Folders that hold named environments, in conda's order of precedence.
envs_dirs() {
    roots=$(conda_roots)
    if [ -n "${CONDA_ENVS_DIRS:-${CONDA_ENVS_PATH:-}}" ]; then
        printf '%s\n' "${CONDA_ENVS_DIRS:-${CONDA_ENVS_PATH:-}}" | tr ':' '\n'
    fi
    files=""
    [ -n "${CONDARC:-}" ] && files="$CONDARC"
    h=${HOME:-/nonexistent}
    files="$files
$h/.condarc
$h/.conda/condarc
$h/.conda/.condarc
$h/.config/conda/condarc
$h/.config/conda/.condarc"
    [ -n "${XDG_CONFIG_HOME:-}" ] && files="$files
$XDG_CONFIG_HOME/conda/condarc
$XDG_CONFIG_HOME/conda/.condarc"
    first_root=$(printf '%s\n' "$roots" | sed -n 1p)
    [ -n "$first_root" ] && files="$files
$first_root/condarc
$first_root/.condarc"
    files="$files
/var/lib/conda/condarc
/var/lib/conda/.condarc
/etc/conda/condarc
/etc/conda/.condarc"
    printf '%s\n' "$files" | while IFS= read -r f; do
        if [ -n "$f" ] && [ -f "$f" ]; then envs_dirs_of "$f"; fi
    done
    printf '%s\n' "$roots" | while IFS= read -r r; do
        if [ -n "$r" ]; then printf '%s/envs\n' "$r"; fi
    done
    printf '%s/.conda/envs\n' "$h"
}

# Sets $prefix to the prefix of conda environment $1 (a name or a path), or to "" with
# $looked saying where it looked.
find_conda_env() {
    prefix=""
    case "$1" in
        */*|"~"*|.*)
            p=$(abspath "$1"); looked=$p
            if [ -d "$p/conda-meta" ]; then prefix=$p; fi
            return 0 ;;
    esac
    if [ "$1" = base ] || [ "$1" = root ]; then
        p=$(conda_roots | sed -n 1p); looked="the conda root prefix (none found)"
        if [ -n "$p" ] && [ -d "$p/conda-meta" ]; then prefix=$p; fi
        return 0
    fi
    dirs=$(envs_dirs)
    prefix=$(printf '%s\n' "$dirs" | while IFS= read -r d; do
        [ -n "$d" ] || continue
        d=$(abspath "$d")
        if [ -d "$d/$1/conda-meta" ]; then printf '%s/%s\n' "$d" "$1"; break; fi
    done)
    envtxt="${HOME:-/nonexistent}/.conda/environments.txt"
    if [ -z "$prefix" ] && [ -f "$envtxt" ]; then
        prefix=$(while IFS= read -r p; do
            case "$p" in */envs/"$1") if [ -d "$p/conda-meta" ]; then printf '%s\n' "$p"; break; fi ;; esac
        done < "$envtxt")
    fi
    looked=$(printf '%s\n' "$dirs" | awk 'NF && !seen[$0]++ { printf "%s%s", sep, $0; sep = ", " }')
    if [ -f "$envtxt" ]; then looked="$looked, $envtxt"; fi
}

# Whether requirements.txt asks for anything (not only comments and blank lines).
if grep -q '^[[:space:]]*[^#[:space:]]' requirements.txt 2>/dev/null; then
    reqs=1
else
    reqs=""
fi
pip_install() {  # $1 = python
    if [ -n "$reqs" ]; then
        say "pip install -r requirements.txt with $1"
        "$1" -m pip install --disable-pip-version-check -r requirements.txt
    else
        say "nothing to install (no requirements.txt, or it lists no package)"
    fi
}

# ekl on PATH, with the `ekl env install` that runs pip (an older one ran install.sh)
ekl_pip=""
if command -v ekl >/dev/null 2>&1 && ekl env install --help 2>/dev/null | grep -q -- --requirements
then
    ekl_pip=1
fi

PY=""
case "$vet" in
    conda|mamba|micromamba|pixi)
        [ -n "$envname" ] || [ "$vet" = pixi ] ||
            die "$JSON: virtualEnvType is $vet but 'env' is missing; name the environment"
        prefix=""
        if [ "$vet" != pixi ]; then find_conda_env "$envname"; fi
        if [ -n "$reqs" ] && [ -n "$ekl_pip" ]; then
            say "installing with ekl into $vet environment ${envname:-default}"
            ekl env install "$here"
        elif [ -z "$reqs" ] && { [ -n "$prefix" ] || command -v ekl >/dev/null 2>&1; }; then
            say "nothing to install (no requirements.txt, or it lists no package)"
        elif [ -n "$prefix" ]; then
            say "installing into $vet environment $envname at $prefix"
            [ -x "$prefix/bin/python" ] ||
                die "$vet environment $envname at $prefix has no bin/python; install python into it"
            pip_install "$prefix/bin/python"
        elif [ "$vet" = pixi ]; then
            die "pixi environment ${envname:-default}: install.sh needs ekl on PATH to find it;" \
                "run \`pixi install\` in the project"
        else
            die "$vet environment '$envname' not found (looked in: $looked); create it, or give" \
                "its full path in $JSON's \"env\""
        fi
        if [ -n "$prefix" ] && [ -x "$prefix/bin/python" ]; then PY="$prefix/bin/python"; fi
        ;;
    venv)
        [ -n "$envname" ] || die "$JSON: virtualEnvType is venv but 'env' is missing; give the venv's path"
        prefix=$(abspath "$envname")
        [ -x "$prefix/bin/python" ] ||
            die "venv $prefix (\"env\" in $JSON) has no bin/python; create it with:" \
                "python3 -m venv $prefix"
        say "installing into venv $prefix"
        PY="$prefix/bin/python"
        pip_install "$PY"
        ;;
    "")
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
        say "installing into $("$PY" -c 'import sys; print(sys.prefix)')"
        pip_install "$PY"
        ;;
    *)
        die "$JSON: virtualEnvType '$vet' is not one install.sh knows (conda, mamba, micromamba, pixi, venv)"
        ;;
esac

if [ -f "$exedir/ekuiper/_vendored.json" ]; then
    say "ekl's SDK is vendored in $exedir/ekuiper/; no SDK installed"
elif [ -z "$PY" ]; then
    say "no SDK check: ekl found the environment, install.sh could not; under ekl-python ekl's SDK is used"
elif ! (cd / && "$PY" -c 'import ekuiper') >/dev/null 2>&1; then
    say "no eKuiper SDK in that environment: installing PyPI's ekuiper (package with" \
        "\`ekl package --vendor-sdk\` to carry ekl's SDK instead)"
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
ekl package . -o @NAME@.zip --vendor-sdk  # with ekl's SDK inside: runs on a stock eKuiper
```

eKuiper runs `install.sh` when it installs the zip: it installs `requirements.txt` into
the environment `@NAME@.json` names (`virtualEnvType`/`env`), found without activating it.
'''

GITIGNORE = '''__pycache__/
*.pyc
.pytest_cache/
.venv/
*.zip
'''


def install_sh(name: str) -> str:
    """The install.sh ekl writes for plugin ``name`` (``init``, and ``package`` refreshes it)."""
    return INSTALL_SH.replace("@NAME@", name)


def is_ekl_install_sh(text: str) -> bool:
    """Whether an install.sh is one ekl wrote and may refresh (its marker line is intact)."""
    lines = text.splitlines()
    return len(lines) > 1 and lines[1].startswith((INSTALL_SH_MARK, OLD_INSTALL_SH_LINE))


def render(name: str, vendor_sdk: bool = False) -> Dict[str, str]:
    """Every file of the skeleton, relative path -> text."""
    s = symbols_for(name)
    manifest: Dict[str, object] = {
        "version": "v0.1.0", "language": "python", "executable": f"{name}.py",
        "sources": [s["source"]], "sinks": [s["sink"]], "functions": [s["function"]]}
    if vendor_sdk:  # recorded, so every later `ekl package` vendors without being told
        manifest["ekl"] = {"vendor_sdk": True}
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
        "install.sh": install_sh(name),
        f"test_{name}.py": sub(TEST),
        "README.md": sub(README),
        ".gitignore": GITIGNORE,
    }


def init_plugin(name: str, directory: Optional[str | os.PathLike[str]] = None,
                vendor_sdk: bool = False) -> List[Path]:
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
    files = render(name, vendor_sdk)
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
