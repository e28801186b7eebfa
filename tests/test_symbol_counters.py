"""Per-symbol counters: the SDK counts, the ping answer carries them, the status file keeps
them, and ``ekl status -s`` and ``ekl metrics`` show them (issue 14, item 3)."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

from conftest import short_id, wait_for
from ekl.launcher.cli.operate import render_table
from ekl.launcher.host.control import parse_ping_reply
from ekl.launcher.ops.metrics import collector_for
from ekl.launcher.settings import SupervisorSettings
from ekl.launcher.supervise.status import status_document
from ekl.launcher.supervise.watcher import Watcher
from ekuiper.protocol import Meta


def stats(w: Watcher) -> dict:
    return {(s["kind"], s["symbol"]): s for s in w.status()["symbol_stats"] or []}


def test_counters_travel_from_the_sdk_to_status_metrics_and_table(host, plugin_copy,
                                                                  tmp_path: Path) -> None:
    inst = host.start(plugin_copy("compat"), start=False)
    w = Watcher(inst, SupervisorSettings(health_interval_s=0.2, probe_timeout_s=3))
    w.start(fail_fast=True)
    try:
        echo, boom = inst.start_function("echo"), inst.start_function("boom")
        for i in range(5):
            echo.exec([i])
        for i in range(2):
            try:
                boom.exec([i])
            except Exception:
                pass
        rule = f"r{short_id()}"
        stream = inst.start_source("counter", Meta(rule, "src", 0), "", {"interval": 0.01})
        for _ in range(3):
            stream.recv(5)
        out = tmp_path / "sink.txt"
        writer = inst.start_sink("collector", Meta(rule, "snk", 0),
                                 {"requireAck": True, "out": str(out)})
        writer.write({"a": 1})
        writer.write({"a": 2})
        try:
            writer.write({"a": "bad"})
        except Exception:
            pass

        def counted() -> bool:
            st = stats(w)
            return (st.get(("func", "echo"), {}).get("calls") == 5
                    and st.get(("func", "boom"), {}).get("errors") == 2
                    and st.get(("source", "counter"), {}).get("messages", 0) >= 3
                    and st.get(("sink", "collector"), {}).get("records") == 3)
        assert wait_for(counted, timeout=10), stats(w)
        st = stats(w)
        assert st[("func", "boom")]["calls"] == 2
        assert "boom" in st[("func", "boom")]["last_error"]
        assert st[("func", "boom")]["last_error_at"] > 0
        sink = st[("sink", "collector")]
        assert sink["acks"] == 3 and sink["errors"] == 1 and sink["last_error"] == "bad record"
        assert st[("source", "counter")]["rule"] == rule

        doc = status_document([w.status()], "supervise")
        table = render_table(doc, width=None, symbols=True)
        assert "calls 5" in table and "errors 2" in table and "acks 3" in table
        f = tmp_path / "status.json"
        f.write_text(json.dumps(doc))
        from prometheus_client.exposition import generate_latest

        from ekl.launcher.ops.metrics import registry_for

        text = generate_latest(registry_for(collector_for([str(f)]))).decode()
        lines = text.splitlines()

        def value(metric: str, symbol: str) -> float:
            return next(float(ln.rsplit(" ", 1)[1]) for ln in lines
                        if ln.startswith(metric + "{") and f'symbol="{symbol}"' in ln)
        assert value("ekl_symbol_calls_total", "echo") == 5
        assert value("ekl_symbol_errors_total", "boom") == 2
        assert value("ekl_symbol_messages_total", "counter") >= 3
        assert value("ekl_symbol_acks_total", "collector") == 3
    finally:
        w.stop()


def test_the_host_bounds_what_a_ping_answer_may_put_in_the_status() -> None:
    evil = {"ok": True, "symbols": [{"kind": "func", "symbol": "x" * 10, "calls": 1,
                                     "last_error": "e" * 100_000, "nested": {"a": [1]},
                                     "k" * 100: 1}] * 2000}
    syms = parse_ping_reply(json.dumps(evil).encode()[:1024 * 1024], "p") if \
        len(json.dumps(evil)) <= 1024 * 1024 else None
    if syms is None:  # too big: not read as liveness at all
        small = dict(evil, symbols=evil["symbols"][:5])
        syms = parse_ping_reply(json.dumps(small).encode(), "p")
    assert len(syms) <= 512
    assert all(len(s["last_error"]) <= 4096 and "nested" not in s and "k" * 100 not in s
               for s in syms)


def test_official_sdk_plain_ok_has_no_counters() -> None:
    assert parse_ping_reply(b"ok", "p") is None
    table = render_table(status_document([{"name": "p", "state": "RUNNING", "symbols": [
        {"symbol": "s", "type": "source", "meta": {"ruleId": "r"}}], "symbol_stats": None}],
        "supervise"), width=None, symbols=True)
    assert "source:s" in table and "rule r" in table


def test_status_dash_s_from_the_cli(tmp_path: Path) -> None:
    f = tmp_path / "st.json"
    doc = status_document([{"name": "p", "state": "RUNNING", "pid": 1, "uptime": 1, "restarts": 0,
                            "rss": 0, "cpu_percent": 0, "symbols": [
                                {"symbol": "f", "type": "func", "meta": {"ruleId": ""}}],
                            "symbol_stats": [{"kind": "func", "symbol": "f", "rule": "",
                                              "calls": 7, "errors": 1, "last_error": "oops"}]}],
                          "supervise")
    doc["launcher_pid"] = 1  # pid 1 lives: the file is not stale
    f.write_text(json.dumps(doc))
    cp = subprocess.run([sys.executable, "-m", "ekl.launcher.cli", "status", "-s",
                         "--status-file", str(f)], capture_output=True, text=True, timeout=30)
    assert cp.returncode == 0, cp.stderr
    assert "calls 7" in cp.stdout and "last error: oops" in cp.stdout
