"""Find every user-facing message template in ekl's source, for tests/test_docs.py.

A template is the text of a ``raise SomethingError(...)`` / ``SystemExit(...)``, a
``ManifestError([...])`` problem, a manifest ``bad(field, text)``, a validation finding
(``report.error/warn/note``), a ``pytest.fail`` or an ``ekl: ...`` line printed to stderr,
and warnings logged with ``log.warning``/``log.error``. Each template's *fragment* is its
longest literal piece (placeholders split it), which troubleshooting.md must quote.

``python tests/messages.py`` lists the templates with ``…`` for placeholders.
"""

from __future__ import annotations

import ast
import re
import sys
from pathlib import Path
from typing import Iterator, List, Optional, Tuple

REPO = Path(__file__).resolve().parent.parent
SOURCES = [REPO / "launcher", REPO / "envs"]
MIN_FRAGMENT = 14
REPORT_METHODS = {"error", "warn", "note"}
LOG_METHODS = {"warning", "error"}
INTERNAL = {"ValueError", "TypeError", "RuntimeError", "AssertionError", "KeyError"}


def _pieces(node: ast.AST) -> Optional[List[Optional[str]]]:
    """Literal pieces of a str / f-string / concatenation; None stands for a placeholder."""
    if isinstance(node, ast.Constant) and isinstance(node.value, str):
        return [node.value]
    if isinstance(node, ast.JoinedStr):
        out: List[Optional[str]] = []
        for v in node.values:
            if isinstance(v, ast.Constant) and isinstance(v.value, str):
                out.append(v.value)
            else:
                out.append(None)
        return out
    if isinstance(node, ast.BinOp) and isinstance(node.op, ast.Add):
        left, right = _pieces(node.left), _pieces(node.right)
        if left is None and right is None:
            return None
        return (left or [None]) + (right or [None])
    return None


def _texts(call: ast.Call) -> Iterator[ast.AST]:
    for a in call.args:
        if isinstance(a, (ast.List, ast.Tuple)):
            yield from a.elts
        else:
            yield a


def _name(f: ast.AST) -> str:
    if isinstance(f, ast.Name):
        return f.id
    if isinstance(f, ast.Attribute):
        return f.attr
    return ""


def _is_message_call(node: ast.Call, parent_raise: bool) -> bool:
    n = _name(node.func)
    if parent_raise and n in INTERNAL:
        return False  # programming errors, never shown to a user as such
    if parent_raise and (n.endswith("Error") or n in ("SystemExit", "PluginExited")):
        return True
    if n in ("bad",) and len(node.args) == 2:
        return True
    if isinstance(node.func, ast.Attribute):
        owner = node.func.value
        if n in REPORT_METHODS and _name(owner) == "report":
            return True
        if n in LOG_METHODS and _name(owner) == "log":
            return True
        if n == "fail" and _name(owner) == "pytest":
            return True
        if n == "append" and _name(owner) == "problems":
            return True
    if n in ("_err",):
        return True
    if n == "print" and any(k.arg == "file" for k in node.keywords):
        return True
    return False


def templates() -> List[Tuple[str, int, str]]:
    """(file, line, template with … for placeholders) for every message."""
    out = []
    for folder in SOURCES:
        for path in sorted(folder.rglob("*.py")):
            tree = ast.parse(path.read_text(), str(path))
            raised = set()
            for node in ast.walk(tree):
                if isinstance(node, ast.Raise) and isinstance(node.exc, ast.Call):
                    raised.add(id(node.exc))
            for node in ast.walk(tree):
                if not isinstance(node, ast.Call) or not _is_message_call(node, id(node) in raised):
                    continue
                args = list(_texts(node))
                if _name(node.func) == "bad":
                    args = args[1:]
                for a in args:
                    pieces = _pieces(a)
                    if pieces is None:
                        continue
                    text = "".join("…" if p is None else p for p in pieces)
                    if _name(node.func) == "bad":
                        text = "…: field '…' " + text
                    out.append((path.relative_to(REPO).as_posix(), node.lineno, text))
    return out


def normalize(text: str) -> str:
    """Compare without quoting: the docs may quote `code` where a message uses 'quotes'."""
    return " ".join(text.replace("`", "").replace("'", "").split())


def fragment(template: str) -> Optional[str]:
    """The longest literal piece, trimmed; None when nothing distinctive is left."""
    parts = [normalize(p).strip(" .,:;()'\"-") for p in re.split(r"…|%[-#0-9.]*[sdrfxi]", template)]
    parts = [p for p in parts if len(p) >= MIN_FRAGMENT]
    return max(parts, key=len) if parts else None


if __name__ == "__main__":
    for f, line, t in templates():
        frag = fragment(t)
        sys.stdout.write(f"{f}:{line}: {t}\n    -> {frag}\n")
