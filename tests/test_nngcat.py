"""A non-Python nng peer: ``nngcat`` (C nng) plays the host against ekl's SDK.

nngcat takes the host's side of the protocol byte for byte: REP on the control socket
(receives ``handshake``, replies with a start command), REP on a function socket (replies
with an ``Exec`` request, reads the result as the next request) and PULL on a source's data
socket. The plugin runs as a plain subprocess with ``EKUIPER_IPC_DIR`` set to a private
folder, so every path is unique.

nngcat's REP mode with ``--data`` answers *every* request with the same bytes and sleeps
200 ms after its last reply, then exits; without ``--data`` it only receives (and prints).
So each conversation uses two nngcat processes in turn on the control socket: the first
receives the handshake and sends the start command, the second receives the start's
result. The symbol's own socket (function or source data) gets its nngcat only after the
first one has exited, so the start cannot finish while the first still lingers (a result
sent to it would be lost with it); should the start finish before the second is up, the
plugin's REQ socket holds the result until it is.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
from pathlib import Path
from typing import Iterator, List, Tuple

import pytest

from ekuiper import protocol
from ekuiper.protocol import Control, FuncMeta, Meta

NNGCAT = shutil.which("nngcat")
pytestmark = pytest.mark.skipif(
    NNGCAT is None, reason="nngcat not found (Debian package nng-utils; .ci/run installs it)")


class Procs:
    """Every process a test starts; all are killed at the end, pass or fail."""

    def __init__(self) -> None:
        self.procs: List[subprocess.Popen] = []

    def start(self, argv: List[str], **kw: object) -> subprocess.Popen:
        p = subprocess.Popen(argv, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                             stderr=subprocess.PIPE, start_new_session=True, **kw)  # type: ignore[call-overload]
        self.procs.append(p)
        return p

    def nngcat(self, *args: str) -> subprocess.Popen:
        assert NNGCAT is not None
        return self.start([NNGCAT, *args, "--raw", "--recv-timeout", "10"])

    def close(self) -> None:
        for p in self.procs:
            if p.poll() is None:
                try:
                    os.killpg(p.pid, signal.SIGKILL)
                except ProcessLookupError:
                    pass
            p.communicate()


@pytest.fixture
def procs() -> Iterator[Procs]:
    p = Procs()
    try:
        yield p
    finally:
        p.close()


def finish(p: subprocess.Popen, timeout: float = 15) -> bytes:
    out, err = p.communicate(timeout=timeout)
    assert p.returncode == 0, f"{p.args[0]} exited {p.returncode}: {err.decode(errors='replace')}"
    return out


def start_plugin(procs: Procs, folder: Path, ipc_dir: str) -> subprocess.Popen:
    env = dict(os.environ, **{protocol.IPC_DIR_ENV: ipc_dir})
    env.pop("PYTHONPATH", None)
    return procs.start([sys.executable, "-u", str(folder / "compat.py"),
                        protocol.encode_portable_config()], cwd=folder, env=env)


def control_conversation(procs: Procs, folder: Path, ipc_dir: str,
                         command: bytes) -> Tuple[subprocess.Popen, subprocess.Popen]:
    """Handshake and start command over nngcat; returns the plugin and the nngcat that
    will receive the command's result."""
    url = protocol.control_url(folder.name, ipc_dir)
    first = procs.nngcat("--rep", "--listen", url, "--data", command.decode(), "--count", "1")
    plugin = start_plugin(procs, folder, ipc_dir)
    assert finish(first) == protocol.HANDSHAKE
    result = procs.nngcat("--rep", "--listen", url, "--count", "1")  # only receives
    return plugin, result


def stop_plugin(plugin: subprocess.Popen) -> int:
    plugin.send_signal(signal.SIGTERM)
    plugin.communicate(timeout=5)
    return plugin.returncode


def test_handshake_start_and_function_call(procs: Procs, plugin_copy, ipc_dir: str) -> None:
    folder = plugin_copy("compat")
    start = protocol.encode_command(protocol.CMD_START, Control("echo", protocol.TYPE_FUNC))
    plugin, result = control_conversation(procs, folder, ipc_dir, start)

    exec_req = protocol.encode_func_request(protocol.FUNC_EXEC,
                                            ["héllo", 42, FuncMeta("rule1", "op1", 0, 3).encode()])
    func = procs.nngcat("--rep", "--listen", protocol.function_url("echo", ipc_dir),
                        "--data", exec_req.decode(), "--count", "2")
    assert finish(result) == protocol.REPLY_OK  # the start command's result
    out = finish(func)
    assert out.startswith(protocol.HANDSHAKE), out
    state, value = protocol.decode_func_reply(out[len(protocol.HANDSHAKE):])
    assert state is True
    assert value == {"args": ["héllo", 42], "rule": "rule1", "op": "op1"}
    assert stop_plugin(plugin) == 0


def test_source_data_to_nngcat_pull(procs: Procs, plugin_copy, ipc_dir: str) -> None:
    folder = plugin_copy("compat")
    meta = Meta("rule9", "op2", 1)
    ctrl = Control("counter", protocol.TYPE_SOURCE, meta, "topic/x", {"interval": 0.01})
    plugin, result = control_conversation(
        procs, folder, ipc_dir, protocol.encode_command(protocol.CMD_START, ctrl))
    pull = procs.nngcat("--pull", "--listen", protocol.data_url(meta, ipc_dir), "--count", "3")
    assert finish(result) == protocol.REPLY_OK
    out = finish(pull).decode()
    decoder, pos, messages = json.JSONDecoder(), 0, []
    while pos < len(out):  # --raw prints the messages back to back
        obj, pos = decoder.raw_decode(out, pos)
        messages.append(obj)
    assert [m["message"]["n"] for m in messages] == [1, 2, 3]
    assert all(m["message"]["ds"] == "topic/x" for m in messages)
    assert all(m["meta"] == {"rule": "rule9"} for m in messages)
    assert stop_plugin(plugin) == 0
