"""The early start (launcher/early.py): a repeated command line spawns its plugin before the
launcher loads, and the normal start path adopts it, or kills it when it is not the start
it decided. Real ``ekl`` and ``ekl-python`` processes, real sockets, real signals; every
test has its own launch cache folder (``EKL_CACHE_DIR``) and plugin copy.
"""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Dict, List

import psutil
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from conftest import plugin_procs, run_watching, wait_for
from ekl.launcher import early
from ekl.launcher.process import containment, is_gone
from ekuiper import protocol

EKL = str(Path(sys.executable).with_name("ekl"))
EKL_PYTHON = str(Path(sys.executable).with_name("ekl-python"))
ADOPTED = "adopted the early start"
MISMATCH = "did not match this start"


@pytest.fixture
def env(tmp_path: Path) -> Dict[str, str]:
    e = dict(os.environ, EKL_CACHE_DIR=str(tmp_path / "cache"),
             EKL_STATUS_DIR=str(tmp_path / "status"))
    e.pop(early.DISABLE_ENV, None)
    return e


def ekl(args: List[str], env: Dict[str, str], cwd: Path) -> subprocess.CompletedProcess:
    return subprocess.run([EKL, "-vv", *args], env=env, cwd=cwd, capture_output=True,
                          text=True, timeout=60)


def records(env: Dict[str, str]) -> List[Path]:
    return sorted((Path(env["EKL_CACHE_DIR"]) / "launch").glob(early.RECORD_PREFIX + "*"))


def tagged(needle: bytes) -> List[int]:
    """Pids whose environment contains ``needle``."""
    out = []
    for name in os.listdir("/proc"):
        if name.isdigit():
            try:
                with open(f"/proc/{name}/environ", "rb") as f:
                    if needle in f.read():
                        out.append(int(name))
            except OSError:
                pass
    return out


def control_sockets(name: str) -> List[str]:
    return [str(p) for p in Path("/tmp").glob(f"ekl-*/plugin_{name}.ipc")]


def recorded_tail(folder: Path, env: Dict[str, str]) -> List[str]:
    """An endless ``ekl tail`` of the plugin, run once until its first line, so that the
    next run of the same command line starts early."""
    argv = [EKL, "tail", str(folder), "counter", "-n", "100000"]
    first = subprocess.Popen(argv, env=env, cwd=folder, stdout=subprocess.PIPE,
                             stderr=subprocess.DEVNULL, text=True)
    try:
        assert first.stdout is not None and first.stdout.readline()
    finally:
        first.terminate()
        first.communicate(timeout=30)
    return argv


def test_a_repeated_call_starts_the_plugin_before_the_launcher_loads(plugin_copy, env):
    folder = plugin_copy("compat")
    env["EKL_TEST_SECRET"] = "hunter2-not-for-the-cache"
    first = ekl(["call", str(folder), "echo", '"abc"'], env, folder)
    assert first.returncode == 0, first.stderr
    assert '"args": ["abc"]' in first.stdout and ADOPTED not in first.stderr
    assert len(records(env)) == 1
    # the plugin's environment is kept as changes to the caller's: nothing of the
    # caller's own (tokens, passwords) is written to the cache
    assert b"hunter2" not in records(env)[0].read_bytes()
    # the function's name and arguments are not part of the key: another call shares it
    second = ekl(["call", str(folder), "echo", '"xyz"', "2"], env, folder)
    assert second.returncode == 0, second.stderr
    assert '"args": ["xyz", 2]' in second.stdout and ADOPTED in second.stderr
    assert len(records(env)) == 1  # an adopted start writes nothing
    off = ekl(["call", str(folder), "echo", '"off"'],
              dict(env, **{early.DISABLE_ENV: "0"}), folder)
    assert off.returncode == 0 and ADOPTED not in off.stderr
    assert not plugin_procs(folder)
    assert not control_sockets(folder.name)


def test_a_changed_plugin_json_is_not_started_early(plugin_copy, env):
    folder = plugin_copy("compat")
    assert ekl(["call", str(folder), "echo", '"a"'], env, folder).returncode == 0
    manifest = folder / f"{folder.name}.json"
    st_ = manifest.stat()
    os.utime(manifest, ns=(st_.st_atime_ns, st_.st_mtime_ns + 10**9))
    out = ekl(["call", str(folder), "echo", '"a"'], env, folder)
    assert out.returncode == 0, out.stderr
    assert ADOPTED not in out.stderr and MISMATCH not in out.stderr
    assert ADOPTED in ekl(["call", str(folder), "echo", '"a"'], env, folder).stderr


def test_a_wrong_prediction_is_killed_and_the_plugin_started_anew(plugin_copy, env):
    """A record that no longer says what the start path decides (here: edited to add a
    variable) spawns its process, which the start path kills with its whole tree."""
    folder = plugin_copy("compat")
    assert ekl(["call", str(folder), "echo", '"a"'], env, folder).returncode == 0
    [path] = records(env)
    rec = early.Record.decode(path.read_bytes())
    assert rec is not None
    mark = f"EKL_TEST_MARK_{os.getpid()}_{folder.name}"
    rec.env[mark] = "1"
    path.write_bytes(rec.encode())
    out = ekl(["call", str(folder), "echo", '"abc"'], env, folder)
    assert out.returncode == 0, out.stderr
    assert '"args": ["abc"]' in out.stdout
    assert MISMATCH in out.stderr and ADOPTED not in out.stderr
    assert not tagged(f"{mark}=1".encode())
    # the start that replaced it wrote a right record: the next one is adopted
    assert ADOPTED in ekl(["call", str(folder), "echo", '"a"'], env, folder).stderr
    assert not plugin_procs(folder)


def test_a_command_that_fails_before_its_spawn_leaves_nothing(plugin_copy, env):
    folder = plugin_copy("compat")
    assert ekl(["call", str(folder), "echo", '"a"'], env, folder).returncode == 0
    out = ekl(["call", str(folder), "nosuch", '"a"'], env, folder)
    assert out.returncode == 2
    assert "lists no function 'nosuch'" in out.stderr and "Traceback" not in out.stderr
    assert not plugin_procs(folder)
    assert not control_sockets(folder.name)


@pytest.mark.parametrize("order", ["ekl", "plugin_then_ekl"])
def test_sigkill_right_after_the_early_start_leaves_nothing(plugin_copy, env, order):
    """SIGKILL of ekl (alone, or after its plugin) while the early-started plugin boots,
    before or after the adoption, whichever this run hits: the watchdog spawned with the
    plugin kills what is left and removes the private socket folder."""
    folder = plugin_copy("compat")
    argv = recorded_tail(folder, env)
    assert records(env)
    proc = subprocess.Popen(argv, env=env, cwd=folder, stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL)
    try:
        assert wait_for(lambda: plugin_procs(folder), timeout=20, interval=0.002)
        plugin = plugin_procs(folder)[0]
        penv = plugin.environ()
        private = penv[protocol.IPC_DIR_ENV]
        token = penv[containment.TOKEN_ENV]
        assert os.path.basename(private).startswith(early.PRIVATE_PREFIX)
        if order == "plugin_then_ekl":
            plugin.kill()
        proc.kill()
        proc.wait(10)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    assert wait_for(lambda: not plugin_procs(folder), timeout=10)
    assert wait_for(lambda: not os.path.exists(private), timeout=10)
    assert not tagged(f"{containment.TOKEN_ENV}={token}".encode())


def relay_instance(folder: Path, ipc: str, env: Dict[str, str]):
    """eKuiper's side, as the bench plays it: ekl-python started as eKuiper starts it."""
    from ekl.launcher.host.instance import PluginInstance
    from ekl.launcher.process import LaunchSpec
    from ekl.launcher.settings import HostSettings

    spec = LaunchSpec(folder.name, (EKL_PYTHON, "-u", str(folder / "compat.py"),
                                    protocol.encode_portable_config(1000)), str(folder),
                      dict(env, EKUIPER_IPC_DIR=ipc))
    return PluginInstance(spec, HostSettings(ipc_dir=ipc), ipc_dir=ipc, control_dir=ipc)


def test_ekl_python_adopts_its_early_start(plugin_copy, env, ipc_dir):
    """The second start of the same ``ekl-python`` command line spawns the plugin before
    the relay loads: its watchdog got the plugin's token in its argv at its spawn (the
    Lifeline's own watchdog gets tokens later, on its pipe)."""
    folder = plugin_copy("compat")
    seen = []
    for _ in range(2):
        inst = relay_instance(folder, ipc_dir, env)
        try:
            inst.start_process()
            inst.start_function("echo")
            relay = psutil.Process(inst.pid)
            assert wait_for(relay.children, timeout=10)
            plugin = next(c for c in relay.children() if "compat.py" in " ".join(c.cmdline()))
            token = plugin.environ()[containment.TOKEN_ENV]
            dogs = [c.cmdline() for c in relay.children()
                    if any("watchdog.py" in a for a in c.cmdline())]
            seen.append(any(f"+={token}" in d for d in dogs))
        finally:
            assert not inst.close()
    assert seen == [False, True]
    assert not plugin_procs(folder)


# --- records: hostile and odd files -------------------------------------------------------


def a_record(tmp_path: Path) -> early.Record:
    dep = tmp_path / "dep"
    dep.write_text("x")
    return early.Record("k" * 40, [sys.executable, "-c", "pass"], str(tmp_path),
                        {"A": "1=2", "EMPTY": ""}, ["UNSET_ME"], "/tmp/ekl-x/plugin_p.ipc",
                        "/tmp/ekl-x", [(str(dep), early.signature(str(dep))),
                                       (str(tmp_path / "missing"), None)])


def test_a_record_reads_back_as_written(tmp_path):
    rec = a_record(tmp_path)
    back = early.Record.decode(rec.encode())
    assert back is not None and vars(back) == vars(rec) and back.fresh()
    (tmp_path / "missing").write_text("now here")
    assert not back.fresh()


@settings(max_examples=300, deadline=None)
@given(st.binary(max_size=400))
def test_garbage_is_never_a_record_and_never_an_error(raw):
    assert early.Record.decode(raw) is None or isinstance(early.Record.decode(raw),
                                                          early.Record)


#: A record's bytes (its files need not exist to be read back).
RAW = early.Record("k" * 40, ["/bin/true", "-x"], "/srv", {"A": "1=2", "EMPTY": ""}, ["U"],
                   "/tmp/ekl-x/plugin_p.ipc", "/tmp/ekl-x",
                   [("/etc/hostname", (1, 2, 3)), ("/nope", None)]).encode()


@settings(max_examples=300, deadline=None)
@given(st.integers(0, len(RAW) - 1), st.booleans(), st.integers(1, 255))
def test_a_damaged_record_is_a_miss_or_a_record_never_an_error(i, cut, flip):
    damaged = RAW[:i] if cut else RAW[:i] + bytes([RAW[i] ^ flip]) + RAW[i + 1:]
    early.Record.decode(damaged)  # must not raise


def write_record(folder: Path, key: str, data: bytes) -> Path:
    folder.mkdir(parents=True, exist_ok=True, mode=0o700)
    p = folder / (early.RECORD_PREFIX + key)
    p.write_bytes(data)
    return p


def a_found_record(tmp_path: Path, monkeypatch) -> tuple:
    """(key, record, folder): a record ``find`` finds, in a cache folder of the test's own."""
    monkeypatch.setenv("EKL_CACHE_DIR", str(tmp_path / "cache"))
    key = early._Key("ekl", ["call", "p"])
    rec = a_record(tmp_path)
    rec.key = key.of(2)
    folder = tmp_path / "cache" / "launch"
    write_record(folder, rec.key, rec.encode())
    assert early.find(key) is not None
    return key, rec, folder


def test_records_outside_a_private_folder_or_oversized_or_linked_are_ignored(
        tmp_path, monkeypatch):
    key, rec, folder = a_found_record(tmp_path, monkeypatch)
    os.chmod(folder, 0o770)  # others may write there: not a record to run
    assert early.find(key) is None
    os.chmod(folder, 0o700)
    write_record(folder, rec.key, rec.encode() + b"\0" + b"x" * early.MAX_RECORD_BYTES)
    assert early.find(key) is None
    target = tmp_path / "elsewhere"
    target.write_bytes(rec.encode())
    link = folder / (early.RECORD_PREFIX + rec.key)
    link.unlink()
    link.symlink_to(target)
    assert early.find(key) is None
    link.unlink()
    rec.key = "0" * 40  # a record whose own key is not its name's
    write_record(folder, key.of(2), rec.encode())
    assert early.find(key) is None


def test_the_early_start_loads_nothing_but_itself():
    code = ("import sys\nbefore = set(sys.modules)\nimport ekl.launcher.commands\n"
            "print(','.join(sorted(set(sys.modules) - before)))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         check=True).stdout.strip().split(",")
    assert set(out) <= {"ekl", "ekl.launcher", "ekl.launcher.early", "ekl.launcher.commands",
                        "_sha2", "_sha256"}, out


def test_a_child_answers_as_popen_does():
    pid = os.posix_spawn("/bin/sleep", ["sleep", "30"], dict(os.environ))
    child = early.Child(pid, ["sleep", "30"])
    assert child.poll() is None
    with pytest.raises(subprocess.TimeoutExpired):
        child.wait(0.05)
    child.kill()
    assert child.wait(5) == -signal.SIGKILL and child.poll() == -signal.SIGKILL
    child.kill()  # a reaped child is not signalled again
    t0 = time.monotonic()
    pid = os.posix_spawn("/bin/sh", ["sh", "-c", "exit 3"], dict(os.environ))
    assert early.Child(pid, ["sh"]).wait() == 3 and time.monotonic() - t0 < 5


def test_ekl_python_with_a_broken_status_folder_kills_its_early_start(plugin_copy, env,
                                                                       ipc_dir):
    """The status folder is checked after the early start has spawned the plugin (it is
    only known once ekl-python has loaded): the one-line error and exit 2 stay, and the
    plugin that had begun to boot is killed."""
    folder = plugin_copy("compat")
    inst = relay_instance(folder, ipc_dir, env)
    try:
        inst.start_process()
    finally:
        assert not inst.close()
    assert records(env)
    status = Path(env["EKL_STATUS_DIR"])
    subprocess.run(["rm", "-rf", str(status)], check=True)
    status.write_text("a file where the status folder should be")
    code, err, seen_running = run_watching(list(inst.spec.argv), folder, cwd=folder,
                                           env=dict(inst.spec.env))
    assert code == 2, err
    assert "status folder" in err and "Traceback" not in err
    assert seen_running, "the early start did not spawn the plugin (no record used?)"
    assert not plugin_procs(folder)
    assert not control_sockets(folder.name)


def test_an_early_plugin_gets_the_signals_popen_gives(tmp_path):
    """Python ignores SIGPIPE and an ignored signal stays ignored across exec; Popen
    restores it for its children, and so does the early start's spawn. The early start
    blocks SIGINT/SIGTERM while it works; its children start with nothing blocked."""
    assert signal.getsignal(signal.SIGPIPE) == signal.SIG_IGN  # what a child would inherit
    out = tmp_path / "out"
    old = signal.pthread_sigmask(signal.SIG_BLOCK, {signal.SIGINT, signal.SIGTERM})
    try:
        grep = shutil.which("grep")
        assert grep
        pid = early._spawn([grep, "-E", "SigIgn|SigBlk", "/proc/self/status"],
                           dict(os.environ), str(tmp_path),
                           [(os.POSIX_SPAWN_OPEN, 1, str(out), os.O_WRONLY | os.O_CREAT,
                             0o600)])
    finally:
        signal.pthread_sigmask(signal.SIG_SETMASK, old)
    os.waitpid(pid, 0)
    status = dict(line.split(":") for line in out.read_text().splitlines())
    assert int(status["SigBlk"], 16) == 0
    assert not int(status["SigIgn"], 16) & (1 << (signal.SIGPIPE - 1))


def test_the_watchdog_starts_niced_and_light(plugin_copy, env):
    """Its start runs beside the plugin's boot and the launcher's load: niced to 10, and
    importing nothing beyond os (no signal module and its enum, no ctypes)."""
    out = subprocess.run(early.watchdog_argv([])[:3] + ["-X", "importtime", early.WATCHDOG],
                         stdin=subprocess.DEVNULL, capture_output=True, text=True, timeout=30)
    loaded = {ln.split("|")[-1].strip() for ln in out.stderr.splitlines() if "|" in ln}
    assert not loaded & {"enum", "ctypes", "signal", "subprocess", "threading"}, loaded
    folder = plugin_copy("compat")
    proc = subprocess.Popen([EKL, "tail", str(folder), "counter", "-n", "100000"], env=env,
                            cwd=folder, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL)
    try:
        assert proc.stdout is not None and proc.stdout.readline()
        dogs = [c for c in psutil.Process(proc.pid).children()
                if any("watchdog.py" in a for a in c.cmdline())]
        assert dogs and all(d.nice() == early.WATCHDOG_NICE for d in dogs)
    finally:
        proc.terminate()
        proc.communicate(timeout=30)


def test_many_repeated_calls_at_once_each_adopt_their_own(plugin_copy, env):
    """Six identical command lines at once: one record, six early starts, each in its own
    private folder, each adopted by its own ekl; nothing left afterwards."""
    folder = plugin_copy("compat")
    assert ekl(["call", str(folder), "echo", '"a"'], env, folder).returncode == 0
    procs = [subprocess.Popen([EKL, "-vv", "call", str(folder), "echo", f'"{i}"'], env=env,
                              cwd=folder, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                              text=True) for i in range(6)]
    outs = [p.communicate(timeout=60) for p in procs]
    assert all(p.returncode == 0 for p in procs), [e for _, e in outs]
    assert sorted(o for o, _ in outs) == sorted(
        f'{{"args": ["{i}"], "rule": "ekl", "op": "call"}}\n' for i in range(6))
    assert sum(ADOPTED in e for _, e in outs) == 6
    assert not plugin_procs(folder) and not control_sockets(folder.name)


@pytest.mark.skipif(os.geteuid() != 0, reason="making a folder another user's needs root")
def test_a_record_folder_owned_by_another_user_is_not_used(tmp_path, monkeypatch):
    key, rec, folder = a_found_record(tmp_path, monkeypatch)
    os.chown(folder, 65534, 65534)  # nobody's: whatever it holds is not ours to run
    assert early.find(key) is None


def test_ctrl_c_during_the_early_start_is_a_quiet_exit_130(plugin_copy, env):
    """SIGINT as soon as the early plugin appears (the launcher is still loading, or has
    just adopted it): exit 130 without a traceback, and nothing left."""
    folder = plugin_copy("compat")
    argv = recorded_tail(folder, env)
    proc = subprocess.Popen(argv, env=env, cwd=folder, stdout=subprocess.DEVNULL,
                            stderr=subprocess.PIPE, text=True)
    try:
        assert wait_for(lambda: plugin_procs(folder), timeout=20, interval=0.002)
        proc.send_signal(signal.SIGINT)
        _, err = proc.communicate(timeout=30)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    assert proc.returncode == 130, err
    assert "Traceback" not in err
    assert wait_for(lambda: not plugin_procs(folder), timeout=10)
    assert not control_sockets(folder.name)


def test_an_early_start_that_cannot_be_adopted_leaves_nothing(tmp_path, ipc_dir):
    """Adoption fails (its --log-file cannot be written): the early process and its bound
    control socket are gone, and nothing is left for the next listener on that path."""
    from ekl.launcher.errors import PluginStartError
    from ekl.launcher.host.instance import PluginInstance
    from ekl.launcher.process import LaunchSpec
    from ekl.launcher.settings import HostSettings
    from ekuiper.transport import sp

    rec = early.Record("k" * 40, ["/bin/sleep", "30"], str(tmp_path), {}, [],
                       "/tmp/ekl-rec/plugin_p.ipc", "/tmp/ekl-rec", [])
    made = early._start(rec)
    assert made is not None
    made.taken = True  # as take() hands it over
    try:
        spec = LaunchSpec("p", tuple(made.argv), str(tmp_path), made.env,
                          log_file=str(tmp_path / "no-such-folder" / "p.log"))
        inst = PluginInstance(spec, HostSettings(), ipc_dir=made.private,
                              control_dir=made.private, owned_dirs=(made.private,))
        with pytest.raises(PluginStartError, match="--log-file"):
            inst._adopt(made, made.control)
        assert made.child.returncode is not None  # killed and reaped
        assert not os.path.exists(made.control) and made.control not in sp._provided
        assert inst.process is None
    finally:
        made.discard()
    assert not os.path.exists(made.private)


def test_a_plugin_that_escapes_while_it_starts_early_is_still_contained(plugin_copy, env):
    """The hostile plugin starts a setsid child and a double-forked daemon as it boots:
    under the early start that is before ekl has loaded (no subreaper yet). SIGKILL of ekl
    right then: the watchdog's token scan still ends all three."""
    folder = plugin_copy("hostile")
    (folder / "escape").touch()
    argv = recorded_tail(folder, env)
    assert wait_for(lambda: not [p for f in folder.glob("pids-*.txt")
                                 for p in map(int, f.read_text().split()) if not is_gone(p)],
                    timeout=10)  # the recording run's escapees died with it
    proc = subprocess.Popen(argv, env=env, cwd=folder, stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL)
    escaped: List[int] = []
    try:
        assert wait_for(lambda: plugin_procs(folder), timeout=20, interval=0.002)
        plugin = plugin_procs(folder)[0].pid
        pids = folder / f"pids-{plugin}.txt"
        assert wait_for(lambda: pids.exists() and pids.read_text().strip(), timeout=10,
                        interval=0.002)
        escaped = [plugin, *map(int, pids.read_text().split())]
        proc.kill()
        proc.wait(10)
        assert wait_for(lambda: all(is_gone(p) for p in escaped), timeout=5), \
            [p for p in escaped if not is_gone(p)]
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
        for p in escaped:
            try:
                os.kill(p, signal.SIGKILL)
            except OSError:
                pass
