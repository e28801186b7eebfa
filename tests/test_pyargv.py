"""Telling a plugin start from any other python invocation, as CPython reads argv."""

import pytest

from ekl.launcher.pythonbin.pyargv import parse


@pytest.mark.parametrize("argv, mode, target, args, options", [
    (["-u", "main.py", '{"sendTimeout":1000}'], "script", "main.py", ['{"sendTimeout":1000}'],
     ["-u"]),
    (["main.py"], "script", "main.py", [], []),
    (["-uB", "-W", "ignore", "main.py", "x"], "script", "main.py", ["x"], ["-uB", "-W", "ignore"]),
    (["-Wignore", "-X", "dev", "main.py"], "script", "main.py", [], ["-Wignore", "-X", "dev"]),
    (["-c", "print(1)", "a"], "-c", "print(1)", ["a"], []),
    (["-uc", "print(1)"], "-c", "print(1)", [], ["-u"]),
    (["-m", "json.tool", "f"], "-m", "json.tool", ["f"], []),
    (["-mjson.tool"], "-m", "json.tool", [], []),
    (["--version"], "none", None, [], ["--version"]),
    ([], "none", None, [], []),
    (["-", "a"], "stdin", "-", ["a"], []),
    (["--check-hash-based-pycs", "never", "s.py"], "script", "s.py", [],
     ["--check-hash-based-pycs", "never"]),
])
def test_parse(argv, mode, target, args, options):
    r = parse(argv)
    assert (r.mode, r.target, r.args, r.options) == (mode, target, args, options)
