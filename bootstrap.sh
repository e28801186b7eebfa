#!/bin/sh
# Create (or reuse) the project's virtual environment in .venv and install ekl, its SDK
# and the test tools into it. Needs only a Python 3.9+ with venv. Safe to run again.
# The first run says so in one line, then shows pip's own lines (a line per package and,
# on a terminal, its progress bars), so a minute of downloading is never silent; later
# runs print nothing unless pyproject.toml changed.
set -eu
cd "$(dirname "$0")"
PY=${PYTHON:-python3}
stamp=.venv/.ekl-installed
say() { echo "ekl: $*" >&2; }
if [ ! -x .venv/bin/python ]; then
    say "setting up .venv (first run, about a minute; later runs start at once)..."
    say "[1/3] creating .venv with $PY"
    "$PY" -m venv .venv
elif [ ! -f "$stamp" ]; then
    say "finishing .venv (an earlier setup did not complete)..."
fi
if [ ! -f "$stamp" ] || [ pyproject.toml -nt "$stamp" ] || [ sdk/pyproject.toml -nt "$stamp" ]; then
    if [ -f "$stamp" ]; then say "updating .venv (pyproject.toml changed)..."; fi
    say "[2/3] installing ekl's SDK (./sdk) into .venv"
    .venv/bin/python -m pip install --disable-pip-version-check -e ./sdk
    say "[3/3] installing ekl and its test tools ('.[dev]': pytest, ruff, pynng...) into .venv"
    .venv/bin/python -m pip install --disable-pip-version-check -e '.[dev]'
    touch "$stamp"
    say ".venv is ready"
fi
