"""``ekl env doctor``: can this plugin's environment run it, and if not, what mends it."""

from __future__ import annotations

import os
import shlex
import shutil
from dataclasses import asdict, dataclass
from typing import List, Optional

from ._manifest import Plugin
from .locate import find_environment
from .lock import check_environment, lock_candidates
from .model import EnvError, Environment
from .probe import ProbeError, clean_env, probe

MIN_PYTHON = (3, 8)


@dataclass
class Check:
    name: str
    status: str  # "ok" | "fail" | "warn" | "skip"
    detail: str
    fix: Optional[str] = None

    @property
    def ok(self) -> bool:
        return self.status != "fail"


def _q(p: object) -> str:
    return shlex.quote(str(p))


def doctor(plugin: Plugin) -> List[Check]:
    ref = _q(plugin.dir)
    checks: List[Check] = []
    env: Optional[Environment] = None
    if plugin.env_name or plugin.env_kind == "pixi":
        try:
            env = find_environment(plugin.env_kind, plugin.env_name or "",
                                   plugin_dir=plugin.dir)
            checks.append(Check("environment", "ok", f"{env.kind} {env.prefix}"
                                + (f" (found in {env.found_in})" if env.found_in else "")))
        except EnvError as e:
            checks.append(Check("environment", "fail", str(e), f"ekl env create {ref}"))
            return checks
        python = str(env.python)
        run_env = env.activation(clean_env())
    else:
        python = shutil.which("python3") or shutil.which("python") or "python3"
        checks.append(Check("environment", "skip",
                            f"the plugin's JSON names no env; checked {python} from PATH"))
        run_env = clean_env()
    try:
        info = probe(python, env=run_env)
    except ProbeError as e:
        fix = f"ekl env create {ref}" if env else "install python3"
        checks.append(Check("interpreter", "fail", str(e), fix))
        return checks
    checks.append(Check("interpreter", "ok", f"{python} runs"))
    vt = info.version_text
    if info.version[:2] < MIN_PYTHON:
        checks.append(Check("python version", "fail",
                            f"Python {vt}; plugins need {'.'.join(map(str, MIN_PYTHON))}+",
                            f"recreate the env with a newer python (ekl env create {ref})"))
    else:
        checks.append(Check("python version", "ok", f"Python {vt}"))
    pip = f"{_q(python)} -m pip install"
    if info.pynng:
        checks.append(Check("pynng", "ok", f"pynng {info.pynng}"))
    else:
        checks.append(Check("pynng", "fail", f"pynng not importable ({info.pynng_error})",
                            f"{pip} pynng"))
    if info.ekuiper:
        checks.append(Check("ekuiper sdk", "ok", f"{info.sdk_flavour} ekuiper "
                            f"{info.ekuiper.get('version')} at {info.ekuiper.get('path')}"))
    elif info.pynng:
        checks.append(Check("ekuiper sdk", "warn",
                            "no ekuiper package in the env; hostable: pynng is there, so "
                            "ekl's own SDK can serve the plugin", f"{pip} ekuiper"))
    else:
        checks.append(Check("ekuiper sdk", "fail",
                            f"ekuiper not importable ({info.ekuiper_error})",
                            f"{pip} pynng ekuiper"))
    if env is None:
        return checks
    try:
        drift = check_environment(plugin.dir, plugin.manifest, env)
    except EnvError as e:
        checks.append(Check("lock", "fail", str(e), "fix or regenerate the lock file"))
        return checks
    if drift is None:
        names = ", ".join(p.name for p in lock_candidates(plugin.dir))
        checks.append(Check("lock", "skip", f"no lock file ({names} or \"ekl\": "
                            f"{{\"lock\": ...}} in the JSON)"))
    elif drift.clean:
        checks.append(Check("lock", "ok", f"matches {os.path.basename(drift.lock)}"))
    else:
        checks.append(Check("lock", "fail", drift.summary(ref),
                            f"rm -r {_q(env.prefix)} && ekl env create {ref}"))
    return checks


def checks_to_json(checks: List[Check]) -> dict:
    return {"ok": all(c.ok for c in checks),
            "checks": [dict(asdict(c), ok=c.ok) for c in checks]}
