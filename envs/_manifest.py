"""A deliberately tiny reader of a plugin's ``NAME.json`` for the ``ekl env`` commands.

The launcher has its own, complete manifest module; this one only needs the folder, the JSON
and the fields that name the environment, and stays private so the two cannot be confused.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Dict, Optional

from .model import EnvError


@dataclass
class Plugin:
    dir: Path
    json_path: Path
    name: str
    manifest: Dict[str, Any]

    def _field(self, key: str) -> Optional[str]:
        # The environment may sit in the "ekl" section (eKuiper ignores it, so it does not
        # wrap ekl-python in `conda run`); the launcher's manifest reads it the same way.
        v = self.manifest.get(key)
        sec = self.manifest.get("ekl")
        if v is None and isinstance(sec, dict):
            v = sec.get(key)
        return str(v) if v else None

    @property
    def env_kind(self) -> Optional[str]:
        return self._field("virtualEnvType")

    @property
    def env_name(self) -> Optional[str]:
        return self._field("env")


def load_plugin(arg: str) -> Plugin:
    """A plugin folder or its NAME.json -> the plugin (EnvError on anything unusable)."""
    p = Path(arg).expanduser()
    if p.is_dir():
        d = p.resolve()
        cand = d / f"{d.name}.json"
        if not cand.is_file():
            found = []
            for j in sorted(d.glob("*.json")):
                try:
                    data = json.loads(j.read_text(encoding="utf-8"))
                except (OSError, ValueError):
                    continue
                if isinstance(data, dict) and "executable" in data:
                    found.append(j)
            if len(found) != 1:
                what = "no" if not found else f"{len(found)}"
                raise EnvError(f"{d} has {what} plugin JSON files (NAME.json with "
                               f"\"executable\"); give the JSON file itself")
            cand = found[0]
        p = cand
    elif not p.is_file():
        raise EnvError(f"plugin {arg} does not exist; give a plugin folder or its NAME.json")
    try:
        data = json.loads(p.read_text(encoding="utf-8"))
    except OSError as e:
        raise EnvError(f"cannot read {p}: {e.strerror}") from None
    except ValueError as e:
        raise EnvError(f"{p} is not valid JSON ({e}); fix the file") from None
    if not isinstance(data, dict):
        raise EnvError(f"{p} must hold a JSON object")
    p = p.resolve()
    return Plugin(dir=p.parent, json_path=p, name=p.stem, manifest=data)
