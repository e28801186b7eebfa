"""ekl.launcher.ops.logfmt: timestamps, plugin names, JSON lines, per-plugin rotating files."""

from __future__ import annotations

import json
import logging
import os
import re
from pathlib import Path
from typing import Iterator, List

import pytest

from conftest import wait_for
from ekl.launcher.errors import EklError
from ekl.launcher.ops import logfmt

ISO = r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}[+-]\d\d:\d\d"


class ListHandler(logging.Handler):
    def __init__(self) -> None:
        super().__init__()
        self.lines: List[str] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.lines.append(self.format(record))


@pytest.fixture
def logger() -> Iterator[logging.Logger]:
    """ekl's own logger tree ("ekl", "ekl.plugin.NAME"), restored afterwards."""
    lg, plug = logging.getLogger("ekl"), logging.getLogger("ekl.plugin")
    saved = (list(lg.handlers), lg.level, lg.propagate, plug.level)
    lg.handlers[:] = []
    lg.propagate = False
    lg.setLevel(logging.DEBUG)
    plug.setLevel(logging.NOTSET)
    yield lg
    for h in list(lg.handlers):
        lg.removeHandler(h)
        h.close()
    lg.handlers[:], lg.level, lg.propagate = saved[0], saved[1], saved[2]
    plug.setLevel(saved[3])


def capture(lg: logging.Logger, fmt: str, **kw: int) -> ListHandler:
    h = ListHandler()
    h.setFormatter(logfmt.make_formatter(fmt, **kw))
    lg.addHandler(h)
    return h


def plugin_logger(plugin: str) -> logging.Logger:
    """Where the launcher logs a plugin's output (process.py: ``ekl.plugin.NAME``)."""
    return logging.getLogger(f"{logfmt.PLUGIN_LOGGER_PREFIX}{plugin}")


def test_text_lines_carry_iso_timestamps_and_the_plugin(logger):
    h = capture(logger, "text")
    logger.info("supervising %d plugin(s)", 2)
    logger.info("plugin %s: restarting in %.1f s", "pysam", 0.1)
    logger.warning("lag", extra={"plugin": "pyb"})
    logfmt.PluginAdapter(logger, "pyc").error("boom %s", 1)
    try:
        raise ValueError("bad")
    except ValueError:
        logger.exception("caught")
    plugin_logger("pysam").info("%s%s", "[pysam] ", "hello from the plugin")
    assert re.fullmatch(ISO + r" INFO    \[ekl\] supervising 2 plugin\(s\)", h.lines[0])
    assert re.fullmatch(ISO + r" INFO    \[pysam\] plugin pysam: restarting in 0.1 s", h.lines[1])
    assert h.lines[2].endswith("WARNING [pyb] lag")
    assert h.lines[3].endswith("ERROR   [pyc] boom 1")
    assert h.lines[4].split("\n")[0].endswith("[ekl] caught") and "ValueError: bad" in h.lines[4]
    assert re.fullmatch(ISO + r" INFO    \[pysam\] hello from the plugin", h.lines[5])


def test_json_is_one_object_per_line_whatever_the_message(logger):
    h = capture(logger, "json")
    logger.info("two\nlines \"quoted\" \x00 ünïcode", extra={"plugin": "p1", "rule": "r1",
                                                              "obj": object(), "n": 3})
    try:
        raise ZeroDivisionError("division by zero")
    except ZeroDivisionError:
        logger.error("failed", exc_info=True)
    # a broken %-format still yields a line (formatted directly: pytest's own handler raises)
    h.lines.append(h.format(logging.LogRecord("ekl", logging.INFO, "f", 1, "bad format %d", ("x",),
                                              None)))
    for line in h.lines:
        assert "\n" not in line
    a, b, c = (json.loads(line) for line in h.lines)
    assert re.fullmatch(ISO, a["ts"]) and a["level"] == "INFO" and a["plugin"] == "p1"
    assert a["msg"] == "two\nlines \"quoted\" \x00 ünïcode" and a["rule"] == "r1" and a["n"] == 3
    assert a["obj"].startswith("<object object")
    assert b["plugin"] is None and "ZeroDivisionError" in b["exc"]
    assert "bad format" in c["msg"]


@pytest.mark.parametrize("fmt", logfmt.LOG_FORMATS)
def test_huge_messages_are_cut_with_a_marker(logger, fmt):
    h = capture(logger, fmt, max_line=4096)
    logger.info("x" * 300_000, extra={"plugin": "big", "blob": "y" * 100_000})
    logger.info("é" * 10_000)  # cut on a character boundary, never mid-UTF-8
    for line in h.lines:
        assert len(line.encode()) <= 4096
        line.encode("utf-8")
    assert "…[cut " in h.lines[0] and "bytes]" in h.lines[0]
    if fmt == "json":
        assert json.loads(h.lines[0])["plugin"] == "big"


def test_unknown_format_is_one_line():
    with pytest.raises(EklError) as e:
        logfmt.make_formatter("xml")
    assert str(e.value) == "--log-format xml: not a log format; use text or json"


def test_log_dir_routes_each_plugin_to_its_own_rotating_file(logger, tmp_path):
    d = tmp_path / "logs"
    router = logfmt.attach_log_dir(str(d), fmt="json", logger=logger.name, max_bytes=4000,
                                   backups=2)
    assert oct(d.stat().st_mode & 0o777) == "0o750"
    logger.info("supervising")
    logger.info("plugin %s: started", "alpha")
    plugin_logger("beta").info("[beta] out line")
    logfmt.PluginAdapter(logger, "../../etc/passwd").info("hostile name")
    logfmt.PluginAdapter(logger, "ekl").info("a plugin called ekl")
    for i in range(200):
        plugin_logger("alpha").info("[alpha] line %d %s", i, "z" * 50)
    router.close()
    names = sorted(os.listdir(d))
    assert names == ["_.._etc_passwd.log", "_ekl.log", "alpha.log", "alpha.log.1", "alpha.log.2",
                     "beta.log", "ekl.log"], names
    assert json.loads((d / "ekl.log").read_text())["msg"] == "supervising"
    assert json.loads((d / "beta.log").read_text()) ["msg"] == "out line"
    assert all(os.path.getsize(d / n) <= 4000 for n in names)
    last = [json.loads(x) for x in (d / "alpha.log").read_text().splitlines()]
    assert last[-1]["msg"].startswith("line 199 ") and last[-1]["plugin"] == "alpha"


def test_log_dir_problems(logger, tmp_path, capfd):
    with pytest.raises(EklError, match=r"^--log-dir /proc/x/y: cannot create it: .*; give a "
                                       r"writable folder$"):
        logfmt.attach_log_dir("/proc/x/y", logger=logger.name)
    f = tmp_path / "afile"
    f.write_text("")
    with pytest.raises(EklError, match="cannot create it"):
        logfmt.attach_log_dir(str(f), logger=logger.name)
    with pytest.raises(EklError, match="not a log format"):
        logfmt.attach_log_dir(str(tmp_path / "never"), fmt="yaml", logger=logger.name)
    assert not (tmp_path / "never").exists()
    d = tmp_path / "logs"
    d.mkdir()
    (d / "stuck.log").mkdir()  # this plugin's file cannot be opened
    router = logfmt.attach_log_dir(str(d), logger=logger.name)
    for _ in range(3):
        logfmt.PluginAdapter(logger, "stuck").info("lost")
        logfmt.PluginAdapter(logger, "fine").info("kept")
    router.close()
    err = capfd.readouterr().err
    assert err.count("cannot write it") == 1 and "Traceback" not in err
    assert (d / "fine.log").read_text().count("kept") == 3


def test_a_read_only_log_dir_is_refused(tmp_path):
    if os.geteuid() == 0:
        d = Path("/proc/1")  # root writes anywhere but procfs folders
    else:
        d = tmp_path / "ro"
        d.mkdir(mode=0o555)
    with pytest.raises(EklError) as e:
        logfmt.attach_log_dir(str(d))
    assert str(e.value) == f"--log-dir {d}: not a writable folder; give a folder this user can write"


def test_log_file_names_stay_inside_the_folder():
    for name in ("../x", "/etc/passwd", ".hidden", "a/b", "", "x" * 500, "ekl", "ok-name_1.2"):
        fn = logfmt.log_file_name(name or None)
        assert "/" not in fn and not fn.startswith(".") and len(fn) <= 110
    assert logfmt.log_file_name(None) == "ekl.log"
    assert logfmt.log_file_name("ok-name_1.2") == "ok-name_1.2.log"
    assert Path(logfmt.log_file_name("ekl")).name == "_ekl.log"


def test_a_real_plugins_output_lands_in_its_own_file(logger, tmp_path, plugin_copy, host):
    """The launcher logs plugin output under ``ekl.plugin.NAME`` with ``[NAME] `` in front
    (process.py); the router needs no wiring to file it, cut, under the plugin's name."""
    folder = plugin_copy("compat")
    name = folder.name
    main = folder / "compat.py"
    main.write_text("import sys\nprint('hello from the plugin', flush=True)\n"
                    "print('E' * 200000, file=sys.stderr, flush=True)\n" + main.read_text())
    d = tmp_path / "logs"
    router = logfmt.attach_log_dir(str(d), fmt="json", logger="ekl", max_line=8192)
    try:
        host.start(folder)
        f = d / f"{name}.log"

        got: List[dict] = []

        def both() -> bool:
            """Both lines are in the file: stdout and stderr are read by two threads, so
            their lines land in either order. The file is read while the router writes to
            it (a line may be half written: not parsed), and checked on that same read."""
            try:
                text = f.read_text()
            except OSError:
                return False
            got[:] = []
            for x in text.splitlines():
                try:
                    got.append(json.loads(x))
                except ValueError:
                    pass
            msgs = [x["msg"] for x in got]
            return "hello from the plugin" in msgs and any(m.startswith("EEEE") for m in msgs)
        assert wait_for(both, timeout=15), got
        hello = [x for x in got if x["msg"] == "hello from the plugin"]
        assert hello and hello[0]["plugin"] == name
        assert hello[0]["logger"] == f"ekl.plugin.{name}"
        big = [x for x in got if x["msg"].startswith("EEEE")]
        assert big and "…[cut " in big[0]["msg"] and all(len(json.dumps(x)) <= 8192 for x in got)
    finally:
        router.close()
        logging.getLogger("ekl").removeHandler(router)
