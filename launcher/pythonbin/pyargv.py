"""Reading a python command line the way CPython does, to tell a plugin start from the rest."""

from __future__ import annotations

from ekuiper.record import field, record

TYPE_CHECKING = False  # typing is not loaded at run time on the start path (docs/architecture.md)
if TYPE_CHECKING:
    from typing import List, Optional

#: CPython options that take a value (as the next argument or glued on: -Wignore).
WITH_VALUE = {"W", "X"}
LONG_WITH_VALUE = {"--check-hash-based-pycs"}


@record
class PyArgv:
    options: List[str] = field(default_factory=list)   # everything before the target
    mode: str = "none"          # "script", "-c", "-m", "stdin", "none" (REPL / --version ...)
    target: Optional[str] = None
    args: List[str] = field(default_factory=list)      # after the target


def parse(argv: List[str]) -> PyArgv:
    r = PyArgv()
    i = 0
    while i < len(argv):
        a = argv[i]
        if a == "--":
            i += 1
            break
        if a in LONG_WITH_VALUE:
            r.options += argv[i:i + 2]
            i += 2
            continue
        if a.startswith("--"):
            r.options.append(a)  # --version, --help, ...
            i += 1
            continue
        if a == "-" or not a.startswith("-"):
            break
        # a cluster of short flags, e.g. -uB, -Wignore, -c CODE
        j = 1
        while j < len(a):
            ch = a[j]
            if ch in ("c", "m"):
                rest = a[j + 1:]
                r.options.append(a[:j] if j > 1 else "")
                r.options = [o for o in r.options if o]
                r.mode = f"-{ch}"
                if rest:
                    r.target, r.args = rest, argv[i + 1:]
                else:
                    r.target = argv[i + 1] if i + 1 < len(argv) else None
                    r.args = argv[i + 2:]
                return r
            if ch in WITH_VALUE:
                if j + 1 < len(a):
                    r.options.append(a)
                    i += 1
                else:
                    r.options += argv[i:i + 2]
                    i += 2
                break
            j += 1
        else:
            r.options.append(a)
            i += 1
    if i < len(argv):
        r.target = argv[i]
        r.mode = "stdin" if argv[i] == "-" else "script"
        r.args = argv[i + 1:]
    return r
