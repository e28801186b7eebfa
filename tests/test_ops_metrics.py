"""ekl.launcher.ops.metrics: Prometheus exposition of the status files, over real HTTP.

A real ``ekl supervise`` writes the status file the first test scrapes; the other tests
write status files the way the supervisor will once the new fields (symbol_stats,
cpu_seconds, restarts_by_reason, containment) land, and hostile ones.
"""

from __future__ import annotations

import json
import math
import os
import signal
import socket
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request
from pathlib import Path
from typing import Any, Dict, List, Tuple

import pytest
from prometheus_client.parser import text_string_to_metric_families

from conftest import wait_for
from ekl.launcher.errors import EklError
from ekl.launcher.ops import metrics
from ekl.launcher.supervise import status

Samples = Dict[Tuple[str, Tuple[Tuple[str, str], ...]], float]


def parse(text: str) -> Samples:
    out: Samples = {}
    for fam in text_string_to_metric_families(text):
        for s in fam.samples:
            key = (s.name, tuple(sorted(s.labels.items())))
            assert key not in out, f"duplicate sample {key}"
            out[key] = s.value
    return out


def value(samples: Samples, name: str, **labels: str) -> float:
    want = set(labels.items())
    found = [v for (n, ls), v in samples.items() if n == name and want <= set(ls)]
    assert len(found) == 1, f"{name}{labels}: {len(found)} samples"
    return found[0]


def scrape(url: str, accept: str = "") -> Tuple[str, str]:
    req = urllib.request.Request(url, headers={"Accept": accept} if accept else {})
    with urllib.request.urlopen(req, timeout=10) as r:
        return r.read().decode(), r.headers["Content-Type"]


def read_json(path: Path) -> Any:
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError):
        return None


def plugin(name: str, **kw: Any) -> Dict[str, Any]:
    p = {"name": name, "state": "RUNNING", "pid": os.getpid(), "started_at": time.time() - 60,
         "uptime": 60.0, "restarts": 0, "last_restarts": [], "last_exit": None,
         "fatal_reason": None, "rss": 50 * 1048576, "cpu_percent": 1.5, "threads": 4,
         "open_files": 3, "processes": 2, "symbols": [], "interpreter": sys.executable,
         "environment": "venv:/x"}
    p.update(kw)
    return p


def status_doc(plugins: List[Dict[str, Any]], pid: int = 0, mode: str = "supervise") -> Dict[str, Any]:
    return {"version": 1, "launcher_pid": pid or os.getpid(), "written_at": time.time(),
            "mode": mode, "plugins": plugins}


def test_a_real_supervisor_scraped_over_http(plugin_copy, tmp_path):
    status = tmp_path / "status.json"
    folder = plugin_copy("pysam", "pysam")  # its code names itself pysam; ipc is private
    name = folder.name
    proc = subprocess.Popen([sys.executable, "-m", "ekl.launcher.cli", "supervise", str(folder),
                             "--status-file", str(status), "--health-interval", "0.3"],
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    server = metrics.serve("127.0.0.1:0", metrics.collector_for([str(status)]))
    try:
        assert wait_for(lambda: (s := read_json(status)) and s["plugins"]  # written before any start
                        and s["plugins"][0]["state"] == "RUNNING" and s["plugins"][0]["rss"] > 0,
                        timeout=30), proc.poll()
        text, ctype = scrape(server.url)
        assert ctype.startswith("text/plain; version=0.0.4")
        m = parse(text)
        assert value(m, "ekl_plugin_up", plugin=name) == 1
        assert value(m, "ekl_plugin_state", plugin=name, state="RUNNING") == 1
        assert sum(value(m, "ekl_plugin_state", plugin=name, state=s) for s in metrics.STATES) == 1
        assert value(m, "ekl_plugin_resident_memory_bytes", plugin=name) > 1e6
        assert value(m, "ekl_plugin_restarts_total", plugin=name, reason="unknown") == 0
        assert value(m, "ekl_plugin_uptime_seconds", plugin=name) >= 0
        assert value(m, "ekl_status_file_up", source=str(status)) == 1
        assert value(m, "ekl_launcher_up", source=str(status)) == 1

        # Read at scrape time: a crash shows in the next scrape, with no state in between.
        os.kill(read_json(status)["plugins"][0]["pid"], signal.SIGKILL)
        assert wait_for(lambda: value(parse(scrape(server.url)[0]), "ekl_plugin_restarts_total",
                                      plugin=name, reason="unknown") == 1, timeout=15)
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(20) == 0
        m = parse(scrape(server.url)[0])
        assert value(m, "ekl_plugin_up", plugin=name) == 0
        assert value(m, "ekl_plugin_state", plugin=name, state="STOPPED") == 1
        assert value(m, "ekl_launcher_up", source=str(status)) == 0
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
        server.close()
    # the port is free again at once
    with socket.socket() as s:
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        s.bind(server.address)


def test_symbol_counters_cpu_reasons_and_openmetrics(tmp_path):
    now = time.time()
    p = plugin("pyb", cpu_seconds=12.5, containment="cgroup",
               restarts=5, restarts_by_reason={"crash": 3, "hang: call 6 s": 1, "memory": 1},
               symbols=[{"symbol": "pyjson", "type": "source", "meta": {}},
                        {"symbol": "revert", "type": "function", "meta": {}}],
               symbol_stats=[
                   {"symbol": "pyjson", "kind": "source", "rule": "r1", "messages": 1000,
                    "errors": 2, "last_error": "boom", "last_error_at": now - 5, "busy_since": None},
                   {"symbol": "revert", "kind": "function", "rule": "r1", "calls": 990,
                    "errors": 1, "busy_since": now - 7.0},
                   {"symbol": "print", "kind": "sink", "rule": "r2", "records": 40, "acks": 39},
               ])
    (tmp_path / "pyb.json").write_text(json.dumps(status_doc([p], mode="ekl-python")))
    with metrics.serve("127.0.0.1:0", metrics.collector_for([str(tmp_path)])) as server:
        m = parse(scrape(server.url)[0])
        om, ctype = scrape(server.url, accept="application/openmetrics-text; version=1.0.0")
    assert ctype.startswith("application/openmetrics-text")
    assert om.rstrip().endswith("# EOF")
    assert value(m, "ekl_plugin_cpu_seconds_total", plugin="pyb") == 12.5
    assert value(m, "ekl_plugin_restarts_total", plugin="pyb", reason="crash") == 3
    assert value(m, "ekl_plugin_restarts_total", plugin="pyb", reason="hang") == 1
    assert value(m, "ekl_plugin_info", plugin="pyb", containment="cgroup", mode="ekl-python") == 1
    assert value(m, "ekl_symbol_messages_total", plugin="pyb", symbol="pyjson", kind="source",
                 rule="r1") == 1000
    assert value(m, "ekl_symbol_calls_total", symbol="revert") == 990
    assert value(m, "ekl_symbol_records_total", symbol="print") == 40
    assert value(m, "ekl_symbol_acks_total", symbol="print", rule="r2") == 39
    assert value(m, "ekl_symbol_errors_total", symbol="pyjson") == 2
    assert abs(value(m, "ekl_symbol_last_error_timestamp_seconds", symbol="pyjson") - (now - 5)) < 1
    assert 6.5 < value(m, "ekl_symbol_busy_seconds", symbol="revert") < 60
    assert value(m, "ekl_symbol_busy_seconds", symbol="pyjson") == 0
    assert value(m, "ekl_plugin_symbols", plugin="pyb", type="function") == 1


def test_hostile_and_stale_status_files_still_give_a_valid_exposition(tmp_path):
    d = tmp_path / "st"
    d.mkdir()
    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    dead.wait()
    evil = 'x"y\\z\n{a="b"}' + "L" * 5000
    (d / "garbage.json").write_bytes(b"\x00\xff{not json")
    (d / "list.json").write_text("[1, 2]")
    (d / "dir.json").mkdir()
    os.mkfifo(d / "fifo.json")  # nobody writes it: the scrape must not hang
    with open(d / "huge.json", "wb") as f:  # sparse: cheap to make, too big to be ours
        f.truncate(status.MAX_STATUS_BYTES + 10)
    (tmp_path / "target.json").write_text(json.dumps(status_doc([plugin("viasymlink")])))
    os.symlink(tmp_path / "target.json", d / "link.json")
    (d / "stale.json").write_text(json.dumps(status_doc([plugin("gone")], pid=dead.pid)))
    (d / "types.json").write_text(json.dumps(status_doc([
        plugin(evil, state=7, rss="big", uptime=-1, threads=None,
               restarts=-4, cpu_seconds="x", symbols={"a": 1},
               symbol_stats=[{"symbol": evil, "kind": None, "rule": 1, "messages": -1,
                              "calls": True, "errors": 1e308}, "junk", None] +
               [{"symbol": f"s{i}", "kind": "sink", "rule": "r", "records": i} for i in range(400)]),
        {"name": None}, "junk", 5,
        plugin("dup"),
    ])))
    (d / "dup.json").write_text(json.dumps(status_doc([plugin("dup", rss=1)], pid=dead.pid)))
    (d / "nan.json").write_text('{"plugins": [{"name": "n", "state": "RUNNING", "rss": NaN, '
                                '"uptime": Infinity, "started_at": -Infinity}], "launcher_pid": 1}')
    with metrics.serve("127.0.0.1:0", metrics.collector_for([str(d)])) as server:
        m = parse(scrape(server.url)[0])
    for bad in ("garbage.json", "list.json", "dir.json", "huge.json", "link.json", "fifo.json"):
        assert value(m, "ekl_status_file_up", source=str(d / bad)) == 0, bad
    assert value(m, "ekl_plugin_up", plugin="gone") == 0  # its launcher is dead: not RUNNING
    assert value(m, "ekl_plugin_state", plugin="gone", state="STOPPED") == 1
    assert value(m, "ekl_status_duplicate_plugins") == 1
    assert value(m, "ekl_plugin_resident_memory_bytes", plugin="dup") == 50 * 1048576  # the live one
    names = {dict(ls).get("plugin") for (n, ls), _ in m.items() if n == "ekl_plugin_up"}
    long_name = [n for n in names if n and n.startswith('x"y')]
    assert len(long_name) == 1 and len(long_name[0]) <= metrics.MAX_LABEL_CHARS
    rows = [ls for (n, ls), _ in m.items() if n == "ekl_symbol_records_total"]
    assert len(rows) <= metrics.MAX_SYMBOL_ROWS
    assert all(math.isfinite(v) for v in m.values())
    assert value(m, "ekl_plugin_resident_memory_bytes", plugin="n") == 0  # NaN dropped
    # named directly, a symlinked status file is read (/run/ekl/status.json -> ...)
    assert metrics.read_status(str(d / "link.json"))["plugins"][0]["name"] == "viasymlink"


def test_port_in_use_and_bad_listen_values_are_one_line():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        s.listen()
        listen = f"127.0.0.1:{s.getsockname()[1]}"
        with pytest.raises(EklError) as e:
            metrics.serve(listen, lambda: [])
        assert str(e.value) == (f"--listen {listen}: address already in use; stop what listens "
                                f"there or pick another port")
    for bad in ("9464", "abc", "127.0.0.1:99999", "host:", "[::1]9464", "a b:1", ""):
        with pytest.raises(EklError) as e:
            metrics.parse_listen(bad)
        assert "\n" not in str(e.value) and str(e.value).startswith(f"--listen {bad}:")
    assert metrics.parse_listen(":9464") == ("0.0.0.0", 9464)
    assert metrics.parse_listen("[::1]:80") == ("::1", 80)
    with pytest.raises(EklError, match="cannot resolve host"):
        metrics.serve("no-such-host.invalid:0", lambda: [])


def test_server_survives_a_failing_collect_bounds_connections_and_404s():
    calls = {"n": 0}

    def collect() -> List[Dict[str, Any]]:
        calls["n"] += 1
        if calls["n"] == 1:
            raise RuntimeError("disk on fire")
        return [dict(status_doc([plugin("ok")]), source="mem")]

    with metrics.serve("127.0.0.1:0", collect) as server:
        with pytest.raises(urllib.error.HTTPError) as e:
            scrape(server.url)
        assert e.value.code == 500
        assert value(parse(scrape(server.url)[0]), "ekl_plugin_up", plugin="ok") == 1
        with pytest.raises(urllib.error.HTTPError) as e:
            scrape(server.url.replace("/metrics", "/nope"))
        assert e.value.code == 404
        idle = [socket.create_connection(server.address) for _ in range(metrics.MAX_CONNECTIONS)]
        try:
            assert wait_for(lambda: server.httpd.slots._value == 0, timeout=5)
            extra = socket.create_connection(server.address)
            extra.settimeout(5)
            assert extra.recv(10) == b""  # refused at once, not queued behind the idle ones
            extra.close()
        finally:
            for c in idle:
                c.close()
        assert wait_for(lambda: server.httpd.slots._value == metrics.MAX_CONNECTIONS, timeout=5)
        assert value(parse(scrape(server.url)[0]), "ekl_plugin_up", plugin="ok") == 1


def test_textfile_is_atomic_and_unwritable_targets_are_one_line(tmp_path):
    src = tmp_path / "s.json"
    src.write_text(json.dumps(status_doc([plugin(f"p{i}") for i in range(20)])))
    out = tmp_path / "prom" / "ekl.prom"
    out.parent.mkdir()
    collect = metrics.collector_for([str(src)])
    metrics.write_textfile(str(out), collect)
    assert oct(out.stat().st_mode & 0o777) == "0o644"
    assert value(parse(out.read_text()), "ekl_plugin_up", plugin="p7") == 1

    stop = threading.Event()
    seen: List[int] = []

    def reader() -> None:
        while not stop.is_set():
            seen.append(len(parse(out.read_text())))  # never a half-written file

    t = threading.Thread(target=reader)
    t.start()
    try:
        for _ in range(30):
            metrics.write_textfile(str(out), collect)
    finally:
        stop.set()
        t.join()
    assert seen and len(set(seen)) == 1
    assert sorted(os.listdir(out.parent)) == ["ekl.prom"]  # no temporary files left

    with pytest.raises(EklError, match=r"^--textfile /nonexistent/x.prom: cannot write it: "):
        metrics.write_textfile("/nonexistent/x.prom", collect)
    (tmp_path / "isdir.prom").mkdir()
    with pytest.raises(EklError, match="cannot write it"):
        metrics.write_textfile(str(tmp_path / "isdir.prom"), collect)
    assert not [n for n in os.listdir(tmp_path) if n.endswith(".tmp")]


def test_main_runs_until_sigterm_and_checks_its_arguments(tmp_path):
    with pytest.raises(EklError, match="give --listen HOST:PORT"):
        metrics.main()
    with pytest.raises(EklError, match="--interval 0: must be"):
        metrics.main(textfile=str(tmp_path / "a.prom"), interval=0)
    src = tmp_path / "s.json"
    src.write_text(json.dumps(status_doc([plugin("m")])))
    assert metrics.main(textfile=str(tmp_path / "once.prom"), status_sources=[str(src)]) == 0
    assert "ekl_plugin_up" in (tmp_path / "once.prom").read_text()

    with socket.socket() as s:  # a free port for the child
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    prom = tmp_path / "loop.prom"
    code = ("import sys; from ekl.launcher.ops.metrics import main; "
            f"sys.exit(main(listen='127.0.0.1:{port}', textfile={str(prom)!r}, "
            f"status_sources=[{str(src)!r}], interval=0.2))")
    proc = subprocess.Popen([sys.executable, "-c", code], stderr=subprocess.PIPE, text=True)
    try:
        url = f"http://127.0.0.1:{port}/metrics"

        def up() -> bool:
            try:
                return value(parse(scrape(url)[0]), "ekl_plugin_up", plugin="m") == 1
            except OSError:
                return False
        assert wait_for(up, timeout=20), proc.poll()
        assert wait_for(prom.is_file, timeout=5)
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(10) == 0
        assert "Traceback" not in proc.stderr.read()
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    with socket.socket() as s:
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        s.bind(("127.0.0.1", port))
