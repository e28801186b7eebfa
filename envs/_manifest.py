"""TEMPORARY: a tiny reader of a plugin's ``NAME.json`` for ``launcher/cli/env.py`` only.

``envs`` is a library that takes a :class:`~ekl.envs.model.PluginEnv` and never parses
plugin JSON; this module exists until the launcher's single plugin reader builds the
``PluginEnv`` for the ``ekl env`` commands (issue 10). Nothing in ``envs`` imports it.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any, Dict, Optional

from .model import EnvError, PluginEnv


def _field(manifest: Dict[str, Any], key: str) -> Optional[str]:
    # The environment may sit in the "ekl" section (eKuiper ignores it, so it does not
    # wrap ekl-python in `conda run`); the launcher's manifest reads it the same way.
    v = manifest.get(key)
    sec = manifest.get("ekl")
    if v is None and isinstance(sec, dict):
        v = sec.get(key)
    return str(v) if v else None


def load_plugin(arg: str) -> PluginEnv:
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
    sec = data.get("ekl")
    lock = sec.get("lock") if isinstance(sec, dict) else None
    return PluginEnv(folder=p.parent, json_path=p, name=p.stem,
                     kind=_field(data, "virtualEnvType"), env=_field(data, "env"),
                     lock=str(lock) if lock else None)
