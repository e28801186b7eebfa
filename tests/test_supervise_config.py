"""``ekl supervise --config`` as a service: plugins and pipelines from a TOML file, SIGHUP
reloads (added start, removed stop, changed restart, unchanged untouched, a bad file keeps
the running set), and systemd's notify protocol played with a real datagram socket."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path
from typing import Dict, Iterator, List

import pytest

from conftest import make_plugin, short_id, wait_for
from ekl.launcher.process import is_gone

REPO = Path(__file__).resolve().parent.parent


def plugins_in(status: Path) -> Dict[str, dict]:
    try:
        return {p["name"]: p for p in json.loads(status.read_text())["plugins"]}
    except (OSError, ValueError):
        return {}


class Service:
    def __init__(self, tmp: Path, ipc_dir: str) -> None:
        self.tmp, self.ipc_dir = tmp, ipc_dir
        self.status = tmp / "status.json"
        self.config = tmp / "supervise.toml"
        self.log = tmp / "supervise.log"
        self.proc = None

    def write(self, plugins: Dict[str, Path], pipelines: str = "", extra: str = "") -> None:
        lines = [f'[supervise]\nstatus_file = "{self.status}"\n', "[defaults]",
                 f'ipc_dir = "{self.ipc_dir}"', "health_interval_s = 0.5", extra]
        for name, folder in plugins.items():
            lines += [f"[plugins.{name}]", f'path = "{folder}"']
        self.config.write_text("\n".join(lines) + "\n" + pipelines)

    def start(self, env: Dict[str, str] = None) -> None:
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "ekl.launcher.cli", "supervise", "--config", str(self.config)],
            stdout=subprocess.DEVNULL, stderr=open(self.log, "w"), env=env)

    def close(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.terminate()
            self.proc.wait(30)


@pytest.fixture
def service(tmp_path: Path, ipc_dir: str) -> Iterator[Service]:
    s = Service(tmp_path, ipc_dir)
    yield s
    s.close()


def _pysam(tmp: Path, name: str) -> Path:
    import shutil

    dest = tmp / name
    shutil.copytree(REPO / "examples" / "pysam", dest,
                    ignore=shutil.ignore_patterns("__pycache__", "test_*"))
    os.replace(dest / "pysam.json", dest / f"{name}.json")
    main = dest / "pysam.py"
    main.write_text(main.read_text().replace('PluginConfig("pysam"', f'PluginConfig("{name}"'))
    return dest


def test_pipelines_run_and_reload_changes_only_what_changed(service: Service,
                                                            tmp_path: Path) -> None:
    a, b, c = (f"sv{short_id()}" for _ in range(3))
    folders = {a: _pysam(tmp_path, a), b: make_plugin(tmp_path, "compat", b)}
    flow = (f'[pipelines.flow]\nplugin = "{a}"\nsource = "pyjson"\nconfig = {{ interval = 0.05 }}'
            f'\nfunction = "revert"\nfield = "name"\nsink = "print"\n')
    service.write(folders, flow)
    service.start()
    assert wait_for(lambda: len(plugins_in(service.status)) == 2 and all(
        p["state"] == "RUNNING" for p in plugins_in(service.status).values()), timeout=30)
    # the pipeline's symbols run in plugin a under its own rule, and data flows to the sink
    assert wait_for(lambda: plugins_in(service.status)[a]["refCount"].get("ekl_flow") == 2,
                    timeout=15), plugins_in(service.status)[a]
    assert wait_for(lambda: '"revert": "nosjyp"' in service.log.read_text() or
                    '"revert":"nosjyp"' in service.log.read_text(), timeout=15)
    pid_a = plugins_in(service.status)[a]["pid"]
    pid_b = plugins_in(service.status)[b]["pid"]
    # reload: b changed (a setting), c added, a unchanged
    folders[c] = make_plugin(tmp_path, "compat", c)
    service.write(folders, flow, extra="")
    text = service.config.read_text().replace(f'[plugins.{b}]', f'[plugins.{b}]\nmax_rss_mb = 900')
    service.config.write_text(text)
    service.proc.send_signal(signal.SIGHUP)
    assert wait_for(lambda: c in plugins_in(service.status) and
                    plugins_in(service.status)[c]["state"] == "RUNNING" and
                    plugins_in(service.status)[b]["pid"] not in (None, pid_b), timeout=30)
    assert plugins_in(service.status)[a]["pid"] == pid_a  # untouched
    # reload: c removed
    del folders[c]
    text = service.config.read_text()
    text = text.replace(f'[plugins.{c}]\npath = "{tmp_path / c}"\n', "")
    service.config.write_text(text)
    service.proc.send_signal(signal.SIGHUP)
    assert wait_for(lambda: c not in plugins_in(service.status), timeout=30)
    # a bad file: refused, one line per problem, the running set kept
    service.config.write_text(text + "\n[plugins.bad]\nrestart = 'sometimes'\n")
    service.proc.send_signal(signal.SIGHUP)
    assert wait_for(lambda: "reload refused" in service.log.read_text(), timeout=15)
    assert set(plugins_in(service.status)) == {a, b}
    assert all(p["state"] == "RUNNING" for p in plugins_in(service.status).values())
    service.proc.terminate()
    assert service.proc.wait(30) == 0
    assert all(p["state"] == "STOPPED" for p in plugins_in(service.status).values())
    assert "Traceback" not in service.log.read_text()


def test_sd_notify_ready_status_watchdog_and_stopping(service: Service, tmp_path: Path) -> None:
    name = f"sd{short_id()}"
    service.write({name: make_plugin(tmp_path, "compat", name)})
    path = f"/tmp/ekl-sd-{short_id()}.sock"
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    sock.bind(path)
    sock.settimeout(0.2)
    got: List[str] = []
    try:
        env = dict(os.environ, NOTIFY_SOCKET=path, WATCHDOG_USEC="1000000")
        service.start(env)
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline and not (
                "READY=1" in got and sum(m == "WATCHDOG=1" for m in got) >= 2):
            try:
                got.extend(sock.recv(4096).decode().splitlines())
            except socket.timeout:
                pass
        assert "READY=1" in got and sum(m == "WATCHDOG=1" for m in got) >= 2, got
        assert any("1 RUNNING" in m for m in got if m.startswith("STATUS=")), got
        service.proc.terminate()
        assert service.proc.wait(30) == 0
        end = time.monotonic() + 5
        while time.monotonic() < end and "STOPPING=1" not in got:
            try:
                got.extend(sock.recv(4096).decode().splitlines())
            except socket.timeout:
                pass
        assert "STOPPING=1" in got
    finally:
        sock.close()
        os.unlink(path)


def test_many_quiet_pipelines_stop_together(service: Service, tmp_path: Path) -> None:
    """SIGTERM with six pipelines whose source is quiet (a message every 30 s): every flow
    is told to stop at once and each notices within ``RECV_SLICE_S`` (0.1 s). They were stopped one
    after the other, each waiting out the source's 1 s check: 5 s for six (20 s for
    twenty, and systemd's stop timeout for ninety)."""
    from ekl.launcher.supervise.pipeline import SOURCE_CHECK_S

    name = f"sv{short_id()}"
    flows = "".join(f'[pipelines.q{i}]\nplugin = "{name}"\nsource = "pyjson"\n'
                    f'config = {{ interval = 30 }}\nsink = "print"\n' for i in range(6))
    service.write({name: _pysam(tmp_path, name)}, flows)
    service.start()
    assert wait_for(lambda: (p := plugins_in(service.status).get(name)) and
                    p["state"] == "RUNNING" and len(p["refCount"]) == 6, timeout=30)
    pid = plugins_in(service.status)[name]["pid"]
    time.sleep(1.5)  # every flow is inside its wait for the quiet source
    t0 = time.monotonic()
    service.proc.send_signal(signal.SIGTERM)
    assert service.proc.wait(30) == 0
    took = time.monotonic() - t0
    assert took < 3 * SOURCE_CHECK_S, f"stopping six quiet pipelines took {took:.1f} s"
    assert wait_for(lambda: is_gone(pid), timeout=5)
