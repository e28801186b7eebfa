"""Start-up speed of ``ekl-python`` and of ``ekl call``/``tail``/``run``, against the bare
plugin doing the same work, all in one run (issue 16, items 2 and 3).

Baseline: the pysam plugin started by the bare interpreter (``python -u pysam.py CONF``)
under a host in this process that plays eKuiper (listens first, waits for the handshake,
sends the commands). Each variant is timed from the moment its process is spawned to the
*same* first answer:

- ``ekl-python``: eKuiper's command line with ``pythonBin = ekl-python``, to the first
  command the real plugin answers (``ok`` to a function start). The relay answers the
  handshake itself, before the plugin runs, so the handshake alone says little; both
  times are printed. Baseline: the bare plugin's handshake plus that same command.
- ``ekl call pysam revert '"abc"'`` to its printed result; baseline: the bare plugin to
  the same function result (start, handshake, function start, Exec).
- ``ekl tail pysam pyjson -n 1`` and ``ekl run pysam --count 1`` to their first printed
  line; baseline: the bare plugin to its first source message (``run`` also starts the
  function and the sink first, so its ratio is a little pessimistic).

Variants alternate round by round so machine noise hits all alike; medians are printed
with the ratio to the baseline. ``--before PYTHON`` also times the ``ekl`` and
``ekl-python`` installed beside another interpreter (e.g. a checkout of the previous
version: ``../main/.venv/bin/python``) in the same rounds, for before/after figures from
one run; with ``--installed``, ``--before-checkout DIR`` times as "before" the same
installed layout built from another checkout (a worktree of main), so both sides start
alike. ``--imports`` adds the slowest imports (``-X importtime``, cumulative) of
``ekl.launcher.cli`` and ``ekl.launcher.pythonbin``. Caches (probe, launch, hosted SDK,
and a bytecode cache through ``PYTHONPYCACHEPREFIX``, as an installed package has its
``.pyc`` files; ``--no-bytecode`` leaves that out) live in a fresh folder and are filled by
one warm-up round, as in steady use.
``--installed`` runs every variant, bare plugin included, on a fresh venv where ekl and
its SDK are plain packages on ``sys.path`` (links to this checkout, as an installed wheel
lays them out) instead of the development venv's editable install, whose import hooks
(``__editable__`` finders, loading pathlib, re and urllib at every interpreter start)
cost every Python start here about 20 ms that a deployment does not pay.
``--before-pip-wrappers`` (with ``--installed``) times as "before" a second such venv whose
commands are pip's ``[project.scripts]`` wrappers (``import re`` before ekl runs), as ekl
installed them before they became scripts.

Run: ``.venv/bin/python bench/bench_startup.py [--rounds 15] [--before PY] [--imports]``
"""

from __future__ import annotations

import argparse
import json
import os
import re
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Callable, Dict, List, Tuple

from ekl.launcher.host.instance import PluginInstance
from ekl.launcher.process import LaunchSpec
from ekl.launcher.settings import HostSettings
from ekuiper import protocol
from ekuiper.protocol import FuncMeta, Meta

REPO = Path(__file__).resolve().parent.parent
PYSAM = REPO / "examples" / "pysam"
BIN = Path(sys.executable).parent
EKL = str(BIN / "ekl")
EKL_PYTHON = str(BIN / "ekl-python")
PYTHON = sys.executable

#: What pip writes for a ``[project.scripts]`` entry point (``import re`` included, before
#: ekl runs): ``--pip-wrappers`` installs the commands this way, as ekl did before it
#: shipped them as scripts.
PIP_WRAPPER = """#!{python}
# -*- coding: utf-8 -*-
import re
import sys
from ekl.launcher.commands import {func}
if __name__ == '__main__':
    sys.argv[0] = re.sub(r'(-script\\.pyw|\\.exe)?$', '', sys.argv[0])
    sys.exit({func}())
"""


def script_files(repo: Path = REPO) -> List[Path]:
    """``script-files`` of ``repo``'s pyproject.toml: the commands, as pip installs them."""
    text = (repo / "pyproject.toml").read_text()
    listed = text.split("script-files = [", 1)[1].split("]", 1)[0]
    return [repo / m.group(1) for m in re.finditer(r'"([^"]+)"', listed)]


def installed_venv(root: str, pip_wrappers: bool = False,
                   repo: Path = REPO) -> Tuple[str, str, str]:
    """(python, ekl, ekl-python) of a venv laid out as an installed ekl is: the packages as
    plain folders on ``sys.path`` (links into this checkout), the commands as pip installs
    them (the script with the interpreter on its first line; or, with ``pip_wrappers``,
    pip's entry-point wrapper), and the development venv's other packages (psutil,
    orjson...) through a path file, so no editable-install hook runs at interpreter start.
    ``repo``: the checkout whose packages and scripts it links (another one's: a baseline
    in the same layout)."""
    venv = Path(root) / "installed"
    base = getattr(sys, "_base_executable", sys.executable)
    subprocess.run([base, "-m", "venv", "--without-pip", str(venv)], check=True)
    site = next(venv.glob("lib/python*/site-packages"))
    tree = venv / "ekl-tree"
    (tree / "ekl").mkdir(parents=True)  # a namespace package, as installed
    (tree / "ekl" / "launcher").symlink_to(repo / "launcher")
    (tree / "ekl" / "envs").symlink_to(repo / "envs")
    (tree / "ekuiper").symlink_to(repo / "sdk" / "ekuiper")
    dev_site = [p for p in sys.path if p.endswith("site-packages")]
    (site / "ekl-installed.pth").write_text("\n".join([str(tree), *dev_site]) + "\n")
    py = str(venv / "bin" / "python")
    for src in script_files(repo):
        f = venv / "bin" / src.name
        if pip_wrappers:
            f.write_text(PIP_WRAPPER.format(python=py, func=src.name.replace("-", "_")))
        else:
            body = src.read_text().split("\n", 1)[1]
            f.write_text(f"#!{py}\n{body}")
        f.chmod(0o755)
    return py, str(venv / "bin" / "ekl"), str(venv / "bin" / "ekl-python")
FAST_SOURCE = {"interval": 0.001}


def plugin_copy(root: str) -> Path:
    dest = Path(root) / "pysam"
    shutil.copytree(PYSAM, dest, ignore=shutil.ignore_patterns("__pycache__"))
    return dest


def host(python_bin: str, ipc: str, folder: Path, env: Dict[str, str]) -> PluginInstance:
    """eKuiper's side: the plugin started as eKuiper starts it, sockets in ``ipc``."""
    spec = LaunchSpec("pysam", (python_bin, "-u", str(folder / "pysam.py"),
                                protocol.encode_portable_config(1000)), str(folder),
                      dict(env, EKUIPER_IPC_DIR=ipc))
    return PluginInstance(spec, HostSettings(ipc_dir=ipc), ipc_dir=ipc, control_dir=ipc)


def hosted(python_bin: str, ipc: str, folder: Path, env: Dict[str, str],
           work: str) -> Tuple[float, float]:
    """(start to handshake, start to the first answer of ``work``) in seconds."""
    inst = host(python_bin, ipc, folder, env)
    try:
        t0 = time.perf_counter()
        inst.start_process()
        t_hs = time.perf_counter() - t0
        if work == "command":
            inst.start_function("revert")
        elif work == "call":
            inst.start_function("revert").exec(["abc"], FuncMeta("bench", "call", 0, 0))
        else:
            stream = inst.start_source("pyjson", Meta("bench", "src", 0), "", FAST_SOURCE)
            stream.recv(10)
        return t_hs, time.perf_counter() - t0
    finally:
        inst.close()


def first_line(argv: List[str], env: Dict[str, str]) -> float:
    """Seconds from spawning ``argv`` to its first line on stdout."""
    t0 = time.perf_counter()
    p = subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=env,
                         stdin=subprocess.DEVNULL)
    try:
        assert p.stdout is not None
        line = p.stdout.readline()
        took = time.perf_counter() - t0
        if not line:
            raise SystemExit(f"{argv}: no output; stderr: {p.stderr.read().decode()[-2000:]}"
                             if p.stderr else "")
        return took
    finally:
        p.terminate()
        p.wait(30)
        for s in (p.stdout, p.stderr):
            if s is not None:
                s.close()


def import_report(top: int, env: Dict[str, str], python: str = sys.executable) -> str:
    out = []
    for label, code in (("ekl (import ekl.launcher.cli)", "import ekl.launcher.cli"),
                        ("ekl-python (import ekl.launcher.pythonbin)",
                         "import ekl.launcher.pythonbin")):
        for _ in range(2):  # the first run fills the bytecode cache; the second is reported
            cp = subprocess.run([python, "-X", "importtime", "-c", code], env=env,
                                capture_output=True, text=True, check=True)
        rows = []
        for ln in cp.stderr.splitlines():
            m = re.match(r"import time:\s+(\d+) \|\s+(\d+) \|(\s*)(\S+)", ln)
            if m:
                rows.append((int(m.group(2)), len(m.group(3)), m.group(4)))
        total = sum(c for c, depth, _ in rows if depth == 1)
        out.append(f"\n{python}\n{label}: {total / 1000:.1f} ms of imports; the slowest "
                   f"(cumulative):")
        out += [f"  {c / 1000:7.1f} ms  {name}" for c, _d, name in sorted(rows, reverse=True)[:top]]
    return "\n".join(out) + "\n"


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--rounds", type=int, default=15)
    ap.add_argument("--imports", action="store_true", help="also print -X importtime summaries")
    ap.add_argument("--json", metavar="FILE", help="write the medians (ms) to FILE")
    ap.add_argument("--no-bytecode", action="store_true",
                    help="leave PYTHONDONTWRITEBYTECODE as it is: every start compiles")
    ap.add_argument("--before", metavar="PYTHON",
                    help="also time the ekl and ekl-python installed beside PYTHON")
    ap.add_argument("--installed", action="store_true",
                    help="run every variant on a venv laid out as an installed ekl (no "
                         "editable-install hooks at interpreter start)")
    ap.add_argument("--before-checkout", metavar="DIR",
                    help="with --installed: time as 'before' the same layout built from the "
                         "checkout in DIR (e.g. a worktree of main), in the same rounds")
    ap.add_argument("--before-pip-wrappers", action="store_true",
                    help="with --installed: time as 'before' the same layout with the commands "
                         "installed as pip's entry-point wrappers (import re first)")
    a = ap.parse_args()
    global PYTHON, EKL, EKL_PYTHON
    root = tempfile.mkdtemp(prefix="eklb-")
    if a.installed:
        PYTHON, EKL, EKL_PYTHON = installed_venv(root)
        if a.before_pip_wrappers:
            os.mkdir(os.path.join(root, "wrapped"))
            a.before = installed_venv(os.path.join(root, "wrapped"), pip_wrappers=True)[0]
        elif a.before_checkout:
            os.mkdir(os.path.join(root, "before"))
            a.before = installed_venv(os.path.join(root, "before"),
                                      repo=Path(a.before_checkout).resolve())[0]
    elif a.before_pip_wrappers or a.before_checkout:
        ap.error("--before-pip-wrappers and --before-checkout need --installed")
    env = dict(os.environ, EKL_STATUS_DIR=root, EKL_CACHE_DIR=os.path.join(root, "cache"))
    env.pop("PYTHONPATH", None)
    if not a.no_bytecode:
        # An installed ekl (and SDK) has .pyc files compiled at install time; a development
        # checkout under PYTHONDONTWRITEBYTECODE recompiles every module on every start.
        # Every process here (bare plugin included) gets one private bytecode cache.
        env.pop("PYTHONDONTWRITEBYTECODE", None)
        env["PYTHONPYCACHEPREFIX"] = os.path.join(root, "pycache")
    names = ["bare_hs", "bare_cmd", "relay_hs", "relay_cmd", "bare_call", "call", "bare_src",
             "tail", "run"]
    if a.before:
        names += ["before_relay_hs", "before_relay_cmd", "before_call", "before_tail",
                  "before_run"]
    r: Dict[str, List[float]] = {k: [] for k in names}
    try:
        folder = plugin_copy(root)
        ipc = os.path.join(root, "ipc")
        os.mkdir(ipc, 0o700)
        tgt = str(folder)
        jobs: List[Callable[[], None]] = []

        def bare_cmd() -> None:
            hs, cmd = hosted(PYTHON, ipc, folder, env, "command")
            r["bare_hs"].append(hs)
            r["bare_cmd"].append(cmd)

        def relay_cmd() -> None:
            hs, cmd = hosted(EKL_PYTHON, ipc, folder, env, "command")
            r["relay_hs"].append(hs)
            r["relay_cmd"].append(cmd)

        jobs += [bare_cmd, relay_cmd]
        jobs.append(lambda: r["bare_call"].append(hosted(PYTHON, ipc, folder, env,
                                                         "call")[1]))
        jobs.append(lambda: r["call"].append(first_line([EKL, "-q", "call", tgt, "revert",
                                                         '"abc"'], env)))
        jobs.append(lambda: r["bare_src"].append(hosted(PYTHON, ipc, folder, env,
                                                        "source")[1]))
        cfg = json.dumps(FAST_SOURCE)
        jobs.append(lambda: r["tail"].append(first_line([EKL, "-q", "tail", tgt, "pyjson",
                                                         "-n", "1", "--config", cfg], env)))
        jobs.append(lambda: r["run"].append(first_line([EKL, "-q", "run", tgt, "--count", "1",
                                                        "--config", cfg], env)))
        if a.before:
            bdir = Path(a.before).parent
            b_ekl, b_py = str(bdir / "ekl"), str(bdir / "ekl-python")

            def before_relay() -> None:
                hs, cmd = hosted(b_py, ipc, folder, env, "command")
                r["before_relay_hs"].append(hs)
                r["before_relay_cmd"].append(cmd)

            jobs.append(before_relay)
            jobs.append(lambda: r["before_call"].append(first_line(
                [b_ekl, "-q", "call", tgt, "revert", '"abc"'], env)))
            jobs.append(lambda: r["before_tail"].append(first_line(
                [b_ekl, "-q", "tail", tgt, "pyjson", "-n", "1", "--config", cfg], env)))
            jobs.append(lambda: r["before_run"].append(first_line(
                [b_ekl, "-q", "run", tgt, "--count", "1", "--config", cfg], env)))
        for job in jobs:  # warm-up: caches (probe, launch, hosted SDK, .pyc) as in steady use
            job()
        for k in r:
            r[k].clear()
        for i in range(a.rounds):
            order = jobs if i % 2 == 0 else list(reversed(jobs))
            for job in order:
                job()
        imports_text = ""
        if a.imports:
            imports_text = import_report(12, env, PYTHON)
            if a.before:
                imports_text += import_report(12, env, a.before)
    finally:
        shutil.rmtree(root, ignore_errors=True)
    med = {k: statistics.median(v) * 1000 for k, v in r.items()}
    print(f"python {sys.version.split()[0]}, {a.rounds} rounds, medians; ratio = variant / "
          f"the bare plugin doing the same work, same run; bytecode cache "
          f"{'as the environment says' if a.no_bytecode else 'on'}; "
          f"{'installed layout' if a.installed else 'editable install'} ({PYTHON})")
    rows = [
        ("bare plugin: start to handshake", "bare_hs", None),
        ("bare plugin: start to first command answered", "bare_cmd", None),
        ("ekl-python: start to handshake (the relay's)", "relay_hs", "bare_hs"),
        ("ekl-python: start to first command answered", "relay_cmd", "bare_cmd"),
        ("bare plugin: start to function result", "bare_call", None),
        ("ekl call: start to printed result", "call", "bare_call"),
        ("bare plugin: start to first source message", "bare_src", None),
        ("ekl tail -n 1: start to first line", "tail", "bare_src"),
        ("ekl run --count 1: start to first line", "run", "bare_src"),
    ]
    if a.before:
        rows += [
            ("before: ekl-python, start to handshake", "before_relay_hs", "bare_hs"),
            ("before: ekl-python, first command answered", "before_relay_cmd", "bare_cmd"),
            ("before: ekl call", "before_call", "bare_call"),
            ("before: ekl tail -n 1", "before_tail", "bare_src"),
            ("before: ekl run --count 1", "before_run", "bare_src"),
        ]
    for label, k, base in rows:
        ratio = f"   {med[k] / med[base]:.2f}x" if base else ""
        print(f"{label:<48} {med[k]:7.1f} ms{ratio}")
    if a.json:
        Path(a.json).write_text(json.dumps(med, indent=1))
    if a.imports:
        print(imports_text)


if __name__ == "__main__":
    main()
