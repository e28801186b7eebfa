"""Read a plugin's ``NAME.json`` (from its folder, the file, or a zip) and validate it.

Checks what eKuiper checks at install time (name, language, executable, at least one
symbol, ``sources/{s}.yaml``) and what it only finds out later or never (executable inside
the folder, environment fields). Every problem is reported at once, one line each, naming
the file, the field and the fix.
"""

from __future__ import annotations

import hashlib
import json
import os
import zipfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Dict, List, Optional

from .errors import ManifestError

LANGUAGES = ("python", "go")
ENV_TYPES = ("conda", "venv")
SYMBOL_KINDS = ("sources", "sinks", "functions")


@dataclass
class PluginManifest:
    name: str
    path: Path              # the NAME.json file
    folder: Path
    language: str
    executable: Path        # absolute, inside folder
    version: str = ""
    sources: List[str] = field(default_factory=list)
    sinks: List[str] = field(default_factory=list)
    functions: List[str] = field(default_factory=list)
    virtual_env_type: Optional[str] = None
    env: Optional[str] = None
    raw: Dict[str, Any] = field(default_factory=dict)

    def source_config(self, source: str, conf_key: str = "default") -> Dict[str, Any]:
        """The ``conf_key`` section of ``sources/{source}.yaml``, as eKuiper merges it."""
        import yaml  # only the verbs that start sources need it

        path = self.folder / "sources" / f"{source}.yaml"
        if not path.is_file():
            return {}
        try:
            data = yaml.safe_load(path.read_text()) or {}
        except yaml.YAMLError as e:
            raise ManifestError([f"{path}: not valid YAML: {' '.join(str(e).split())}"]) from None
        if not isinstance(data, dict):
            raise ManifestError([f"{path}: must be a mapping of config keys (default: ...)"])
        section = data.get(conf_key)
        if section is None and conf_key != "default":
            raise ManifestError([f"{path}: has no section {conf_key!r}; it has "
                                 f"{', '.join(map(str, data)) or 'none'}"])
        return dict(section or {})


def find_json(target: Path) -> Path:
    """The plugin's JSON for a folder (``NAME/NAME.json``) or the file itself."""
    if target.is_file():
        if target.suffix == ".zip":
            return find_json(unpack_zip(target))
        return target
    if not target.exists():
        raise ManifestError([f"{target}: no such plugin folder or file"])
    candidate = target / f"{target.resolve().name}.json"
    if candidate.is_file():
        return candidate
    jsons = sorted(p for p in target.glob("*.json") if _looks_like_manifest(p))
    if len(jsons) == 1:
        return jsons[0]
    if not jsons:
        raise ManifestError([f"{target}: no plugin JSON found (expected {candidate.name}, a "
                             f"file with language, executable and symbols)"])
    raise ManifestError([f"{target}: several plugin JSON files ({', '.join(p.name for p in jsons)});"
                         f" give the one to use"])


def _looks_like_manifest(p: Path) -> bool:
    try:
        d = json.loads(p.read_text())
    except (OSError, ValueError):
        return False
    return isinstance(d, dict) and "executable" in d


def unpack_zip(zpath: Path) -> Path:
    """Unpack a plugin zip once into the cache (keyed by content) and return the folder."""
    from ekl.envs.probe import cache_dir

    digest = hashlib.sha256(zpath.read_bytes()).hexdigest()[:16]
    dest = cache_dir() / "zips" / f"{zpath.stem}-{digest}" / zpath.stem
    if dest.is_dir():
        return dest
    try:
        zf = zipfile.ZipFile(zpath)
    except zipfile.BadZipFile:
        raise ManifestError([f"{zpath}: not a zip file"]) from None
    tmp = dest.parent / f".{dest.name}.{os.getpid()}"
    with zf:
        for info in zf.infolist():
            target = (tmp / info.filename).resolve()
            if not str(target).startswith(str(tmp.resolve()) + os.sep) and target != tmp.resolve():
                raise ManifestError([f"{zpath}: entry {info.filename!r} points outside the "
                                     f"plugin folder; rebuild the zip with `ekl package`"])
        zf.extractall(tmp)
        for info in zf.infolist():  # zipfile drops permissions; executables need theirs
            mode = (info.external_attr >> 16) & 0o777
            if mode:
                os.chmod(tmp / info.filename, mode)
    os.replace(tmp, dest)
    return dest


def load(target: str | os.PathLike[str]) -> PluginManifest:
    """Load and validate; raise ManifestError listing every problem."""
    path = find_json(Path(target))
    fname = path.name
    try:
        raw = json.loads(path.read_text())
    except UnicodeDecodeError:
        raise ManifestError([f"{path}: not UTF-8 text"]) from None
    except ValueError as e:
        raise ManifestError([f"{path}: not valid JSON ({e}); fix the syntax"]) from None
    if not isinstance(raw, dict):
        raise ManifestError([f"{path}: must hold a JSON object with language, executable "
                             f"and symbols"])
    folder = path.parent.resolve()
    name = path.stem
    problems: List[str] = []

    def bad(fieldname: str, text: str) -> None:
        problems.append(f"{fname}: field '{fieldname}' {text}")

    language = raw.get("language")
    if language is None or language == "":
        bad("language", 'is missing; set it to "python" (or "go")')
    elif language not in LANGUAGES:
        bad("language", f'is {language!r}, which eKuiper does not run; use "python" or "go"')

    exe_field = raw.get("executable")
    executable = folder
    if not isinstance(exe_field, str) or not exe_field:
        bad("executable", "is missing; set it to the main program's file name, e.g. "
                          f'"{name}.py"')
    elif os.path.isabs(exe_field):
        bad("executable", f"is the absolute path {exe_field!r}; give a path relative to "
                          f"the plugin folder")
    else:
        executable = (folder / exe_field).resolve()
        if folder not in executable.parents:
            bad("executable", f"{exe_field!r} points outside the plugin folder; keep the "
                              f"program inside {folder}")
        elif not executable.is_file():
            bad("executable", f"names {exe_field!r}, which is not in {folder}; fix the name "
                              f"or add the file")
        elif language == "go" and not os.access(executable, os.X_OK):
            bad("executable", f"{exe_field!r} is not executable; chmod +x it")

    symbols: Dict[str, List[str]] = {}
    for kind in SYMBOL_KINDS:
        v = raw.get(kind)
        if v is None:
            symbols[kind] = []
            continue
        if not isinstance(v, list) or not all(isinstance(s, str) and s for s in v):
            bad(kind, "must be a list of symbol names (strings)")
            symbols[kind] = []
            continue
        dup = sorted({s for s in v if v.count(s) > 1})
        if dup:
            bad(kind, f"lists {', '.join(dup)} more than once; remove the duplicates")
        symbols[kind] = list(dict.fromkeys(v))
    if not any(symbols.values()) and not any(
            p.startswith(f"{fname}: field '{k}'") for p in problems for k in SYMBOL_KINDS):
        problems.append(f"{fname}: no symbols; list at least one name under sources, sinks "
                        f"or functions")
    for s in symbols["sources"]:
        if not (folder / "sources" / f"{s}.yaml").is_file():
            problems.append(f"{fname}: source {s!r} needs sources/{s}.yaml in the plugin "
                            f"folder (eKuiper refuses the plugin without it); add one with a "
                            f"'default:' section")

    vet = raw.get("virtualEnvType")
    env = raw.get("env")
    # The environment may live in the "ekl" section, which eKuiper ignores: eKuiper then
    # starts pythonBin (ekl-python) directly instead of wrapping it in `conda run`.
    sec = raw.get("ekl")
    if isinstance(sec, dict) and ("virtualEnvType" in sec or "env" in sec):
        if vet is None and env is None:
            vet, env = sec.get("virtualEnvType"), sec.get("env")
        elif (vet, env) != (sec.get("virtualEnvType"), sec.get("env")):
            problems.append(f"{fname}: fields 'virtualEnvType'/'env' and 'ekl.virtualEnvType'/"
                            f"'ekl.env' disagree; keep the environment in one place")
    if vet is not None and vet not in ENV_TYPES:
        bad("virtualEnvType", f'is {vet!r}; use "conda", "venv" (ekl only) or leave it out')
    if vet in ENV_TYPES and (not isinstance(env, str) or not env):
        bad("env", f"is missing; with virtualEnvType {vet!r} name the environment "
                   f"({'a conda env name or prefix path' if vet == 'conda' else 'a path'})")
    if vet is None and env is not None:
        bad("env", 'is set but virtualEnvType is not, so eKuiper ignores it; add '
                   '"virtualEnvType": "conda" (or "venv")')
    if vet is not None and language == "go":
        bad("virtualEnvType", "applies to Python plugins only; remove it")
    version = raw.get("version", "")
    if version is not None and not isinstance(version, str):
        bad("version", f'must be a string like "v1.0.0", not {json.dumps(version)}')
    if problems:
        raise ManifestError(problems)
    return PluginManifest(name=name, path=path, folder=folder, language=str(language),
                          executable=executable, version=str(version or ""),
                          sources=symbols["sources"], sinks=symbols["sinks"],
                          functions=symbols["functions"], virtual_env_type=vet,
                          env=env if isinstance(env, str) else None, raw=raw)
