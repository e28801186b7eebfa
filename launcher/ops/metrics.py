"""Prometheus metrics for every plugin ekl runs, read from the status files at scrape time.

``ekl metrics --listen HOST:PORT`` serves ``/metrics``; ``ekl metrics --textfile PATH``
writes the same exposition for node_exporter's textfile collector. Both read the status
files (``ekl supervise --status-file`` and the per-plugin files ``ekl-python`` writes in
``$EKL_STATUS_DIR``) when asked, through a custom collector: nothing is cached, so a scrape
shows what ``ekl status --json`` would, and the metrics process holds no state to lose.

Metric names and units follow Prometheus conventions (base units, ``_total`` counters,
``_seconds``, ``_bytes``); docs/deploy.md lists them. Every value an outsider controls is
bounded: the size of a status file, the number of plugins and symbol rows per scrape, the
length of each label value, the number of concurrent HTTP connections and their duration.

prometheus_client is an optional dependency (``pip install 'ekuiper-launcher[metrics]'``);
it is imported when a scrape or a server is asked for, so the rest of ekl runs without it.
"""

from __future__ import annotations

import errno
import logging
import math
import re
import signal
import socket
import threading
import time
from http.server import BaseHTTPRequestHandler, HTTPServer
from socketserver import ThreadingMixIn
from typing import Any, Callable, Dict, Iterable, Iterator, List, Mapping, Optional, Sequence, Tuple

from ekuiper.sigevent import SignalEvent

from ..errors import EklError
from ..fsafe import atomic_write
from ..supervise.status import read_status, status_dir_candidates, status_entries

log = logging.getLogger("ekl")

STATES = ("STOPPED", "STARTING", "RUNNING", "BACKOFF", "STOPPING", "EXITED", "FATAL")
SYMBOL_COUNTERS = ("messages", "records", "acks", "calls", "errors")
#: bounds on what a status file (written by any local process) can make us emit
MAX_PLUGINS = 1000
MAX_SYMBOL_ROWS = 256
MAX_REASONS = 32
MAX_LABEL_CHARS = 200
#: the HTTP server: concurrent connections, and seconds a client may take per request
MAX_CONNECTIONS = 16
REQUEST_TIMEOUT_S = 10.0
DEFAULT_INTERVAL_S = 15.0

StatusList = List[Dict[str, Any]]
Collect = Callable[[], StatusList]
_Pair = Tuple[Mapping[str, Any], Mapping[str, Any]]


def collector_for(sources: Optional[Sequence[str]] = None) -> Collect:
    """A ``collect()`` that reads ``sources`` (default: ``$EKL_STATUS_DIR``) at every call."""
    srcs = list(sources) if sources else status_dir_candidates()
    return lambda: [read_status(f, follow) for f, follow in status_entries(srcs)]


# --- building metric families --------------------------------------------------------------


def _num(v: Any) -> Optional[float]:
    if isinstance(v, bool) or not isinstance(v, (int, float)):
        return None
    f = float(v)
    return f if math.isfinite(f) else None


def _counter(v: Any) -> Optional[float]:
    f = _num(v)
    return f if f is not None and f >= 0 else None


def _label(v: Any) -> str:
    s = "" if v is None else str(v)
    return s if len(s) <= MAX_LABEL_CHARS else s[: MAX_LABEL_CHARS - 1] + "…"


_REASON_WORD = re.compile(r"[^a-z0-9_]+")


def reason_class(reason: Any) -> str:
    """A restart reason's class for a label: ``memory: rss 300 MB ...`` -> ``memory``."""
    word = str(reason or "unknown").split(":", 1)[0].strip().lower()
    word = _REASON_WORD.sub("_", word).strip("_")[:40]
    return word or "unknown"


def _plugins(statuses: Iterable[Mapping[str, Any]]) -> Tuple[List[_Pair], int]:
    """(status, plugin) pairs, one per plugin name (a live launcher's, else the newest), and
    how many duplicates were dropped: the same name twice would be an invalid exposition."""
    pairs = [(s, p) for s in statuses for p in (s.get("plugins") or [])
             if isinstance(p, Mapping) and isinstance(p.get("name"), str) and p.get("name")]
    pairs.sort(key=lambda sp: (not sp[0].get("launcher_alive", True),
                               -(_num(sp[0].get("written_at")) or 0.0)))
    seen: Dict[str, _Pair] = {}
    dup = 0
    for s, p in pairs:
        name = _label(p["name"])
        if name in seen:
            dup += 1
        elif len(seen) < MAX_PLUGINS:
            seen[name] = (s, p)
    return [seen[n] for n in sorted(seen)], dup


def families(statuses: StatusList, now: Optional[float] = None) -> Iterator[Any]:
    """The metric families for a list of status dicts (as :func:`read_status` returns)."""
    from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily

    now = time.time() if now is None else now
    G, C = GaugeMetricFamily, CounterMetricFamily

    src_up = G("ekl_status_file_up", "1 when the status file was read and is ekl's, else 0",
               labels=["source"])
    src_age = G("ekl_status_file_age_seconds", "Seconds since the launcher last wrote the "
                "status file; grows when the launcher is wedged", labels=["source"])
    launcher = G("ekl_launcher_up", "1 while the launcher process that writes the status "
                 "file is alive", labels=["source", "mode"])
    for s in statuses:
        src = _label(s.get("source", ""))
        src_up.add_metric([src], 0.0 if s.get("error") else 1.0)
        if s.get("error"):
            continue
        w = _num(s.get("written_at"))
        if w is not None:
            src_age.add_metric([src], max(0.0, now - w))
        launcher.add_metric([src, _label(s.get("mode") or "supervise")],
                            1.0 if s.get("launcher_alive", True) else 0.0)
    yield src_up
    yield src_age
    yield launcher

    pairs, dup = _plugins(statuses)
    yield G("ekl_status_duplicate_plugins", "Plugins found in more than one status file; "
            "only one (a live launcher's, else the newest) is reported", value=float(dup))

    P = ["plugin"]
    info = G("ekl_plugin_info", "Where each plugin runs: 1, with the interpreter, environment, "
             "containment and launcher mode as labels",
             labels=P + ["interpreter", "environment", "containment", "mode"])
    up = G("ekl_plugin_up", "1 while the plugin is RUNNING, else 0", labels=P)
    state = G("ekl_plugin_state", "1 for the plugin's current state, 0 for the others "
              "(supervisord's states)", labels=P + ["state"])
    restarts = C("ekl_plugin_restarts", "Restarts by reason class since the launcher started",
                 labels=P + ["reason"])
    start_time = G("ekl_plugin_start_time_seconds", "Unix time the running plugin process "
                   "started", labels=P)
    uptime = G("ekl_plugin_uptime_seconds", "Seconds since the running plugin started; 0 when "
               "not running", labels=P)
    rss = G("ekl_plugin_resident_memory_bytes", "Resident memory of the plugin's whole "
            "process tree", labels=P)
    cpu = C("ekl_plugin_cpu_seconds", "CPU time (user+system) of the plugin's process tree",
            labels=P)
    procs = G("ekl_plugin_processes", "Processes in the plugin's tree", labels=P)
    threads = G("ekl_plugin_threads", "Threads in the plugin's tree", labels=P)
    files = G("ekl_plugin_open_files", "Files open in the plugin's tree", labels=P)
    symbols = G("ekl_plugin_symbols", "Symbols the plugin serves right now, by type",
                labels=P + ["type"])
    S = P + ["symbol", "kind", "rule"]
    sym_c = {k: C(f"ekl_symbol_{k}", help_, labels=S) for k, help_ in (
        ("messages", "Messages a source emitted"),
        ("records", "Records a sink received"),
        ("acks", "Acknowledgements a sink sent"),
        ("calls", "Calls a function served"),
        ("errors", "Errors a symbol reported (function errors, sink ack errors, source errors)"))}
    last_err = G("ekl_symbol_last_error_timestamp_seconds", "Unix time of the symbol's last "
                 "error", labels=S)
    busy = G("ekl_symbol_busy_seconds", "Seconds the symbol's current call or record has been "
             "running; 0 when idle. A steady climb is a hang", labels=S)

    for s, p in pairs:
        name = _label(p["name"])
        st = str(p.get("state") or "")
        info.add_metric([name, _label(p.get("interpreter")), _label(p.get("environment")),
                         _label(p.get("containment")), _label(s.get("mode") or "supervise")], 1.0)
        up.add_metric([name], 1.0 if st == "RUNNING" else 0.0)
        for one in STATES:
            state.add_metric([name, one], 1.0 if st == one else 0.0)
        by_reason = p.get("restarts_by_reason")
        if isinstance(by_reason, Mapping):
            merged: Dict[str, float] = {}
            for r, n in list(by_reason.items())[:MAX_REASONS]:
                v = _counter(n)
                if v is not None:
                    merged[reason_class(r)] = merged.get(reason_class(r), 0.0) + v
            for r, v in sorted(merged.items()):
                restarts.add_metric([name, r], v)
        else:  # older status: only the total is known
            v = _counter(p.get("restarts"))
            if v is not None:
                restarts.add_metric([name, "unknown"], v)
        running = st == "RUNNING"
        t0 = _num(p.get("started_at"))
        if running and t0 is not None:
            start_time.add_metric([name], t0)
        for fam, key in ((uptime, "uptime"), (rss, "rss"), (procs, "processes"),
                         (threads, "threads"), (files, "open_files")):
            v = _num(p.get(key))
            fam.add_metric([name], v if (v is not None and running) else 0.0)
        v = _counter(p.get("cpu_seconds"))
        if v is not None:
            cpu.add_metric([name], v)
        per_type: Dict[str, int] = {}
        syms = p.get("symbols")
        for sym in syms[:MAX_SYMBOL_ROWS] if isinstance(syms, list) else []:
            if isinstance(sym, Mapping):
                t = _label(sym.get("type") or "unknown")
                per_type[t] = per_type.get(t, 0) + 1
        for t, n in sorted(per_type.items()):
            symbols.add_metric([name, t], float(n))
        stats = p.get("symbol_stats")
        seen = set()
        for row in stats[:MAX_SYMBOL_ROWS] if isinstance(stats, list) else []:
            if not isinstance(row, Mapping):
                continue
            labels = [name, _label(row.get("symbol")), _label(row.get("kind")), _label(row.get("rule"))]
            key = tuple(labels)
            if key in seen:  # the same label set twice would make the exposition invalid
                continue
            seen.add(key)
            for k in SYMBOL_COUNTERS:
                v = _counter(row.get(k))
                if v is not None:
                    sym_c[k].add_metric(labels, v)
            t = _num(row.get("last_error_at"))
            if t is not None:
                last_err.add_metric(labels, t)
            b = _num(row.get("busy_since"))
            busy.add_metric(labels, max(0.0, now - b) if (b is not None and running) else 0.0)

    yield from (info, up, state, restarts, start_time, uptime, rss, cpu, procs, threads, files,
                symbols, *sym_c.values(), last_err, busy)


class StatusCollector:
    """A prometheus_client collector that calls ``collect_status()`` at every scrape."""

    def __init__(self, collect_status: Collect) -> None:
        self.collect_status = collect_status

    def collect(self) -> Iterator[Any]:
        yield from families(self.collect_status())

    def describe(self) -> List[Any]:
        return []  # names depend on the files: do not let the registry call collect() early


def registry_for(collect: Collect) -> Any:
    """A registry holding only our collector (not the metrics process's own gc/process)."""
    from prometheus_client import CollectorRegistry

    reg = CollectorRegistry(auto_describe=False)
    reg.register(StatusCollector(collect))
    return reg


def exposition(collect: Collect, accept: Optional[str] = None) -> Tuple[bytes, str]:
    """(body, content type) for one scrape; ``accept`` picks OpenMetrics when asked for."""
    from prometheus_client.exposition import choose_encoder

    encoder, content_type = choose_encoder(accept or "")
    return encoder(registry_for(collect)), content_type


# --- textfile ------------------------------------------------------------------------------


def write_textfile(path: str, collect: Collect) -> None:
    """Atomically replace ``path`` (node_exporter reads only ``*.prom`` files in its folder)."""
    from prometheus_client.exposition import generate_latest

    body = generate_latest(registry_for(collect))
    try:  # 0644: node_exporter usually runs as another user
        atomic_write(path, body, mode=0o644, fsync=True)
    except OSError as e:
        raise EklError(f"--textfile {path}: cannot write it: {e.strerror or e}; give a file in "
                       f"node_exporter's --collector.textfile.directory that this user can write") from None


# --- HTTP server ---------------------------------------------------------------------------


def parse_listen(listen: str) -> Tuple[str, int]:
    """``HOST:PORT``, ``[V6]:PORT`` or ``:PORT`` (every interface)."""
    m = re.fullmatch(r"\[([0-9A-Fa-f:.%\w]+)\]:(\d{1,5})|([^:\[\]\s]*):(\d{1,5})", listen or "")
    if not m:
        raise EklError(f"--listen {listen}: not HOST:PORT; use e.g. 127.0.0.1:9464, 0.0.0.0:9464 "
                       f"or [::1]:9464")
    host = m.group(1) if m.group(1) is not None else (m.group(3) or "0.0.0.0")
    port = int(m.group(2) or m.group(4))
    if port > 65535:
        raise EklError(f"--listen {listen}: port {port} is above 65535; use e.g. 127.0.0.1:9464")
    return host, port


class _Server(ThreadingMixIn, HTTPServer):
    daemon_threads = True
    allow_reuse_address = True  # TIME_WAIT from a previous run must not block a restart

    def __init__(self, addr: Tuple[str, int], handler: Any, family: int) -> None:
        self.address_family = family
        self.slots = threading.BoundedSemaphore(MAX_CONNECTIONS)
        super().__init__(addr, handler)

    def process_request(self, request: Any, client_address: Any) -> None:
        if not self.slots.acquire(blocking=False):  # bounded: a flood waits in the backlog
            self.shutdown_request(request)
            return
        try:
            super().process_request(request, client_address)
        except Exception:
            self.slots.release()
            raise

    def process_request_thread(self, request: Any, client_address: Any) -> None:
        try:
            super().process_request_thread(request, client_address)
        finally:
            self.slots.release()

    def handle_error(self, request: Any, client_address: Any) -> None:
        log.debug("metrics: request from %s failed", client_address, exc_info=True)


def _handler(collect: Collect) -> Any:
    class Handler(BaseHTTPRequestHandler):
        timeout = REQUEST_TIMEOUT_S  # a client that sends nothing cannot hold a slot forever
        server_version = "ekl-metrics"

        def _reply(self, code: int, body: bytes, ctype: str) -> None:
            self.send_response(code)
            self.send_header("Content-Type", ctype)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            if self.command != "HEAD":
                self.wfile.write(body)

        def do_GET(self) -> None:  # noqa: N802 -- http.server's naming
            path = self.path.split("?", 1)[0]
            if path == "/metrics":
                try:
                    body, ctype = exposition(collect, self.headers.get("Accept"))
                except Exception as e:  # noqa: BLE001 -- one bad scrape never ends the server
                    log.debug("metrics: scrape failed", exc_info=True)
                    self._reply(500, f"ekl metrics: scrape failed: {e}\n".encode(), "text/plain")
                    return
                self._reply(200, body, ctype)
            elif path in ("/", "/healthz"):
                self._reply(200, b"ekl metrics: scrape /metrics\n", "text/plain; charset=utf-8")
            else:
                self._reply(404, b"not found; scrape /metrics\n", "text/plain; charset=utf-8")

        do_HEAD = do_GET  # noqa: N815

        def log_message(self, format: str, *args: Any) -> None:  # noqa: A002
            log.debug("metrics: %s %s", self.address_string(), format % args)

    return Handler


class MetricsServer:
    """``/metrics`` over HTTP on ``listen``; :meth:`close` stops it and frees the port."""

    def __init__(self, listen: str, collect: Collect) -> None:
        host, port = parse_listen(listen)
        self.listen = listen
        try:
            infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)
        except socket.gaierror as e:
            raise EklError(f"--listen {listen}: cannot resolve host {host!r}: {e.strerror}; use an "
                           f"IP address such as 127.0.0.1") from None
        family = infos[0][0]
        try:
            self.httpd = _Server((host, port), _handler(collect), family)
        except OSError as e:
            if e.errno == errno.EADDRINUSE:
                raise EklError(f"--listen {listen}: address already in use; stop what listens "
                               f"there or pick another port") from None
            raise EklError(f"--listen {listen}: cannot listen there: {e.strerror or e}; use an "
                           f"address of this host and a free port") from None
        self.address: Tuple[str, int] = self.httpd.server_address[:2]  # the real port for :0
        self._thread: Optional[threading.Thread] = None

    @property
    def url(self) -> str:
        host, port = self.address
        return f"http://{'[' + host + ']' if ':' in host else host}:{port}/metrics"

    def start(self) -> MetricsServer:
        self._thread = threading.Thread(target=self.httpd.serve_forever, kwargs={"poll_interval": 0.2},
                                        name="ekl-metrics", daemon=True)
        self._thread.start()
        return self

    def close(self) -> None:
        if self._thread is not None:
            self.httpd.shutdown()
            self._thread.join(5)
        self.httpd.server_close()

    def __enter__(self) -> MetricsServer:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def serve(listen: str, collect: Collect) -> MetricsServer:
    """Start serving in a thread; the caller closes it (or uses it as a context manager)."""
    return MetricsServer(listen, collect).start()


def main(listen: Optional[str] = None, textfile: Optional[str] = None,
         status_sources: Optional[Sequence[str]] = None, interval: Optional[float] = None,
         stop: Optional[SignalEvent] = None) -> int:
    """``ekl metrics``: serve, or write the textfile once (or every ``interval`` seconds).

    Runs until SIGTERM/SIGINT (or ``stop`` is set) when serving or repeating; exit 0.
    """
    if not listen and not textfile:
        raise EklError("ekl metrics: give --listen HOST:PORT (serve /metrics) or --textfile "
                       "PATH (for node_exporter), or both")
    if interval is not None and not (interval > 0):
        raise EklError(f"--interval {interval}: must be a number of seconds > 0")
    collect = collector_for(status_sources)
    if textfile and not listen and interval is None:
        write_textfile(textfile, collect)
        return 0
    # set by the signal handlers below while this thread waits on it: a SignalEvent
    # (ekuiper.sigevent says why a threading.Event there can hang the process)
    stop = stop or SignalEvent()
    server = serve(listen, collect) if listen else None
    old: Dict[int, Any] = {}
    if threading.current_thread() is threading.main_thread():
        for sig in (signal.SIGTERM, signal.SIGINT):
            old[sig] = signal.signal(sig, lambda *_: stop.set())
    try:
        if server is not None:
            log.info("metrics: serving %s", server.url)
        every = interval or DEFAULT_INTERVAL_S
        while True:
            if textfile:
                try:
                    write_textfile(textfile, collect)
                except EklError as e:  # a full disk now and then must not stop the server
                    log.warning("%s", e)
            if stop.wait(every):
                break
    finally:
        for sig, h in old.items():
            signal.signal(sig, h)
        if server is not None:
            server.close()
    return 0
