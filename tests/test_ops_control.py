"""ekl.launcher.ops.control and .health: the control socket and the status exit codes.

The launcher side of a control request (restarting a plugin and waiting for its state) is
the supervisor's; here a small in-test launcher plays it over the real Unix socket, with
real status files pointing at it.
"""

from __future__ import annotations

import io
import json
import os
import socket
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any, Dict, Iterator, List, Mapping, Optional, Sequence

import pytest

from conftest import wait_for
from ekl.launcher.errors import EklError
from ekl.launcher.ops import control, health


class FakeLauncher:
    """Plugins with states; control ops change them after a short delay, like a restart."""

    def __init__(self, folder: str, names: Sequence[str]) -> None:
        self.states: Dict[str, str] = {n: "RUNNING" for n in names}
        self.calls: List[Any] = []
        self.fail = False
        self.gate: Optional[threading.Event] = None  # set: requests wait here (a slow restart)
        self.server = control.ControlServer(folder, self.handle, lambda: list(self.states),
                                            io_timeout=0.5).start()

    def handle(self, op: str, names: Sequence[str], timeout: float) -> List[Mapping[str, Any]]:
        self.calls.append((op, list(names), timeout))
        if self.fail:
            raise RuntimeError("watcher table is locked")
        if self.gate is not None:
            self.gate.wait(30)
        time.sleep(0.05)
        target = {"restart": "RUNNING", "start": "RUNNING", "reset": "RUNNING", "stop": "STOPPED"}[op]
        out = []
        for n in names:
            if n == "broken" and op != "stop":
                self.states[n] = "FATAL"
                out.append({"plugin": n, "ok": False, "state": "FATAL",
                            "error": "6 starts within 60 s"})
            else:
                self.states[n] = target
                out.append({"plugin": n, "ok": True, "state": target})
        return out

    def status(self, source: Path) -> None:
        source.write_text(json.dumps({
            "version": 1, "launcher_pid": os.getpid(), "written_at": time.time(),
            "mode": "supervise", "control_socket": self.server.path,
            "plugins": [{"name": n, "state": s} for n, s in self.states.items()]}))


@pytest.fixture
def folder() -> Iterator[str]:
    d = tempfile.mkdtemp(prefix="eklc-", dir="/tmp")
    os.rmdir(d)  # the server creates it 0700 itself
    yield d
    if os.path.isdir(d):
        for n in os.listdir(d):
            os.unlink(os.path.join(d, n))
        os.rmdir(d)


def test_restart_stop_start_reset_over_the_socket(folder, tmp_path):
    fl = FakeLauncher(folder, ["pysam", "other", "broken"])
    st = tmp_path / "status.json"
    try:
        assert oct(os.stat(folder).st_mode & 0o777) == "0o700"
        assert oct(os.stat(fl.server.path).st_mode & 0o777) == "0o600"
        fl.status(st)
        out, err = io.StringIO(), io.StringIO()
        assert control.main("restart", ["pysam"], status_sources=[str(st)], out=out, err=err) == 0
        assert out.getvalue() == "pysam: RUNNING\n" and err.getvalue() == ""
        assert fl.calls[-1] == ("restart", ["pysam"], control.DEFAULT_TIMEOUT_S)
        out = io.StringIO()
        assert control.main("stop", ["other", "other"], status_sources=[str(st)], out=out,
                            timeout=7) == 0
        assert fl.calls[-1] == ("stop", ["other"], 7) and fl.states["other"] == "STOPPED"
        out, err = io.StringIO(), io.StringIO()
        assert control.main("start", all_plugins=True, status_sources=[str(st)], out=out,
                            err=err) == 1  # broken goes FATAL: exit 1, one line naming it
        assert err.getvalue() == "ekl: start broken: 6 starts within 60 s\n"
        assert "other: RUNNING" in out.getvalue()
        reply = control.request(fl.server.path, "reset", ["pysam"])
        assert reply == {"ok": True, "results": [{"plugin": "pysam", "ok": True, "state": "RUNNING"}]}
    finally:
        fl.server.close()
    assert not os.path.exists(fl.server.path)


def test_bad_names_and_stale_launchers_are_one_line(folder, tmp_path):
    fl = FakeLauncher(folder, ["pysam"])
    st = tmp_path / "status.json"
    fl.status(st)
    try:
        with pytest.raises(EklError) as e:
            control.main("restart", ["nope"], status_sources=[str(st)])
        assert str(e.value) == "no plugin nope in the status files; known: pysam"
        reply = control.request(fl.server.path, "restart", ["nope"])
        assert reply == {"ok": False, "error": "no plugin nope under this launcher; it runs: pysam"}
        assert fl.calls == []  # refused before the launcher acts
        with pytest.raises(EklError, match="name the plugins, or give --all"):
            control.main("stop", [], status_sources=[str(st)])
        with pytest.raises(EklError, match="not a control command"):
            control.main("kill", ["pysam"], status_sources=[str(st)])
    finally:
        fl.server.close()
    # the launcher is gone but its status file says it is alive (pid reuse): socket missing
    with pytest.raises(EklError) as e:
        control.main("restart", ["pysam"], status_sources=[str(st)])
    assert str(e.value) == (f"control socket {fl.server.path} does not exist; the launcher is gone "
                            f"(stale status file)")
    # a socket file nobody listens on (a SIGKILLed launcher)
    os.makedirs(folder, exist_ok=True)
    dead = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    dead.bind(fl.server.path)
    dead.close()
    with pytest.raises(EklError, match="refuses connections; the launcher that made it is gone"):
        control.request(fl.server.path, "restart", ["pysam"])
    # a status file whose launcher pid is dead
    gone = subprocess.Popen([sys.executable, "-c", "pass"])
    gone.wait()
    data = json.loads(st.read_text())
    data["launcher_pid"] = gone.pid
    st.write_text(json.dumps(data))
    with pytest.raises(EklError, match=rf"plugin pysam: its launcher \(pid {gone.pid}\) is gone; stale"):
        control.main("restart", ["pysam"], status_sources=[str(st)])
    with pytest.raises(EklError, match="no running launcher in the status files"):
        control.main("restart", all_plugins=True, status_sources=[str(st)])
    data["launcher_pid"] = os.getpid()
    del data["control_socket"]
    st.write_text(json.dumps(data))
    with pytest.raises(EklError, match="has no control socket"):
        control.main("restart", ["pysam"], status_sources=[str(st)])


def test_hostile_clients_do_not_stop_the_server(folder):
    fl = FakeLauncher(folder, ["pysam"])
    path = fl.server.path

    def raw(data: bytes) -> Dict[str, Any]:
        with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as s:
            s.settimeout(10)
            s.connect(path)
            try:
                s.sendall(data)
            except OSError:
                pass
            buf = b""
            while not buf.endswith(b"\n"):
                chunk = s.recv(65536)
                if not chunk:
                    break
                buf += chunk
            return json.loads(buf)

    try:
        assert raw(b"garbage\n")["error"].startswith("not a control request")
        assert raw(b'{"op": "format-disk"}\n')["error"].startswith("not a control request; op must")
        assert "longer than" in raw(b"x" * (control.MAX_REQUEST_BYTES + 10))["error"]
        assert raw(b'{"op": "stop", "plugins": "pysam"}\n')["error"].startswith("plugins must be")
        assert raw(b'{"op": "stop", "plugins": ["pysam"], "timeout": -1}\n')["error"].startswith(
            "timeout must be")
        assert raw(b'{"op": "stop", "plugins": [1]}\n')["error"].startswith("plugins must be")
        # silent clients time out without blocking the others
        idle = [socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) for _ in range(3)]
        for s in idle:
            s.connect(path)
        assert control.request(path, "restart", ["pysam"])["ok"]
        for s in idle:
            s.settimeout(5)
            assert json.loads(s.recv(4096))["error"] == "no request within 0.5 s"
            s.close()
        # a client that trickles its request is cut off at the deadline, not per byte
        with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as s:
            s.connect(path)
            s.settimeout(5)
            t0 = time.monotonic()
            for ch in b'{"op": "stop", ':
                try:
                    s.sendall(bytes([ch]))
                except OSError:  # the server gave up on us: its answer is waiting
                    break
                time.sleep(0.05)
            assert json.loads(s.recv(4096))["error"] == "no request within 0.5 s"
            assert time.monotonic() - t0 < 2.0
        # a handler that raises becomes an error reply; the next request works
        fl.fail = True
        assert control.request(path, "restart", ["pysam"])["error"] == (
            "restart failed inside the launcher: watcher table is locked")
        fl.fail = False
        assert control.request(path, "restart", ["pysam"])["ok"]
        # more than MAX_CLIENTS at once: the extra ones are told the launcher is busy
        fl.gate = threading.Event()
        hold = [socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) for _ in range(control.MAX_CLIENTS)]
        for s in hold:
            s.connect(path)
            s.sendall(b'{"op": "restart", "plugins": ["pysam"]}\n')  # each waits in the gate
        assert wait_for(lambda: fl.server._slots._value == 0, timeout=5)
        assert control.request(path, "restart", ["pysam"])["error"].startswith("launcher busy")
        fl.gate.set()
        for s in hold:
            s.settimeout(10)
            assert json.loads(s.recv(4096))["ok"]
            s.close()
        fl.gate = None
        assert wait_for(lambda: control.request(path, "stop", ["pysam"]).get("ok"), timeout=5)
    finally:
        fl.server.close()


def test_other_users_cannot_reach_the_socket(folder):
    fl = FakeLauncher(folder, ["pysam"])
    code = ("import os, socket, sys; os.setgid(65534); os.setuid(65534); "
            "s = socket.socket(socket.AF_UNIX); "
            "\ntry: s.connect(sys.argv[1])\nexcept PermissionError: print('denied')")
    try:
        if os.geteuid() != 0:
            pytest.skip("needs root to become another user")
        cp = subprocess.run([sys.executable, "-I", "-c", code, fl.server.path], capture_output=True,
                            text=True, timeout=30)
        assert cp.stdout.strip() == "denied", cp.stderr
    finally:
        fl.server.close()


def test_an_unsafe_control_folder_is_refused(tmp_path):
    d = tmp_path / "shared"
    d.mkdir(mode=0o755)
    os.chmod(d, 0o755)
    with pytest.raises(EklError, match=r"must be a folder of this user with mode 0700 \(it is 0o755\)"):
        control.ControlServer(str(d), lambda *a: [], lambda: [])
    long = tmp_path / ("x" * 120)
    with pytest.raises(EklError, match="unix socket paths are limited to 107 bytes"):
        control.ControlServer(str(long), lambda *a: [], lambda: [])


def test_many_concurrent_requests_each_get_their_answer(folder):
    fl = FakeLauncher(folder, [f"p{i}" for i in range(6)])
    results: List[Dict[str, Any]] = []
    lock = threading.Lock()

    def one(i: int) -> None:
        r = control.request(fl.server.path, "restart", [f"p{i % 6}"])
        with lock:
            results.append(r)
    try:
        threads = [threading.Thread(target=one, args=(i,)) for i in range(control.MAX_CLIENTS)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
    finally:
        fl.server.close()
    assert len(results) == control.MAX_CLIENTS
    assert all(r.get("ok") or r.get("error", "").startswith("launcher busy") for r in results)


# --- health -------------------------------------------------------------------------------

def _doc(*plugins: Mapping[str, Any], pid: int = 0) -> Dict[str, Any]:
    return {"version": 1, "launcher_pid": pid or os.getpid(), "written_at": time.time(),
            "plugins": list(plugins)}


def test_status_exit_codes_follow_the_lsb_convention(tmp_path):
    run = {"name": "a", "state": "RUNNING"}
    back = {"name": "b", "state": "BACKOFF", "last_exit": "exited with code 1"}
    assert health.exit_code([_doc(run)]) == 0
    assert health.exit_code([_doc(run, back)]) == 3
    assert health.exit_code([]) == 4 and health.exit_code([{"error": "x", "plugins": []}]) == 4
    assert health.check([_doc(run, back)], ["a"]) == (0, [])
    assert health.check([_doc(run, back)], ["a", "b"]) == (3, ["plugin b is BACKOFF: exited with code 1"])
    assert health.check([_doc(run)], ["zz"]) == (4, ["no status for plugin zz; the status files know: a"])
    assert health.check([_doc(run, back)], ["zz", "b"])[0] == 3


def test_check_is_silent_on_success_and_reads_real_files(tmp_path):
    gone = subprocess.Popen([sys.executable, "-c", "pass"])
    gone.wait()
    d = tmp_path / "st"
    d.mkdir()
    (d / "a.json").write_text(json.dumps(_doc({"name": "a", "state": "RUNNING"})))
    (d / "b.json").write_text(json.dumps(_doc({"name": "b", "state": "RUNNING"}, pid=gone.pid)))
    err = io.StringIO()
    assert health.main_check(["a"], [str(d)], err=err) == 0 and err.getvalue() == ""
    assert health.main_check(["a", "b"], [str(d)], err=err) == 3  # b's launcher is dead
    assert err.getvalue() == "ekl: plugin b is STOPPED\n"
    err = io.StringIO()
    assert health.main_check(["a"], [str(tmp_path / "none")], err=err) == 4
    assert err.getvalue() == "ekl: no status for plugin a; the status files know: none\n"


def test_the_cli_verbs_parse_and_run(folder, tmp_path, capsys):
    import argparse

    from ekl.launcher.ops import cli as ops_cli

    p = argparse.ArgumentParser(prog="ekl")
    sub = p.add_subparsers()
    ops_cli.register(sub)
    status = sub.add_parser("status")
    status.add_argument("--status-file", metavar="F")  # as the existing verb has it
    ops_cli.add_status_options(status)
    fl = FakeLauncher(folder, ["pysam"])
    st = tmp_path / "status.json"
    fl.status(st)
    try:
        args = p.parse_args(["restart", "pysam", "--status-file", str(st), "--timeout", "9"])
        assert args.func(args) == 0 and fl.calls[-1] == ("restart", ["pysam"], 9.0)
        assert capsys.readouterr().out == "pysam: RUNNING\n"
        prom = tmp_path / "x.prom"
        args = p.parse_args(["metrics", "--textfile", str(prom), "--status-file", str(st)])
        assert args.func(args) == 0 and 'ekl_plugin_up{plugin="pysam"} 1.0' in prom.read_text()
        args = p.parse_args(["status", "--status-file", str(st), "--check", "pysam"])
        assert ops_cli.cmd_status_check(args) == 0
        assert capsys.readouterr() == ("", "")
    finally:
        fl.server.close()
