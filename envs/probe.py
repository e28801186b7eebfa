"""Ask an interpreter, once, what it can run: its version, pynng, and which ``ekuiper`` SDK.

Starting a plugin must not pay for this every time, so the answer is cached on disk keyed
by the interpreter's resolved path, size and mtime (a reinstall or upgrade changes them).
"""

from __future__ import annotations

import hashlib
import json
import os
import subprocess
from pathlib import Path

from ekuiper.record import asdict, record

TYPE_CHECKING = False  # typing is not loaded at run time on the start path (docs/architecture.md)
if TYPE_CHECKING:
    from typing import Any, Callable, Dict, List, Mapping, Optional, Tuple

PROBE_TIMEOUT_S = 30.0
CACHE_ENV = "EKL_CACHE_DIR"

_PROBE = r"""
import json, sys
out = {"version": list(sys.version_info[:3]), "executable": sys.executable,
       "prefix": sys.prefix, "pynng": None, "pynng_error": None, "ekuiper": None,
       "ekuiper_error": None}
try:
    import pynng
    out["pynng"] = getattr(pynng, "__version__", None) or "unknown"
except Exception as e:
    out["pynng_error"] = "%s: %s" % (type(e).__name__, e)
try:
    import ekuiper
    ver = getattr(ekuiper, "__version__", None)
    if ver is None:
        try:
            from importlib.metadata import version
            ver = version("ekuiper")
        except Exception:
            ver = "unknown"
    out["ekuiper"] = {"path": ekuiper.__file__, "version": ver,
                      "flavour": "ekl" if getattr(ekuiper, "EKL_SDK", False) else "official"}
except Exception as e:
    out["ekuiper_error"] = "%s: %s" % (type(e).__name__, e)
print(json.dumps(out))
"""


class ProbeError(Exception):
    """The interpreter could not be run at all (one-line message)."""


@record(frozen=True)
class InterpreterInfo:
    python: str
    version: Tuple[int, int, int]
    executable: str
    prefix: str
    pynng: Optional[str]
    pynng_error: Optional[str]
    ekuiper: Optional[Dict[str, str]]
    ekuiper_error: Optional[str]

    @property
    def version_text(self) -> str:
        return ".".join(map(str, self.version))

    @property
    def sdk_flavour(self) -> Optional[str]:
        """``"ekl"``, ``"official"`` or None when no ``ekuiper`` is importable."""
        return self.ekuiper["flavour"] if self.ekuiper else None

    def to_dict(self) -> Dict[str, Any]:
        d = asdict(self)
        d["version"] = self.version_text
        return d


def cache_dir() -> Path:
    """ekl's cache folder, created 0700 whatever the umask (it holds unpacked plugins and
    copies of the SDK that interpreters import: nobody else may write there). The launcher
    also refuses one owned by another user (``fsafe.ensure_private_dir``) before using it."""
    base = os.environ.get(CACHE_ENV) or os.path.join(
        os.environ.get("XDG_CACHE_HOME") or os.path.expanduser("~/.cache"), "ekl")
    if not os.path.isdir(base):
        try:
            os.makedirs(base, mode=0o700, exist_ok=True)
            os.chmod(base, 0o700)  # makedirs' mode is filtered by the umask
        except OSError:
            pass  # the caller's own write reports the problem with its path
    return Path(base)


def clean_env(env: Optional[Mapping[str, str]] = None) -> Dict[str, str]:
    """The launcher's environment minus what would leak into another interpreter."""
    e = dict(os.environ if env is None else env)
    for k in ("PYTHONHOME", "PYTHONPATH", "PYTHONEXECUTABLE", "__PYVENV_LAUNCHER__"):
        e.pop(k, None)
    return e


def run_bounded(argv: List[str], env: Mapping[str, str], timeout: float,
                cwd: str = "/") -> subprocess.CompletedProcess:
    """Run ``argv`` (output captured, no stdin) and, on timeout, kill its whole process
    group: a hook that backgrounds a child holding the pipes must not hang the caller
    (``subprocess.run`` alone would wait for those pipes forever). Raises
    ``subprocess.TimeoutExpired`` after the kill."""
    import signal

    p = subprocess.Popen(argv, env=dict(env), cwd=cwd, stdin=subprocess.DEVNULL,
                         stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                         errors="replace", start_new_session=True)
    try:
        out, err = p.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        try:
            os.killpg(p.pid, signal.SIGKILL)
        except OSError:
            pass
        try:
            p.communicate(timeout=5)
        except subprocess.TimeoutExpired:
            pass
        p.wait()
        raise
    return subprocess.CompletedProcess(argv, p.returncode, out, err)


def _key(python: Path, resolved: Path) -> str:
    """Path and mtime of the interpreter, plus the mtime of its prefix's site-packages.

    A venv's ``bin/python`` resolves to the shared base binary, so the given path is part
    of the key; installing a package changes site-packages but not the binary, so its
    folder's mtime is part of it too (a failed probe is not cached forever).
    """
    st = resolved.stat()
    parts = [str(python), str(resolved), str(st.st_size), str(st.st_mtime_ns)]
    for sp in sorted(python.parent.parent.glob("lib/python*/site-packages")):
        try:
            parts.append(f"{sp}:{sp.stat().st_mtime_ns}")
        except OSError:
            pass
    return hashlib.sha256("|".join(parts).encode()).hexdigest()[:32]


def probe(python: str | os.PathLike, env: Optional[Mapping[str, str]] = None,
          use_cache: bool = True,
          wrap: Optional[Callable[[List[str]], List[str]]] = None) -> InterpreterInfo:
    """Run the probe in ``python`` (or read the cached answer).

    ``wrap`` turns the probe's argv into the one a start runs (``Environment.wrap_command``:
    activate.d hooks first); a wrapped probe is never cached, since a hook can change what
    the interpreter imports.
    """
    given = str(python)
    path = Path(given)
    if not path.is_absolute():
        from shutil import which
        found = which(given)
        if found is None:
            raise ProbeError(f"interpreter {given!r} is not on PATH; give its absolute path")
        path = Path(found)
    try:
        resolved = path.resolve(strict=True)
    except OSError:
        raise ProbeError(f"interpreter {path} does not exist") from None
    if not os.access(resolved, os.X_OK):
        raise ProbeError(f"interpreter {path} is not executable")
    cache_file = cache_dir() / "probe" / f"{_key(path, resolved)}.json"
    if use_cache and wrap is None and cache_file.is_file():
        try:
            data = json.loads(cache_file.read_text())
            if data.get("python") == str(path):
                return _info(data)
        except (OSError, ValueError, KeyError, TypeError):
            pass
    try:
        argv = [str(path), "-c", _PROBE]
        cp = run_bounded(wrap(argv) if wrap else argv, clean_env(env), PROBE_TIMEOUT_S)
    except subprocess.TimeoutExpired:
        raise ProbeError(f"interpreter {path} did not answer within {PROBE_TIMEOUT_S:.0f} s") from None
    except OSError as e:
        raise ProbeError(f"interpreter {path} cannot be run: {e.strerror}") from None
    lines = cp.stdout.strip().splitlines()
    if cp.returncode != 0 or not lines:
        last = (cp.stderr.strip().splitlines() or ["no output"])[-1]
        raise ProbeError(f"interpreter {path} failed to start (exit {cp.returncode}): {last}")
    try:
        data = json.loads(lines[-1])
    except ValueError:
        raise ProbeError(f"interpreter {path} is not a Python interpreter") from None
    data["python"] = str(path)
    info = _info(data)
    if wrap is not None:
        return info
    try:
        cache_file.parent.mkdir(parents=True, exist_ok=True)
        tmp = cache_file.with_suffix(f".{os.getpid()}.tmp")
        tmp.write_text(json.dumps(data))
        os.replace(tmp, cache_file)
    except OSError:
        pass  # a read-only cache only costs the probe again
    return info


def _info(d: Dict[str, Any]) -> InterpreterInfo:
    return InterpreterInfo(python=d["python"], version=tuple(d["version"]),  # type: ignore[arg-type]
                           executable=d["executable"], prefix=d["prefix"], pynng=d["pynng"],
                           pynng_error=d.get("pynng_error"), ekuiper=d.get("ekuiper"),
                           ekuiper_error=d.get("ekuiper_error"))
