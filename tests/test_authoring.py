"""The plugin authors' workflow: ``ekl init``, ``validate``, ``package`` and progress output.

Real processes throughout: skeletons are generated and started, zips are written and read
back the way eKuiper's installer reads them.
"""

from __future__ import annotations

import json
import os
import posixpath
import shutil
import stat
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

from conftest import EXAMPLES, REPO
from ekl.launcher.authoring.scaffold import init_plugin
from ekl.launcher.authoring.validate import validate
from ekl.launcher.settings import LaunchOptions

PYSAM = EXAMPLES / "pysam"


def ekl(*args: str, cwd: Path | None = None, env: dict | None = None,
        timeout: float = 60) -> subprocess.CompletedProcess:
    full_env = dict(os.environ, **(env or {}))
    return subprocess.run([sys.executable, "-m", "ekl.launcher.cli", *args], capture_output=True,
                          text=True, timeout=timeout, cwd=cwd, env=full_env)


def one_line_errors(cp: subprocess.CompletedProcess) -> None:
    assert "Traceback" not in cp.stderr, cp.stderr


def errors_of(report) -> list:
    return [f.text for f in report.errors]


@pytest.fixture
def skeleton(tmp_path: Path):
    """A freshly generated plugin with a unique name, its folder and its name."""
    name = f"sk{os.urandom(3).hex()}"
    init_plugin(name, tmp_path / name)
    return tmp_path / name, name


# --- init --------------------------------------------------------------------------------


def test_init_writes_every_file_eKuiper_and_the_author_need(tmp_path):
    cp = ekl("init", "demo", "--json", cwd=tmp_path)
    assert cp.returncode == 0, cp.stderr
    doc = json.loads(cp.stdout)
    assert doc["symbols"] == {"source": "demo_source", "sink": "demo_sink", "function": "demo_upper"}
    folder = tmp_path / "demo"
    for rel in ("demo.json", "demo.py", "sources/demo_source.yaml", "sources/demo_source.json",
                "sinks/demo_sink.json", "functions/demo_upper.json", "requirements.txt",
                "install.sh", "test_demo.py"):
        assert (folder / rel).is_file(), rel
        assert rel in doc["files"]
    manifest = json.loads((folder / "demo.json").read_text())
    assert manifest["executable"] == "demo.py" and manifest["language"] == "python"
    assert os.stat(folder / "install.sh").st_mode & stat.S_IXUSR
    assert json.loads((folder / "functions/demo_upper.json").read_text())["functions"][0]["name"] \
        == "demo_upper"


@pytest.mark.parametrize("bad", ["my-plugin", "9lives", "a b", "", "x/y", "naïve"])
def test_init_refuses_invalid_names_in_one_line(tmp_path, bad):
    cp = ekl("init", bad, "--dir", str(tmp_path / "p"), cwd=tmp_path)
    assert cp.returncode == 2
    one_line_errors(cp)
    assert "invalid plugin name" in cp.stderr and len(cp.stderr.strip().splitlines()) == 1
    assert not (tmp_path / "p").exists()


def test_init_refuses_a_non_empty_folder_and_accepts_an_empty_one(tmp_path):
    (tmp_path / "full").mkdir()
    (tmp_path / "full" / "keep.txt").write_text("mine")
    cp = ekl("init", "demo", "--dir", str(tmp_path / "full"))
    assert cp.returncode == 2 and "is not empty" in cp.stderr
    one_line_errors(cp)
    assert (tmp_path / "full" / "keep.txt").read_text() == "mine"
    assert sorted(os.listdir(tmp_path / "full")) == ["keep.txt"]
    (tmp_path / "empty").mkdir()
    assert ekl("init", "demo", "--dir", str(tmp_path / "empty")).returncode == 0
    assert (tmp_path / "empty" / "demo.json").is_file()


def test_init_then_run_validate_and_install_sh(skeleton, tmp_path):
    folder, name = skeleton
    cp = ekl("run", str(folder), "--count", "3", "--config", '{"interval": 0.01}',
             "--datasource", "dev")
    assert cp.returncode == 0, cp.stderr
    rows = [json.loads(x) for x in cp.stdout.splitlines()]
    assert rows == [{"text": f"dev {n}", "seq": n, f"{name}_upper": f"DEV {n}"} for n in range(3)]
    cp = ekl("validate", str(folder))
    assert cp.returncode == 0, cp.stdout + cp.stderr
    assert cp.stdout == ""  # no findings at all
    # install.sh into a venv that already has an SDK (ekl's, through a .pth file) and nothing
    # to install: no pip (nothing to install needs none) and no network
    venv = tmp_path / "venv"
    py = venv / "bin" / "python"
    subprocess.run([sys.executable, "-m", "venv", "--without-pip", str(venv)], check=True)
    site = subprocess.run([str(py), "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"],
                          capture_output=True, text=True, check=True).stdout.strip()
    (Path(site) / "ekl_sdk.pth").write_text(str(REPO / "sdk") + "\n")
    r = subprocess.run(["/bin/sh", str(folder / "install.sh"), str(py)], capture_output=True,
                       text=True, timeout=60)
    assert r.returncode == 0, r.stderr
    assert f"{name}: installing into {venv}" in r.stdout
    assert "nothing to install" in r.stdout and "installing PyPI's ekuiper" not in r.stdout, r.stdout


# --- validate: static --------------------------------------------------------------------


def test_validate_reports_static_problems_one_line_each(skeleton):
    folder, name = skeleton
    m = json.loads((folder / f"{name}.json").read_text())
    m["executable"] = f"./{name}.py"
    m["functions"] = ["9bad"]
    (folder / f"{name}.json").write_text(json.dumps(m))
    (folder / "sources" / "helper.py").write_text("X = 1\n")
    (folder / "sinks" / f"{name}_sink.json").write_text("{not json")
    (folder / f"{name}_sink.py").write_text("def broken(:\n")
    (folder / "install.sh").write_bytes(b"#!/bin/sh\r\necho hi\r\n")
    cp = ekl("validate", str(folder), "--no-run")
    assert cp.returncode == 1
    one_line_errors(cp)
    out = cp.stdout
    assert f"field 'executable' is './{name}.py'" in out and f"as '{name}.py'" in out
    assert "field 'functions' has '9bad'" in out
    assert "sources/helper.py: eKuiper copies sources/ into its configuration folder" in out
    assert f"sinks/{name}_sink.json: not valid JSON" in out
    assert f"{name}_sink.py: line 1: syntax error" in out
    assert "install.sh: has Windows line endings" in out
    assert all(line.startswith(("error: ", "warning: ", "note: ")) for line in out.splitlines())


def test_validate_reports_manifest_problems_and_exits_1(tmp_path):
    p = tmp_path / "broken"
    p.mkdir()
    (p / "broken.json").write_text(json.dumps({"language": "java", "executable": "nope.py",
                                               "sources": ["s1"]}))
    cp = ekl("validate", str(p), "--json")
    assert cp.returncode == 1
    doc = json.loads(cp.stdout)
    texts = [f["message"] for f in doc["findings"]]
    assert any("field 'language'" in t and "java" in t for t in texts)
    assert any("field 'executable'" in t for t in texts)
    assert any("sources/s1.yaml" in t for t in texts)
    assert doc["ok"] is False and doc["runtime"] == "skipped"


def test_validate_missing_target_is_bad_input():
    cp = ekl("validate", "/nonexistent/plugin")
    assert cp.returncode == 2 and "no such plugin" in cp.stderr
    one_line_errors(cp)


# --- validate: run time ------------------------------------------------------------------


def test_validate_finds_misspelt_and_undeclared_symbols(skeleton):
    folder, name = skeleton
    m = json.loads((folder / f"{name}.json").read_text())
    m["sources"] = [f"{name}_sorce"]        # misspelt: the program registers _source
    m["sinks"] = []                          # undeclared: the program registers _sink
    (folder / f"{name}.json").write_text(json.dumps(m))
    shutil.copy(folder / "sources" / f"{name}_source.yaml", folder / "sources" / f"{name}_sorce.yaml")
    report = validate(str(folder))
    errs = errors_of(report)
    assert any(f"field 'sources' lists '{name}_sorce', which {name}.py does not register (it "
               f"registers sources: {name}_source)" in e for e in errs), errs
    assert any(f"field 'sources' does not list '{name}_source'" in e for e in errs), errs
    assert any(f"field 'sinks' does not list '{name}_sink'" in e for e in errs), errs
    assert report.registered == {"sources": [f"{name}_source"], "sinks": [f"{name}_sink"],
                                 "functions": [f"{name}_upper"]}
    assert report.runtime == "done"


def test_validate_reports_a_symbol_that_fails_to_start(skeleton):
    folder, name = skeleton
    (folder / "sources" / f"{name}_source.yaml").write_text("default:\n  interval: -1\n")
    report = validate(str(folder))
    errs = errors_of(report)
    assert any(f"{name}.py: source '{name}_source' does not start" in e
               and "interval must be >= 0" in e for e in errs), errs


def test_validate_reports_a_plugin_that_does_not_start(skeleton):
    folder, name = skeleton
    main = folder / f"{name}.py"
    main.write_text(main.read_text().replace(f'"{name}",', '"othername",', 1))
    cp = ekl("validate", str(folder), "--init-timeout", "1.5")
    assert cp.returncode == 1
    one_line_errors(cp)
    assert f"error: {name}.py: the plugin does not start: plugin {name} sent no handshake" in cp.stdout


def test_validate_stops_asking_a_plugin_whose_control_thread_hangs(plugin_copy):
    from ekl.launcher.settings import HostSettings

    folder = plugin_copy("compat")
    report = validate(str(folder), settings=HostSettings(command_timeout_s=1.0))
    errs = errors_of(report)
    assert len(errs) == 1, errs
    assert "the start of source 'stuck' got no answer within 1 s" in errs[0]
    assert "The remaining checks were skipped" in errs[0]


def test_validate_with_the_official_sdk_skips_the_registered_check(skeleton, official_python):
    folder, _ = skeleton
    report = validate(str(folder), LaunchOptions(python=official_python))
    assert report.ok, errors_of(report)
    assert any("only ekl's SDK names its registered symbols" in f.text for f in report.findings)


# --- validate: zips ----------------------------------------------------------------------


def _zip(path: Path, entries: dict) -> Path:
    with zipfile.ZipFile(path, "w") as zf:
        for name, data in entries.items():
            info = zipfile.ZipInfo(name)
            info.external_attr = (stat.S_IFREG | 0o644) << 16
            zf.writestr(info, data)
    return path


def test_validate_zip_layout_problems(tmp_path):
    manifest = json.dumps({"language": "python", "executable": "z.py", "sources": ["s"]})
    wrapped = _zip(tmp_path / "z.zip", {"z/z.json": manifest, "z/z.py": "", "z/sources/s.yaml": ""})
    cp = ekl("validate", str(wrapped))
    assert cp.returncode == 1 and "z/z.json is inside the folder z/" in cp.stdout
    flat = _zip(tmp_path / "other.zip", {"z.json": manifest, "sub\\z.py": "",
                                         "../evil.py": "", "__pycache__/x.pyc": ""})
    cp = ekl("validate", str(flat), "--no-run")
    assert cp.returncode == 1
    one_line_errors(cp)
    assert "entry 'sub\\\\z.py' uses backslashes" in cp.stdout
    assert "entry '../evil.py' points outside" in cp.stdout
    assert "executable 'z.py' named in z.json is not in the zip" in cp.stdout
    assert "sources/s.yaml is not in the zip" in cp.stdout
    assert "is a Python cache" in cp.stdout
    assert "eKuiper installs it under the name given in the REST call" in cp.stdout
    bad = tmp_path / "bad.zip"
    bad.write_text("not a zip")
    cp = ekl("validate", str(bad))
    assert cp.returncode == 1 and "bad.zip: not a zip file" in cp.stdout


def test_validate_zip_go_executable_needs_its_mode(tmp_path):
    manifest = json.dumps({"language": "go", "executable": "g", "functions": ["f"]})
    z = _zip(tmp_path / "g.zip", {"g.json": manifest, "g": "binary"})
    cp = ekl("validate", str(z), "--no-run")
    assert cp.returncode == 1 and "'g' has no execute permission in the zip" in cp.stdout


# --- package -----------------------------------------------------------------------------


def eKuiper_unpack(zpath: Path, dest: Path) -> None:
    """Unpack as eKuiper's portable manager does: each entry by its cleaned name; folders
    by a single Mkdir (no parents), so a file whose folder entry is missing fails."""
    with zipfile.ZipFile(zpath) as zf:
        for info in zf.infolist():
            name = posixpath.normpath(info.filename)
            target = dest / name
            if info.is_dir():
                target.mkdir(exist_ok=True)
                continue
            parent = os.path.dirname(name)
            if parent:
                (dest / parent).mkdir(exist_ok=True)  # Mkdir, not MkdirAll
            target.write_bytes(zf.read(info))
            os.chmod(target, (info.external_attr >> 16) & 0o777)


def test_package_layout_exclusions_modes_and_determinism(skeleton, tmp_path):
    folder, name = skeleton
    (folder / "__pycache__").mkdir()
    (folder / "__pycache__" / "x.cpython-311.pyc").write_bytes(b"\0")
    (folder / ".git").mkdir()
    (folder / ".git" / "HEAD").write_text("ref")
    venv = folder / "env"
    venv.mkdir()
    (venv / "pyvenv.cfg").write_text("home = /usr")
    (folder / f".{name}.py.swp").write_text("")
    (folder / "notes.txt~").write_text("")
    (folder / "lib" / "deep").mkdir(parents=True)
    (folder / "lib" / "deep" / "util.py").write_text("X = 1\n")
    (folder / "tool.sh").write_text("#!/bin/sh\n")
    (folder / "tool.sh").chmod(0o700)
    (folder / "secret.key").write_text("k")
    (folder / ".eklignore").write_text("# comment\n*.key\n")
    out = tmp_path / "out" / f"{name}.zip"
    out.parent.mkdir()
    cp = ekl("package", str(folder), "-o", str(out), "--json")
    assert cp.returncode == 0, cp.stderr
    doc = json.loads(cp.stdout)
    with zipfile.ZipFile(out) as zf:
        names = zf.namelist()
        modes = {i.filename: (i.external_attr >> 16) & 0o777 for i in zf.infolist()}
        times = {i.date_time for i in zf.infolist()}
    assert names[0] == f"{name}.json"
    assert names.index("lib/") < names.index("lib/deep/") < names.index("lib/deep/util.py")
    assert modes["install.sh"] == 0o755 and modes["tool.sh"] == 0o755
    assert modes[f"{name}.py"] == 0o644 and modes["lib/"] == 0o755
    assert times == {(1980, 1, 1, 0, 0, 0)}
    for left_out in ("__pycache__", ".git", "env/", ".swp", "notes.txt~", "secret.key",
                     f"test_{name}.py", ".eklignore", ".gitignore"):
        assert not any(left_out in n for n in names), (left_out, names)
    assert {f["path"] for f in doc["files"]} == {n for n in names if not n.endswith("/")}
    assert doc["validation"]["ok"] is True
    skipped = {s["path"]: s["reason"] for s in doc["skipped"]}
    assert skipped["env/"] == "virtual environment"
    # the same folder gives the same bytes
    out2 = tmp_path / "out" / "again.zip"
    assert ekl("package", str(folder), "-o", str(out2), "--no-run").returncode == 0
    assert out.read_bytes() == out2.read_bytes()
    # eKuiper can unpack it, and what it unpacked runs
    dest = tmp_path / "installed"
    dest.mkdir()
    eKuiper_unpack(out, dest)
    assert os.stat(dest / "install.sh").st_mode & stat.S_IXUSR
    cp = ekl("call", str(dest), f"{name}_upper", '"ok"')
    assert cp.returncode == 0 and json.loads(cp.stdout) == "OK", cp.stderr
    cp = ekl("validate", str(out))
    assert cp.returncode == 0, cp.stdout + cp.stderr


def test_package_prints_what_went_in_and_defaults_to_cwd(skeleton, tmp_path):
    folder, name = skeleton
    cwd = tmp_path / "cwd"
    cwd.mkdir()
    cp = ekl("package", str(folder), "--no-run", cwd=cwd, env={"EKL_PROGRESS": "plain"})
    assert cp.returncode == 0, cp.stderr
    assert (cwd / f"{name}.zip").is_file()
    lines = cp.stdout.splitlines()
    assert lines[0].split()[-1] == f"{name}.json"
    assert any(ln.startswith("0755") and ln.endswith("install.sh") for ln in lines)
    assert f"wrote {cwd / (name + '.zip')}" in cp.stderr
    assert "POST http://127.0.0.1:9081/plugins/portables" in cp.stderr
    assert "\x1b" not in cp.stderr  # plain lines off a terminal


def test_package_refuses_bad_outputs_and_invalid_plugins(skeleton, tmp_path):
    folder, name = skeleton
    for out, text in ((folder / f"{name}.py", "must end in .zip"),
                      (tmp_path, "must end in .zip"),
                      (tmp_path / "missing" / "x.zip", "does not exist"),
                      (folder, "must end in .zip")):
        cp = ekl("package", str(folder), "-o", str(out), "--no-run")
        assert cp.returncode == 2 and text in cp.stderr, (out, cp.stderr)
        one_line_errors(cp)
    (tmp_path / "adir.zip").mkdir()
    cp = ekl("package", str(folder), "-o", str(tmp_path / "adir.zip"), "--no-run")
    assert cp.returncode == 2 and "is a folder" in cp.stderr
    (folder / f"{name}_function.py").write_text("def (:\n")
    cp = ekl("package", str(folder), "-o", str(tmp_path / "x.zip"))
    assert cp.returncode == 1 and "syntax error" in cp.stderr and "no package written" in cp.stderr
    assert not (tmp_path / "x.zip").exists()
    one_line_errors(cp)


def test_package_of_a_zip_is_refused(tmp_path):
    z = _zip(tmp_path / "a.zip", {"a.json": "{}"})
    cp = ekl("package", str(z))
    assert cp.returncode == 2 and "is already a zip" in cp.stderr


def test_package_the_example(tmp_path):
    out = tmp_path / "pysam.zip"
    cp = ekl("package", str(PYSAM), "-o", str(out))
    assert cp.returncode == 0, cp.stderr
    names = zipfile.ZipFile(out).namelist()
    assert names[0] == "pysam.json" and "pysam.py" in names and "sources/pyjson.yaml" in names
    assert "test_pysam.py" not in names


# --- progress ----------------------------------------------------------------------------


def test_progress_on_a_terminal_spins_and_off_it_prints_lines(skeleton, tmp_path):
    folder, name = skeleton
    cp = ekl("package", str(folder), "-o", str(tmp_path / "a.zip"), env={"EKL_PROGRESS": "tty"})
    assert cp.returncode == 0, cp.stderr
    assert "\x1b[K✓ starting plugin" in cp.stderr and f"✓ packaging {name}" in cp.stderr
    cp = ekl("package", str(folder), "-o", str(tmp_path / "b.zip"), env={"EKL_PROGRESS": "plain"})
    assert "ekl: starting plugin" in cp.stderr and "\x1b" not in cp.stderr
    cp = ekl("-q", "package", str(folder), "-o", str(tmp_path / "c.zip"), "--json")
    assert "starting plugin" not in cp.stderr
    json.loads(cp.stdout)
