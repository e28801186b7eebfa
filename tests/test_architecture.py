"""The launcher's shape, checked: no import cycles, no imports that run back up a layer,
one start path, and ``envs``/the SDK independent of the launcher.

These read the source (every import, function-level ones included), so a lazy import
that closes a cycle fails here as surely as a top-level one.
"""

from __future__ import annotations

import ast
from pathlib import Path
from typing import Dict, Iterator, List, Set, Tuple

REPO = Path(__file__).resolve().parent.parent
ROOTS = {"ekl.launcher": REPO / "launcher", "ekl.envs": REPO / "envs",
         "ekuiper": REPO / "sdk" / "ekuiper"}

#: Each launcher sub-package (or top-level module) and its layer: imports may only go to
#: the same or a lower layer (docs/architecture.md draws this).
LAYERS = {
    "": 0, "errors": 0, "progress": 0, "settings": 0, "fsafe": 0, "early": 0, "stderrlog": 0,
    "plugin": 1, "process": 1,
    "host": 2,
    "start": 3,
    "supervise": 4, "ops": 4,
    "authoring": 5, "pythonbin": 5,
    "cli": 6, "commands": 6,
}


def modules() -> Dict[str, Path]:
    out = {}
    for pkg, root in ROOTS.items():
        for path in root.rglob("*.py"):
            rel = path.relative_to(root).with_suffix("")
            parts = [p for p in rel.parts if p != "__init__"]
            out[".".join([pkg, *parts])] = path
    return out


def imports(name: str, path: Path) -> Iterator[Tuple[str, int]]:
    """(imported module, line) for every import in the file, resolved to absolute names."""
    is_pkg = path.name == "__init__.py"
    tree = ast.parse(path.read_text(), str(path))
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            for a in node.names:
                yield a.name, node.lineno
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = name.split(".")
                base = base if is_pkg else base[:-1]
                base = base[:len(base) - (node.level - 1)]
                mod = ".".join(base + ([node.module] if node.module else []))
            else:
                mod = node.module or ""
            yield mod, node.lineno
            for a in node.names:  # `from pkg import submodule`
                yield f"{mod}.{a.name}", node.lineno


def graph() -> Dict[str, Set[str]]:
    mods = modules()
    g: Dict[str, Set[str]] = {m: set() for m in mods}
    for m, path in mods.items():
        for target, _ in imports(m, path):
            if target in mods and target != m:
                g[m].add(target)
    return g


def cycles(g: Dict[str, Set[str]]) -> List[List[str]]:
    """Strongly connected components with more than one module (Tarjan)."""
    index: Dict[str, int] = {}
    low: Dict[str, int] = {}
    stack: List[str] = []
    on: Set[str] = set()
    out: List[List[str]] = []
    counter = [0]

    def visit(v: str) -> None:
        index[v] = low[v] = counter[0]
        counter[0] += 1
        stack.append(v)
        on.add(v)
        for w in g[v]:
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            comp = []
            while True:
                w = stack.pop()
                on.discard(w)
                comp.append(w)
                if w == v:
                    break
            if len(comp) > 1:
                out.append(sorted(comp))

    for v in sorted(g):
        if v not in index:
            visit(v)
    return out


def layer_of(module: str) -> int:
    rest = module[len("ekl.launcher"):].lstrip(".")
    return LAYERS[rest.split(".")[0]]


def test_no_import_cycles_in_the_launcher() -> None:
    g = {m: {t for t in ts if t.startswith("ekl.launcher")}
         for m, ts in graph().items() if m.startswith("ekl.launcher")}
    found = cycles(g)
    assert not found, "import cycles: " + "; ".join(" <-> ".join(c) for c in found)


def test_cycle_check_sees_a_cycle() -> None:
    assert cycles({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": set()}) == [["a", "b", "c"]]


def test_imports_never_run_back_up_a_layer() -> None:
    bad = []
    mods = modules()
    for m, path in mods.items():
        if not m.startswith("ekl.launcher"):
            continue
        for target, line in imports(m, path):
            if target.startswith("ekl.launcher") and target in mods and \
                    layer_of(target) > layer_of(m):
                bad.append(f"{path.relative_to(REPO)}:{line}: {m} imports {target}")
    assert not bad, "\n".join(bad)


def test_every_launcher_package_is_in_a_layer() -> None:
    tops = {p.name if p.is_dir() else p.stem for p in (REPO / "launcher").iterdir()
            if (p.is_dir() and (p / "__init__.py").exists()) or p.suffix == ".py"}
    tops.discard("__init__")
    assert tops <= set(LAYERS), f"add {sorted(tops - set(LAYERS))} to LAYERS (and architecture.md)"


def test_every_sub_package_says_what_it_owns() -> None:
    for init in (REPO / "launcher").glob("*/__init__.py"):
        doc = ast.get_docstring(ast.parse(init.read_text()))
        assert doc and len(doc) > 40, f"{init.relative_to(REPO)} needs a docstring of what it owns"


def test_envs_and_the_sdk_never_import_the_launcher() -> None:
    bad = []
    for m, path in modules().items():
        for target, line in imports(m, path):
            if m.startswith("ekl.envs") and target.startswith("ekl.launcher"):
                bad.append(f"{path.relative_to(REPO)}:{line}: {target}")
            if m.startswith("ekuiper") and target.startswith("ekl"):
                bad.append(f"{path.relative_to(REPO)}:{line}: {target}")
    assert not bad, "\n".join(bad)


def test_the_launcher_uses_no_sdk_internals() -> None:
    bad = [f"{path.relative_to(REPO)}:{line}: {target}"
           for m, path in modules().items() if m.startswith("ekl.launcher")
           for target, line in imports(m, path) if target.startswith("ekuiper.runtime")]
    assert not bad, "use public SDK API (ekuiper, ekuiper.protocol, ekuiper.reqrep, " \
                    "ekuiper.transport):\n" + "\n".join(bad)


def _calls(path: Path, name: str) -> List[int]:
    tree = ast.parse(path.read_text(), str(path))
    return [n.lineno for n in ast.walk(tree) if isinstance(n, ast.Call) and (
        (isinstance(n.func, ast.Name) and n.func.id == name)
        or (isinstance(n.func, ast.Attribute) and n.func.attr == name))]


def test_the_start_sequence_exists_once() -> None:
    """Only the start path builds a PluginInstance; only the lifeline module a Lifeline; only
    the plugin reader parses JSON files into plugins."""
    owners = {"PluginInstance": {"launcher/start/__init__.py"},
              "Lifeline": {"launcher/process/lifeline.py"},
              "ControlChannel": {"launcher/host/instance.py"},
              "StatusWriter": {"launcher/supervise/status.py"}}
    bad = []
    for path in (REPO / "launcher").rglob("*.py"):
        rel = path.relative_to(REPO).as_posix()
        for name, allowed in owners.items():
            for line in _calls(path, name):
                if rel not in allowed:
                    bad.append(f"{rel}:{line}: constructs {name} (only {', '.join(allowed)} may)")
    assert not bad, "\n".join(bad)


def test_one_constant_per_protocol_literal() -> None:
    """Protocol literals live in ekuiper.protocol; the launcher spells none of them itself."""
    literals = {'b"ok"', "b'ok'", '"handshake"', 'b"handshake"', '"plugin_"', '"func_"'}
    bad = []
    for path in (REPO / "launcher").rglob("*.py"):
        for lineno, line in enumerate(path.read_text().splitlines(), 1):
            if any(lit in line for lit in literals):
                bad.append(f"{path.relative_to(REPO)}:{lineno}: {line.strip()}")
    assert not bad, "use ekuiper.protocol's constants:\n" + "\n".join(bad)
