#!/bin/sh
# Create (or reuse) the project's virtual environment in .venv and install ekl, its SDK
# and the test tools into it. Needs only a Python 3.9+ with venv. Safe to run again.
set -eu
cd "$(dirname "$0")"
PY=${PYTHON:-python3}
if [ ! -x .venv/bin/python ]; then
    "$PY" -m venv .venv
fi
stamp=.venv/.ekl-installed
if [ ! -f "$stamp" ] || [ pyproject.toml -nt "$stamp" ] || [ sdk/pyproject.toml -nt "$stamp" ]; then
    .venv/bin/python -m pip install -q --disable-pip-version-check -e ./sdk -e '.[dev]'
    touch "$stamp"
fi
