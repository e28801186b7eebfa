"""ekl's SDK inside the plugin zip (issue 15, part 1): package, validate, run anywhere.

A vendored zip is unpacked as eKuiper unpacks it and run with a bare interpreter: the
system's python with ``-S -s -E`` (no site-packages at all, no user site, no PYTHON*
variables: no pip, no pynng, no SDK), as eKuiper runs it (``python -u main.py CONF``, the
script's folder first on sys.path), through ekl's host and through nngcat (a C nng peer).
"""

from __future__ import annotations

import json
import logging
import os
import shutil
import signal
import subprocess
import sys
import zipfile
from pathlib import Path
from typing import List, Tuple

import pytest
from test_authoring import ekl, eKuiper_unpack

from conftest import short_id
from ekl.launcher.authoring.scaffold import init_plugin, install_sh
from ekl.launcher.authoring.validate import validate
from ekl.launcher.errors import ManifestError
from ekl.launcher.plugin import load
from ekl.launcher.plugin.vendored import MANIFEST, version_key
from ekl.launcher.settings import LaunchOptions
from ekl.launcher.start.resolve import hosted_sdk_dir, resolve
from ekuiper import protocol

WHERE = '''

class WhereFunction(Function):
    """Which SDK this process imported, and whether anything but the stdlib is there."""

    def validate(self, args: List[Any]) -> str:
        return ""

    def exec(self, args: List[Any], ctx: Context) -> Any:
        import sys

        import ekuiper

        return {"sdk": ekuiper.__file__, "pynng": "pynng" in sys.modules,
                "site": [p for p in sys.path if "-packages" in p]}

    def is_aggregate(self) -> bool:
        return False
'''


def vendored_plugin(root: Path) -> Tuple[Path, str]:
    """``ekl init --vendor-sdk`` plus a function that reports which SDK it runs on."""
    name = f"v{short_id()}"
    folder = root / name
    cp = ekl("init", name, "--dir", str(folder), "--vendor-sdk")
    assert cp.returncode == 0, cp.stderr
    fn = folder / f"{name}_function.py"
    fn.write_text(fn.read_text() + WHERE)
    main = folder / f"{name}.py"
    main.write_text(main.read_text()
                    .replace("import UpperFunction", "import UpperFunction, WhereFunction")
                    .replace(f'{{"{name}_upper": lambda: UpperFunction()}}',
                             f'{{"{name}_upper": lambda: UpperFunction(), '
                             f'"{name}_where": lambda: WhereFunction()}}'))
    j = folder / f"{name}.json"
    m = json.loads(j.read_text())
    m["functions"].append(f"{name}_where")
    j.write_text(json.dumps(m, indent=2))
    return folder, name


@pytest.fixture
def unpacked(tmp_path: Path) -> Tuple[Path, str, Path]:
    """(installed folder, name, zip): packaged without --vendor-sdk (the JSON says so)."""
    folder, name = vendored_plugin(tmp_path / "src")
    out = tmp_path / f"{name}.zip"
    cp = ekl("package", str(folder), "-o", str(out), "--no-run")
    assert cp.returncode == 0, cp.stderr
    assert "ekl: wrote ekuiper/: ekl's SDK" in cp.stderr
    dest = tmp_path / "plugins" / name
    dest.mkdir(parents=True)
    eKuiper_unpack(out, dest)
    return dest, name, out


@pytest.fixture(scope="session")
def bare(tmp_path_factory: pytest.TempPathFactory) -> str:
    """The system interpreter with no site-packages, no user site, no PYTHON* variables."""
    d = tmp_path_factory.mktemp("bare")
    exe = d / "python3"
    exe.write_text(f'#!/bin/sh\nexec {os.path.realpath(sys.executable)} -S -s -E "$@"\n')
    exe.chmod(0o755)
    for mod in ("pynng", "ekuiper", "pip"):
        r = subprocess.run([str(exe), "-c", f"import {mod}"], capture_output=True, cwd="/")
        assert r.returncode != 0, f"the bare interpreter can import {mod}"
    return str(exe)


def where(inst, name: str) -> dict:
    return inst.start_function(f"{name}_where").exec([])


def test_vendored_zip_runs_on_a_bare_interpreter_through_ekls_host(unpacked, bare, host):
    dest, name, out = unpacked
    with zipfile.ZipFile(out) as zf:
        names = zf.namelist()
    assert f"ekuiper/{MANIFEST}" in names and "ekuiper/transport/native.py" in names
    assert not any("__pycache__" in n or n.endswith(".pyc") for n in names)
    inst = host.start(dest, python=bare)
    assert inst.spec.sdk == "vendored" and "PYTHONPATH" not in inst.spec.env
    got = where(inst, name)
    assert got["sdk"] == str(dest / "ekuiper" / "__init__.py")
    assert got["pynng"] is False and got["site"] == []
    assert inst.start_function(f"{name}_upper").exec(["abc"]) == "ABC"
    # every symbol starts and stops on it, and the zip's copy is intact
    cp = ekl("validate", str(out), "--python", bare)
    assert cp.returncode == 0, cp.stdout + cp.stderr
    assert "warning" not in cp.stdout and "error" not in cp.stdout


@pytest.mark.skipif(shutil.which("nngcat") is None,
                    reason="nngcat not found (Debian package nng-utils; .ci/run installs it)")
def test_vendored_zip_on_a_bare_interpreter_against_nngcat(unpacked, bare, ipc_dir):
    from ekuiper.protocol import Control, FuncMeta

    dest, name, _ = unpacked
    nngcat = shutil.which("nngcat")
    procs: List[subprocess.Popen] = []

    def start(argv: List[str], **kw: object) -> subprocess.Popen:
        p = subprocess.Popen(argv, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                             stderr=subprocess.PIPE, start_new_session=True, **kw)  # type: ignore[call-overload]
        procs.append(p)
        return p

    def cat(*args: str) -> subprocess.Popen:
        return start([str(nngcat), *args, "--raw", "--recv-timeout", "10"])

    def finish(p: subprocess.Popen) -> bytes:
        o, e = p.communicate(timeout=15)
        assert p.returncode == 0, e
        return o

    try:
        url = protocol.control_url(name, ipc_dir)
        cmd = protocol.encode_command(protocol.CMD_START,
                                      Control(f"{name}_upper", protocol.TYPE_FUNC))
        first = cat("--rep", "--listen", url, "--data", cmd.decode(), "--count", "1")
        plugin = start([bare, "-u", str(dest / f"{name}.py"), protocol.encode_portable_config()],
                       cwd=str(dest), env={"PATH": "/usr/bin:/bin", protocol.IPC_DIR_ENV: ipc_dir})
        assert finish(first) == protocol.HANDSHAKE
        result = cat("--rep", "--listen", url, "--count", "1")
        req = protocol.encode_func_request(protocol.FUNC_EXEC,
                                           ["abc", FuncMeta("r", "o", 0, 1).encode()])
        func = cat("--rep", "--listen", protocol.function_url(f"{name}_upper", ipc_dir),
                   "--data", req.decode(), "--count", "2")
        assert finish(result) == protocol.REPLY_OK
        reply = finish(func)
        assert reply.startswith(protocol.HANDSHAKE), reply
        assert protocol.decode_func_reply(reply[len(protocol.HANDSHAKE):]) == (True, "ABC")
        plugin.send_signal(signal.SIGTERM)
        plugin.communicate(timeout=5)
        assert plugin.returncode == 0
    finally:
        for p in procs:
            if p.poll() is None:
                os.killpg(p.pid, signal.SIGKILL)
            p.communicate()


def set_version(dest: Path, version: str) -> None:
    p = dest / "ekuiper" / MANIFEST
    d = json.loads(p.read_text())
    d["version"] = version
    p.write_text(json.dumps(d))


def test_the_newer_sdk_wins_and_the_log_says_which(unpacked, host, tmp_path, caplog):
    dest, name, _ = unpacked
    nopip = tmp_path / "nopip"
    subprocess.run([sys.executable, "-m", "venv", "--without-pip", str(nopip)], check=True)
    py = str(nopip / "bin" / "python")
    caplog.set_level(logging.INFO, logger="ekl")
    # an older vendored copy: ekl's goes in front of it (ekl-python asks with "always")
    set_version(dest, "0.0.1")
    spec = resolve(load(dest), LaunchOptions(python=py), host_sdk="always")
    assert spec.sdk == "hosted" and spec.env["PYTHONSAFEPATH"] == "1"
    assert "ekl's SDK" in caplog.text and "in front of its older vendored copy 0.0.1" in caplog.text
    inst = host.start(dest, python=py)
    assert where(inst, name)["sdk"] == str(hosted_sdk_dir() / "ekuiper" / "__init__.py")
    # the plugin's own modules still import (its folder is on PYTHONPATH, after ekl's SDK)
    assert inst.start_function(f"{name}_upper").exec(["x"]) == "X"
    inst.close()
    # a newer vendored copy runs as it is, with any host_sdk
    caplog.clear()
    set_version(dest, "99.0")
    spec = resolve(load(dest), LaunchOptions(python=py), host_sdk="always")
    assert spec.sdk == "vendored" and "PYTHONPATH" not in spec.env
    assert "its vendored ekl SDK 99.0" in caplog.text and "is used" in caplog.text
    assert where(host.start(dest, python=py), name)["sdk"] == str(dest / "ekuiper" / "__init__.py")


def test_validate_reports_a_modified_added_missing_or_stale_copy(unpacked):
    dest, name, _ = unpacked

    def found(level: str) -> List[str]:
        return [f.text for f in validate(str(dest), run=False).findings if f.level == level]

    assert found("error") == [] and found("warning") == []
    (dest / "ekuiper" / "sink.py").write_text("# edited\n")
    (dest / "ekuiper" / "extra.py").write_text("")
    (dest / "ekuiper" / "runtime" / "shared.py").unlink()
    errors = found("error")
    assert any(e.startswith("ekuiper/sink.py: modified since `ekl package` vendored it")
               for e in errors), errors
    assert any(e.startswith("ekuiper/extra.py: not part of the vendored SDK") for e in errors)
    assert any(e.startswith("ekuiper/runtime/shared.py: missing from the vendored SDK")
               for e in errors)
    assert all("ekl package --vendor-sdk" in e for e in errors)
    cp = ekl("validate", str(dest), "--no-run")
    assert cp.returncode == 1 and "Traceback" not in cp.stderr
    assert cp.stdout.count("error: ekuiper/") == 3


def test_validate_stale_and_hostile_manifests(unpacked):
    dest, name, _ = unpacked
    set_version(dest, "0.0.1")
    warns = [f.text for f in validate(str(dest), run=False).findings if f.level == "warning"]
    assert any(w.startswith(f"ekuiper/{MANIFEST}: the vendored SDK is 0.0.1, older than the "
                            f"installed ekl-sdk") for w in warns), warns
    mpath = dest / "ekuiper" / MANIFEST
    good = json.loads(mpath.read_text())
    for bad in (b"{not json", b"[]", b'{"version": 1, "files": {}}', b"\xff\xfe",
                b'{"version": "1", "files": {"a": 5}}', b" " * (2 * 1024 * 1024)):
        mpath.write_bytes(bad)
        errors = [f.text for f in validate(str(dest), run=False).errors]
        assert len(errors) == 1 and errors[0].startswith(
            f"ekuiper/{MANIFEST}: not a vendored SDK manifest"), (bad[:20], errors)
    good["files"]["../../../etc/passwd"] = "0" * 64
    mpath.write_text(json.dumps(good))
    errors = [f.text for f in validate(str(dest), run=False).errors]
    assert any("lists '../../../etc/passwd', outside ekuiper/" in e for e in errors), errors


def test_version_order() -> None:
    assert version_key("0.1.0") == version_key("0.1") < version_key("0.1.1")
    assert version_key("0.2.0rc1") < version_key("0.2.0") < version_key("0.10.0")
    assert version_key("v1.2") == version_key("1.2.0")


def test_package_vendoring_rules_and_install_sh_refresh(tmp_path):
    name = f"p{short_id()}"
    folder = tmp_path / name
    init_plugin(name, folder)
    assert "ekl" not in json.loads((folder / f"{name}.json").read_text())
    out = tmp_path / "a.zip"
    assert ekl("package", str(folder), "-o", str(out), "--no-run").returncode == 0
    with zipfile.ZipFile(out) as zf:
        assert not any(n.startswith("ekuiper/") for n in zf.namelist())
    # --vendor-sdk: deterministic bytes, and the JSON flag does the same
    a, b = tmp_path / "v1.zip", tmp_path / "v2.zip"
    assert ekl("package", str(folder), "-o", str(a), "--no-run", "--vendor-sdk").returncode == 0
    assert ekl("package", str(folder), "-o", str(b), "--no-run", "--vendor-sdk").returncode == 0
    assert a.read_bytes() == b.read_bytes()
    # the plugin's own ekuiper/ folder is not silently replaced
    (folder / "ekuiper").mkdir()
    (folder / "ekuiper" / "__init__.py").write_text("")
    cp = ekl("package", str(folder), "-o", str(a), "--no-run", "--vendor-sdk")
    assert cp.returncode == 2 and "has its own ekuiper/ folder" in cp.stderr
    assert len(cp.stderr.strip().splitlines()) == 1
    shutil.rmtree(folder / "ekuiper")
    # an install.sh an older ekl wrote is refreshed in the zip; one the author wrote is kept
    old = "#!/bin/sh\n# eKuiper runs this with /bin/sh in the plugin folder after unpacking " \
          "the zip (the REST\necho old\n"
    (folder / "install.sh").write_text(old)
    cp = ekl("package", str(folder), "-o", str(a), "--no-run", "--json")
    doc = json.loads(cp.stdout)
    assert doc["generated"] == {"install.sh": "refreshed to the install.sh of this ekl"}
    with zipfile.ZipFile(a) as zf:
        assert zf.read("install.sh").decode() == install_sh(name)
        assert (zf.getinfo("install.sh").external_attr >> 16) & 0o777 == 0o755
    assert (folder / "install.sh").read_text() == old  # the folder itself is left alone
    (folder / "install.sh").write_text("#!/bin/sh\necho mine\n")
    assert ekl("package", str(folder), "-o", str(a), "--no-run").returncode == 0
    with zipfile.ZipFile(a) as zf:
        assert zf.read("install.sh") == b"#!/bin/sh\necho mine\n"
    # requirements.txt and no install.sh: one is added (eKuiper never reads requirements.txt)
    (folder / "install.sh").unlink()
    doc = json.loads(ekl("package", str(folder), "-o", str(a), "--no-run", "--json").stdout)
    assert doc["generated"]["install.sh"].startswith("added")
    # the ekl section's flag is checked
    j = folder / f"{name}.json"
    m = json.loads(j.read_text())
    m["ekl"] = {"vendor_sdk": "yes"}
    j.write_text(json.dumps(m))
    with pytest.raises(ManifestError, match="field 'ekl.vendor_sdk' is 'yes'; use true or false"):
        load(folder)


def test_ekl_python_runs_a_vendored_zip_on_a_bare_interpreter(unpacked, bare, ipc_dir, tmp_path):
    """eKuiper with pythonBin ekl-python: the relay talks to the plugin's vendored SDK."""
    import psutil
    from test_pythonbin import EKuiper

    from conftest import wait_for
    from ekl.launcher.process import is_gone

    dest, name, _ = unpacked
    script = str(dest / f"{name}.py")
    k = EKuiper(ipc_dir, str(tmp_path / "status"))
    try:
        inst = k.start(dest, EKL_PYTHON_BIN=bare)
        assert where(inst, name)["sdk"] == str(dest / "ekuiper" / "__init__.py")
        assert inst.start_function(f"{name}_upper").exec(["ok"]) == "OK"
        kids = [c for c in psutil.Process(inst.pid).children(recursive=True)
                if script in c.cmdline()]
        assert kids and "-S" in kids[0].cmdline()  # the bare interpreter runs it
    finally:
        k.close()
    assert wait_for(lambda: all(is_gone(c.pid) for c in kids), 5)


def test_sdk_files_leave_out_caches_and_litter_but_validate_sees_everything(tmp_path):
    from ekl.launcher.plugin.vendored import make_manifest, sdk_files

    src = tmp_path / "ekuiper"
    (src / "__pycache__").mkdir(parents=True)
    (src / "__pycache__" / "a.cpython-311.pyc").write_bytes(b"\0")
    for n in ("a.py", "a.py~", ".a.py.swp", "b.py.orig", MANIFEST):
        (src / n).write_text("x")
    assert sdk_files(src) == ["a.py"]
    assert sdk_files(src, skip_litter=False) == [".a.py.swp", "a.py", "a.py~", "b.py.orig"]
    assert list(make_manifest(src, "1.0")["files"]) == ["a.py"]


def test_vendoring_a_go_plugin_is_refused(tmp_path):
    d = tmp_path / "gop"
    d.mkdir()
    (d / "gop").write_text("#!/bin/sh\n")
    (d / "gop").chmod(0o755)
    (d / "gop.json").write_text(json.dumps({"language": "go", "executable": "gop",
                                            "functions": ["f"]}))
    cp = ekl("package", str(d), "-o", str(tmp_path / "gop.zip"), "--vendor-sdk", "--no-run")
    assert cp.returncode == 2 and "this plugin's language is 'go'" in cp.stderr
    assert "Traceback" not in cp.stderr and not (tmp_path / "gop.zip").exists()
