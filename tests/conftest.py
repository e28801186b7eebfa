"""Shared fixtures: private socket folders, plugin copies with unique names, real hosts.

Everything here is real: plugins run as subprocesses, sockets are pynng over ipc://, and
the virtual environments (official SDK, no SDK) are built with venv and this suite's pip. They are
cached under .cache/ in the repository so the suite stays fast after the first run.
"""

from __future__ import annotations

import contextlib
import fcntl
import os
import shutil
import subprocess
import sys
import tempfile
import time
import uuid
from pathlib import Path
from typing import Callable, Iterator, List, Optional, Sequence, Tuple

import pytest

from ekl.launcher.host.instance import PluginInstance
from ekl.launcher.plugin import load
from ekl.launcher.process import is_gone
from ekl.launcher.settings import HostSettings, LaunchOptions
from ekl.launcher.start import prepare
from ekl.launcher.start.resolve import resolve

REPO = Path(__file__).resolve().parent.parent
PLUGINS = REPO / "tests" / "plugins"
EXAMPLES = REPO / "examples"
CACHE = REPO / ".cache"
OFFICIAL_SDK = "ekuiper==2.4.2"


def short_id() -> str:
    return uuid.uuid4().hex[:8]


def wait_for(cond: Callable[[], object], timeout: float = 10.0, interval: float = 0.02) -> bool:
    """Poll ``cond`` until it is true or ``timeout`` passes; the last answer decides."""
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        if cond():
            return True
        time.sleep(interval)
    return bool(cond())


def plugin_procs(folder: Path) -> list:
    """Live processes running the plugin's code in ``folder`` (not ekl or ekl-python)."""
    import psutil

    out = []
    for p in psutil.process_iter(["cmdline", "status"]):
        cmd = p.info["cmdline"] or []
        if p.info["status"] == psutil.STATUS_ZOMBIE:
            continue
        if any(str(folder) in c for c in cmd) and not any(
                os.path.basename(c) in ("ekl", "ekl-python") for c in cmd):
            out.append(p)
    return out


def _plugin_running(folder: str) -> bool:
    """``plugin_procs`` as a bare /proc scan: a few ms, where psutil takes tens under load,
    so a plugin that lives only while ekl loads (an early start killed on a bad status
    folder) is still seen."""
    for pid in os.listdir("/proc"):
        if not pid.isdigit():
            continue
        try:
            with open(f"/proc/{pid}/cmdline", "rb") as f:
                cmd = f.read().decode(errors="replace").split("\0")
            with open(f"/proc/{pid}/stat", "rb") as f:
                state = f.read().rsplit(b")", 1)[1].split()[0]
        except OSError:
            continue
        if state != b"Z" and any(folder in c for c in cmd) and not any(
                os.path.basename(c) in ("ekl", "ekl-python") for c in cmd):
            return True
    return False


def run_watching(argv: List[str], folder: Path, **popen: object) -> Tuple[int, str, bool]:
    """Run ``argv`` to its end: (exit code, stderr, whether the plugin in ``folder`` was
    seen running meanwhile)."""
    proc = subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            **popen)  # type: ignore[call-overload]
    seen = False
    try:
        while proc.poll() is None:
            seen = seen or _plugin_running(str(folder))
            time.sleep(0.001)
        _, err = proc.communicate(timeout=30)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    return proc.returncode, err, seen


@pytest.fixture
def ipc_dir() -> Iterator[str]:
    """A private 0700 socket folder with a short path (Unix sockets: 107 bytes)."""
    d = tempfile.mkdtemp(prefix="eklt-", dir="/tmp")
    yield d
    shutil.rmtree(d, ignore_errors=True)


def make_plugin(root: Path, template: str, name: Optional[str] = None) -> Path:
    """Copy ``tests/plugins/<template>`` (or an example) as plugin ``name``.

    Test plugins take their name from their JSON file, so a copy under a unique name gets
    unique control and function sockets even in /tmp (where the official SDK must live).
    """
    src = PLUGINS / template
    if not src.is_dir():
        src = EXAMPLES / template
    name = name or f"{template}{short_id()}"
    dest = root / name
    shutil.copytree(src, dest, ignore=shutil.ignore_patterns("__pycache__"))
    os.replace(dest / f"{src.name}.json", dest / f"{name}.json")
    return dest


@pytest.fixture
def plugin_copy(tmp_path: Path) -> Callable[..., Path]:
    return lambda template, name=None: make_plugin(tmp_path, template, name)


class Host:
    """Starts plugins under ekl's host and guarantees they are gone afterwards."""

    def __init__(self, ipc_dir: str) -> None:
        self.ipc_dir = ipc_dir
        self.watchers: list = []
        self.instances: List[PluginInstance] = []

    def start(self, folder: Path, python: Optional[str] = None, private_ipc: bool = True,
              start: bool = True, **settings: object) -> PluginInstance:
        manifest = load(folder)
        opts = LaunchOptions(python=python)
        spec = resolve(manifest, opts)
        if not spec.ekl_sdk:
            private_ipc = False
        hs = HostSettings(ipc_dir=self.ipc_dir if private_ipc else "/tmp", **settings)  # type: ignore[arg-type]
        inst = prepare(manifest, opts, hs, spec=spec)
        self.instances.append(inst)
        if start:
            inst.start_process()
        return inst

    def watch(self, folder: Path, settings: dict, fail_fast: bool = True,
              **host_settings: object) -> tuple:
        """The plugin under a Watcher with ``settings`` (SupervisorSettings fields); the
        watcher is stopped when the host closes."""
        from ekl.launcher.settings import SupervisorSettings
        from ekl.launcher.supervise.watcher import Watcher

        inst = self.start(folder, start=False, **host_settings)
        w = Watcher(inst, SupervisorSettings(**settings))
        self.watchers.append(w)
        w.start(fail_fast=fail_fast)
        return w, inst

    def close(self) -> None:
        for w in self.watchers:
            w.stop()
        pids = []
        for inst in self.instances:
            if inst.process and inst.process.popen:
                pids.append(inst.process.popen.pid)
            survivors = inst.close()
            assert not survivors, f"processes survived stop: {survivors}"
        for pid in pids:
            assert is_gone(pid), f"plugin process {pid} still runs"


@pytest.fixture
def host(ipc_dir: str) -> Iterator[Host]:
    h = Host(ipc_dir)
    try:
        yield h
    finally:
        h.close()


# --- cached virtual environments --------------------------------------------------------


@contextlib.contextmanager
def _locked(path: Path) -> Iterator[None]:
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "w") as f:
        fcntl.flock(f, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(f, fcntl.LOCK_UN)


def _pynng_version() -> str:
    import pynng

    return pynng.__version__


def cached_venv(name: str, packages: List[str], no_deps: Sequence[str] = ()) -> Path:
    """A venv under .cache/ with ``packages`` (with their dependencies) and ``no_deps``
    (without theirs); built once, shared by parallel workers, rebuilt when the list changes."""
    tag = f"{name}-py{sys.version_info[0]}{sys.version_info[1]}"
    prefix = CACHE / tag
    python = prefix / "bin" / "python"
    stamp = prefix / ".ready"
    wanted = " ".join(packages) + (" --no-deps " + " ".join(no_deps) if no_deps else "")
    with _locked(CACHE / f"{tag}.lock"):
        if not stamp.is_file() or stamp.read_text() != wanted:
            shutil.rmtree(prefix, ignore_errors=True)
            # No pip inside (ensurepip costs ~10 s a venv): this suite's pip installs into it
            # with --python, so "empty" really holds nothing and a fresh checkout builds faster.
            subprocess.run([sys.executable, "-m", "venv", "--without-pip", str(prefix)],
                           check=True)
            cmd = [sys.executable, "-m", "pip", "--python", str(python), "install", "-q",
                   "--disable-pip-version-check"]
            if packages:
                subprocess.run(cmd + list(packages), check=True)
            if no_deps:
                subprocess.run(cmd + ["--no-deps"] + list(no_deps), check=True)
            stamp.write_text(wanted)
    return python


def official_sdk_python() -> Path:
    """The official SDK's venv (also used by bench/bench_sdk.py); see ``official_python``."""
    return cached_venv("official-sdk", [f"pynng=={_pynng_version()}"], no_deps=[OFFICIAL_SDK])


@pytest.fixture(scope="session")
def official_python() -> str:
    """A venv with the official SDK (PyPI ekuiper 2.4.2) and the same pynng as ours.

    ekuiper 2.4.2 pins pynng==0.8.1; we install our pynng (with its dependencies, cffi
    and sniffio) and then ekuiper without deps, so both SDKs are compared on one pynng.
    """
    return str(official_sdk_python())


@pytest.fixture(scope="session")
def bare_python() -> str:
    """A venv with pynng but no ekuiper SDK: ekl must host its own SDK there."""
    return str(cached_venv("pynng-only", [f"pynng=={_pynng_version()}"]))


@pytest.fixture(scope="session")
def empty_python() -> str:
    """A venv with nothing in it: ekl hosts its SDK, whose native transport needs no pynng."""
    return str(cached_venv("empty", []))


@pytest.fixture(scope="session")
def official_no_pynng_python() -> str:
    """The official SDK without pynng: it cannot run, and ekl must say how to fix that."""
    return str(cached_venv("official-no-pynng", [], no_deps=[OFFICIAL_SDK]))
