"""The one reader of a plugin's ``NAME.json``: folder, file or zip in, a frozen ``Plugin`` out.

Checks what eKuiper checks at install time (name, language, executable, at least one
symbol, ``sources/{s}.yaml``) and what it only finds out later or never (executable inside
the folder, environment fields, the ``ekl`` section). Every field has one small function
that validates it; every problem is reported at once, one line each, naming the file, the
field and the fix. Nothing else in ekl parses plugin JSON: the launcher, ``ekl-python``,
the authoring verbs and ``ekl.envs`` all take the ``Plugin`` built here.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from types import MappingProxyType

from ekuiper.record import field, fields, record

from ..errors import ManifestError
from ..settings import LOCK_POLICIES, RESTART_POLICIES, SupervisorSettings
from .jsonfile import read_json_limited

TYPE_CHECKING = False  # typing is not loaded at run time on the start path (docs/architecture.md)
if TYPE_CHECKING:
    from typing import Any, Callable, Dict, List, Mapping, Optional, Tuple
    Problems = List[str]

if TYPE_CHECKING:
    from ekl.envs.model import PluginEnv

LANGUAGES = ("python", "go")
SYMBOL_KINDS = ("sources", "sinks", "functions")
SDK_CHOICES = ("ekl", "official")
#: Supervisor settings by their SupervisorSettings names.
SUPERVISOR_KEYS = frozenset(f.name for f in fields(SupervisorSettings))
#: Every key the ``ekl`` section (ignored by eKuiper) may hold.
EKL_SECTION_KEYS = SUPERVISOR_KEYS | {"lock", "lock_policy", "sdk", "virtualEnvType", "env",
                                      "vendor_sdk"}


def env_kinds() -> Tuple[str, ...]:
    """Environment kinds, from the one table in ``ekl.envs``: valid wherever any is."""
    from ekl.envs.model import KINDS

    return tuple(KINDS)


@record(frozen=True)
class EklSection:
    """The JSON's ``ekl`` section, validated: what ekl adds on top of eKuiper's fields."""

    #: SupervisorSettings overrides, by field name
    supervisor: Mapping[str, Any] = field(default_factory=lambda: MappingProxyType({}))
    lock: Optional[str] = None
    lock_policy: Optional[str] = None
    sdk: str = "ekl"
    #: ``ekl package`` puts ekl's SDK into the zip (``ekl init/package --vendor-sdk``)
    vendor_sdk: bool = False

    def supervisor_settings(self, **defaults: Any) -> SupervisorSettings:
        """SupervisorSettings from ``defaults`` with this section's values on top."""
        return SupervisorSettings(**{**defaults, **self.supervisor})


@record(frozen=True)
class Plugin:
    name: str
    path: Path              # the NAME.json file
    folder: Path
    language: str
    executable: Path        # absolute, inside folder
    version: str = ""
    sources: Tuple[str, ...] = ()
    sinks: Tuple[str, ...] = ()
    functions: Tuple[str, ...] = ()
    #: the environment kind (envs.KINDS) and name/path, from the top level or the ekl section
    env_kind: Optional[str] = None
    env: Optional[str] = None
    ekl: EklSection = field(default_factory=EklSection)
    raw: Mapping[str, Any] = field(default_factory=lambda: MappingProxyType({}))
    #: the zip this plugin was unpacked from, if any
    zip: Optional[Path] = None

    def env_request(self) -> PluginEnv:
        """What this plugin asks of its environment, in the form ``ekl.envs`` takes."""
        from ekl.envs.model import PluginEnv

        return PluginEnv(folder=self.folder, json_path=self.path, name=self.name,
                         kind=self.env_kind, env=self.env, lock=self.ekl.lock)

    def symbols(self, kind: str) -> Tuple[str, ...]:
        return {"sources": self.sources, "sinks": self.sinks, "functions": self.functions}[kind]

    def source_config(self, source: str, conf_key: str = "default") -> Dict[str, Any]:
        """The ``conf_key`` section of ``sources/{source}.yaml``, as eKuiper merges it."""
        from .yamlfile import load as load_yaml  # only the verbs that start sources need it

        path = self.folder / "sources" / f"{source}.yaml"
        if not path.is_file():
            return {}
        data = load_yaml(path) or {}
        if not isinstance(data, dict):
            raise ManifestError([f"{path}: must be a mapping of config keys (default: ...)"])
        section = data.get(conf_key)
        if section is None and conf_key != "default":
            raise ManifestError([f"{path}: has no section {conf_key!r}; it has "
                                 f"{', '.join(map(str, data)) or 'none'}"])
        if section is not None and not isinstance(section, dict):
            raise ManifestError([f"{path}: section {conf_key!r} must be a mapping of settings"])
        return dict(section or {})


# --- finding the JSON -----------------------------------------------------------------------


def _looks_like_manifest(p: Path) -> bool:
    try:
        d = read_json_limited(p)
    except ManifestError:
        return False
    return isinstance(d, dict) and "executable" in d


def find_json(target: Path) -> Path:
    """The plugin's JSON for a folder (``NAME/NAME.json``), a zip, or the file itself."""
    if target.is_file():
        if target.suffix == ".zip":
            from ekl.envs.probe import cache_dir

            from .zips import unpack_plugin_zip  # only for a zip: zipfile, hashlib...

            return find_json(unpack_plugin_zip(target, cache_dir()))
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


def plugin_for_script(script: str) -> Optional[Plugin]:
    """The plugin whose JSON, beside ``script``, names it as its executable (eKuiper's cwd)."""
    path = Path(script)
    if not path.is_file():
        return None
    real = path.resolve()
    for j in sorted(real.parent.glob("*.json")):
        try:
            raw = read_json_limited(j)
        except ManifestError:
            continue
        if isinstance(raw, dict) and isinstance(raw.get("executable"), str) and \
                (real.parent / raw["executable"]).resolve() == real:
            return load(j)
    return None


# --- one function per field -----------------------------------------------------------------



def _language(raw: Mapping[str, Any], bad: Callable[[str, str], None]) -> str:
    language = raw.get("language")
    if language is None or language == "":
        bad("language", 'is missing; set it to "python" (or "go")')
    elif language not in LANGUAGES:
        bad("language", f'is {language!r}, which eKuiper does not run; use "python" or "go"')
    return str(language)


def _executable(raw: Mapping[str, Any], folder: Path, name: str, language: str,
                bad: Callable[[str, str], None]) -> Path:
    exe_field = raw.get("executable")
    if not isinstance(exe_field, str) or not exe_field:
        bad("executable", f'is missing; set it to the main program\'s file name, e.g. "{name}.py"')
        return folder
    if os.path.isabs(exe_field):
        bad("executable", f"is the absolute path {exe_field!r}; give a path relative to "
                          f"the plugin folder")
        return folder
    executable = (folder / exe_field).resolve()
    if folder not in executable.parents:
        bad("executable", f"{exe_field!r} points outside the plugin folder; keep the "
                          f"program inside {folder}")
    elif not executable.is_file():
        bad("executable", f"names {exe_field!r}, which is not in {folder}; fix the name "
                          f"or add the file")
    elif language == "go" and not os.access(executable, os.X_OK):
        bad("executable", f"{exe_field!r} is not executable; chmod +x it")
    return executable


def _symbols(raw: Mapping[str, Any], folder: Path, fname: str, bad: Callable[[str, str], None],
             problems: Problems) -> Dict[str, Tuple[str, ...]]:
    symbols: Dict[str, Tuple[str, ...]] = {}
    malformed = False
    for kind in SYMBOL_KINDS:
        v = raw.get(kind)
        if v is None:
            symbols[kind] = ()
            continue
        if not isinstance(v, list) or not all(isinstance(s, str) and s for s in v):
            bad(kind, "must be a list of symbol names (strings)")
            symbols[kind] = ()
            malformed = True
            continue
        dup = sorted({s for s in v if v.count(s) > 1})
        if dup:
            bad(kind, f"lists {', '.join(dup)} more than once; remove the duplicates")
        symbols[kind] = tuple(dict.fromkeys(v))
    if not any(symbols.values()) and not malformed:
        problems.append(f"{fname}: no symbols; list at least one name under sources, sinks "
                        f"or functions")
    for s in symbols["sources"]:
        if not (folder / "sources" / f"{s}.yaml").is_file():
            problems.append(f"{fname}: source {s!r} needs sources/{s}.yaml in the plugin "
                            f"folder (eKuiper refuses the plugin without it); add one with a "
                            f"'default:' section")
    return symbols


def _ekl_section(raw: Mapping[str, Any], fname: str, problems: Problems) -> EklSection:
    sec = raw.get("ekl")
    if sec is None:
        return EklSection()
    if not isinstance(sec, dict):
        problems.append(f"{fname}: field 'ekl' must be an object like {{\"restart\": \"on-failure\"}}")
        return EklSection()
    before = len(problems)
    for k in sec:
        if k not in EKL_SECTION_KEYS:
            problems.append(f"{fname}: field 'ekl.{k}' is not known; use one of "
                            f"{', '.join(sorted(EKL_SECTION_KEYS))}")
    if "restart" in sec and sec["restart"] not in RESTART_POLICIES:
        problems.append(f"{fname}: field 'ekl.restart' is {sec['restart']!r}; use "
                        f"{', '.join(RESTART_POLICIES)}")
    if "lock_policy" in sec and sec["lock_policy"] not in LOCK_POLICIES:
        problems.append(f"{fname}: field 'ekl.lock_policy' is {sec['lock_policy']!r}; use "
                        f"{', '.join(LOCK_POLICIES)}")
    if sec.get("sdk", "ekl") not in SDK_CHOICES:
        problems.append(f"{fname}: field 'ekl.sdk' is {sec['sdk']!r}; use ekl or official")
    if not isinstance(sec.get("vendor_sdk", False), bool):
        problems.append(f"{fname}: field 'ekl.vendor_sdk' is {sec['vendor_sdk']!r}; use true or false")
    if "lock" in sec and (not isinstance(sec["lock"], str) or not sec["lock"]):
        problems.append(f"{fname}: field 'ekl.lock' must be the lock file's path relative to "
                        f"the plugin folder, not {sec['lock']!r}")
    for k in sorted(SUPERVISOR_KEYS - {"restart"}):
        v = sec.get(k)
        if k in sec and (isinstance(v, bool) or not isinstance(v, (int, float)) or v < 0
                         or v != v or v == float("inf")):
            problems.append(f"{fname}: field 'ekl.{k}' must be a finite number >= 0, not {v!r}")
    if len(problems) > before:
        return EklSection()
    return EklSection(
        supervisor=MappingProxyType({k: v for k, v in sec.items() if k in SUPERVISOR_KEYS}),
        lock=sec.get("lock"), lock_policy=sec.get("lock_policy"), sdk=sec.get("sdk", "ekl"),
        vendor_sdk=sec.get("vendor_sdk", False))


def _environment(raw: Mapping[str, Any], fname: str, language: str,
                 bad: Callable[[str, str], None], problems: Problems
                 ) -> Tuple[Optional[str], Optional[str]]:
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
    if vet is not None and vet not in env_kinds():  # no env, no ekl.envs import (issue 16)
        bad("virtualEnvType", f"is {vet!r}; use one of {', '.join(env_kinds())} or leave it out")
        return None, None
    if vet is not None and (not isinstance(env, str) or not env) and vet != "pixi":
        bad("env", f"is missing; with virtualEnvType {vet!r} name the environment "
                   f"({'a path' if vet == 'venv' else 'an environment name or prefix path'})")
    if vet is None and env is not None:
        bad("env", 'is set but virtualEnvType is not, so eKuiper ignores it; add '
                   '"virtualEnvType": "conda" (or another kind)')
    if vet is not None and language == "go":
        bad("virtualEnvType", "applies to Python plugins only; remove it")
    return vet, (env if isinstance(env, str) and env else None)


def load(target: str | os.PathLike[str]) -> Plugin:
    """Load and validate; raise ManifestError listing every problem."""
    given = Path(target)
    path = find_json(given)
    raw = read_json_limited(path)
    fname = path.name
    if not isinstance(raw, dict):
        raise ManifestError([f"{path}: must hold a JSON object with language, executable "
                             f"and symbols"])
    folder = path.parent.resolve()
    name = path.stem
    problems: Problems = []

    def bad(fieldname: str, text: str) -> None:
        problems.append(f"{fname}: field '{fieldname}' {text}")

    language = _language(raw, bad)
    executable = _executable(raw, folder, name, language, bad)
    symbols = _symbols(raw, folder, fname, bad, problems)
    env_kind, env = _environment(raw, fname, language, bad, problems)
    ekl = _ekl_section(raw, fname, problems)
    version = raw.get("version", "")
    if version is not None and not isinstance(version, str):
        bad("version", f'must be a string like "v1.0.0", not {json.dumps(version)}')
    if problems:
        raise ManifestError(problems)
    return Plugin(name=name, path=path, folder=folder, language=language,
                  executable=executable, version=str(version or ""),
                  sources=symbols["sources"], sinks=symbols["sinks"],
                  functions=symbols["functions"], env_kind=env_kind, env=env, ekl=ekl,
                  raw=MappingProxyType(raw),
                  zip=given.resolve() if given.is_file() and given.suffix == ".zip" else None)
