"""``ekuiper.lazylog``: loggers that load logging at their first record.

Each case runs in a fresh interpreter: whether logging is loaded, the hooks and the held
records are process state, and this test process has logging loaded long ago.
"""

from __future__ import annotations

import subprocess
import sys
import textwrap

from ekuiper.lazylog import HOLD_MAX


def run(code: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-c", textwrap.dedent(code)], capture_output=True,
                          text=True, timeout=60)


SETUP = """
import sys
from ekuiper import lazylog

def configure():
    import logging
    h = logging.StreamHandler(sys.stdout)
    h.setFormatter(logging.Formatter("%(name)s %(levelname)s %(message)s"))
    root = logging.getLogger("ekl")
    root.handlers[:] = [h]
    root.propagate = False
    root.setLevel(logging.INFO)
    print("configured")

log = lazylog.getLogger("ekl")
"""


def test_quiet_records_do_not_load_logging_and_the_hook_comes_first():
    p = run(SETUP + """
lazylog.when_loaded(configure, lazylog.INFO)
log.debug("below the floor: dropped, logging stays unloaded")
print("loaded after debug:", "logging" in sys.modules, log.isEnabledFor(lazylog.DEBUG))
log.info("first %s", "record")
log.debug("now dropped by logging itself")
lazylog.getLogger("ekl.child").warning("a child")
""")
    assert p.returncode == 0, p.stderr
    assert p.stdout.splitlines() == [
        "loaded after debug: False False", "configured", "ekl INFO first record",
        "ekl.child WARNING a child"]


def test_held_records_come_out_in_order_at_load_and_warnings_are_not_held():
    p = run(SETUP + """
lazylog.when_loaded(configure, lazylog.INFO)
lazylog.hold_until_loaded()
log.info("held %d", 1)
lazylog.getLogger("ekl.plugin.p").info("[p] held 2")
print("still unloaded:", "logging" in sys.modules)
log.warning("a warning loads logging and goes after what was held")
log.info("not held once loaded")
""")
    assert p.returncode == 0, p.stderr
    assert p.stdout.splitlines() == [
        "still unloaded: False", "configured", "ekl INFO held 1", "ekl.plugin.p INFO [p] held 2",
        "ekl WARNING a warning loads logging and goes after what was held",
        "ekl INFO not held once loaded"]


def test_held_records_are_written_at_exit_and_past_the_bound():
    p = run(SETUP + """
lazylog.when_loaded(configure, lazylog.INFO)
lazylog.hold_until_loaded()
for i in range(lazylog.HOLD_MAX + 3):
    log.info("line %d", i)
""")
    assert p.returncode == 0, p.stderr
    lines = p.stdout.splitlines()
    assert lines[0] == "configured"
    assert lines[1:] == [f"ekl INFO line {i}" for i in range(HOLD_MAX + 3)]
    p = run(SETUP + """
lazylog.when_loaded(configure, lazylog.INFO)
lazylog.hold_until_loaded()
log.info("written at exit")
""")
    assert p.stdout.splitlines() == ["configured", "ekl INFO written at exit"]


def test_threads_logging_while_another_loads_all_come_after_the_hook():
    p = run(SETUP + """
import threading, time
def slow_configure():
    time.sleep(0.05)  # other threads log meanwhile: they must wait for the handler
    configure()
lazylog.when_loaded(slow_configure, lazylog.INFO)
lazylog.hold_until_loaded()
def worker(n):
    for i in range(50):
        (log.warning if i % 10 == 0 else log.info)("t%d %d", n, i)
ts = [threading.Thread(target=worker, args=(n,)) for n in range(4)]
[t.start() for t in ts]
[t.join() for t in ts]
""")
    assert p.returncode == 0, p.stderr
    lines = p.stdout.splitlines()
    assert lines[0] == "configured"
    assert sorted(lines[1:]) == sorted(f"ekl {'WARNING' if i % 10 == 0 else 'INFO'} t{n} {i}"
                                       for n in range(4) for i in range(50))
    for n in range(4):  # each thread's records in its own order
        mine = [int(x.split()[-1]) for x in lines[1:] if f" t{n} " in x]
        assert mine == list(range(50))


def test_records_with_exc_info_are_never_held():
    p = run(SETUP + """
lazylog.when_loaded(configure, lazylog.INFO)
lazylog.hold_until_loaded()
try:
    1 / 0
except ZeroDivisionError:
    log.info("failed", exc_info=True)
print("loaded:", "logging" in sys.modules)
""")
    assert p.returncode == 0, p.stderr
    assert p.stdout.splitlines()[:2] == ["configured", "ekl INFO failed"]
    assert "ZeroDivisionError" in p.stdout and p.stdout.splitlines()[-1] == "loaded: True"


def test_one_line():
    from ekuiper.lazylog import one_line

    assert one_line("a\n  b\tc\r\n") == "a b c"
    assert one_line(ValueError("x\ny")) == "x y"



def test_a_hook_that_raises_does_not_leave_logging_half_loaded():
    p = run(SETUP + """
def broken():
    raise RuntimeError("hook failed")
lazylog.when_loaded(broken, lazylog.INFO)
lazylog.hold_until_loaded()
log.info("held")
try:
    log.warning("loads, and the hook raises")
except RuntimeError as e:
    print("raised:", e)
log.warning("after")  # logging is loaded: logging's last-resort handler writes it
log.info("not held any more")  # (dropped by logging itself: nothing set INFO)
print("held:", len(lazylog._held))
""")
    assert p.returncode == 0, p.stderr
    assert p.stdout.splitlines() == ["raised: hook failed", "held: 0"]
    assert p.stderr.splitlines() == ["after"]
