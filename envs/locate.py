"""Finding environments by name or path, by the rules conda, mamba/micromamba and pixi use.

Nothing here runs conda: the places conda would look are computed from its configuration
(``.condarc`` files on its search path, ``CONDA_ENVS_DIRS``, the root prefix) so that a plugin
starts without a conda process. When a conda binary happens to be available, and the rules
found nothing, ``conda info --envs --json`` is asked as a last resort (only its ``envs`` key).
"""

from __future__ import annotations

import json
import os
import re
import shlex
import shutil
import subprocess
from pathlib import Path

from ekuiper.record import field, record

from .model import KINDS, LOCAL_ENV_DIR, CondaSettings, EnvError, Environment, PluginEnv

TYPE_CHECKING = False  # typing is not loaded at run time on the start path (docs/architecture.md)
if TYPE_CHECKING:
    from typing import Any, Dict, Iterable, List, Mapping, Optional, Tuple

#: conda's configuration search path on POSIX (conda/base/constants.py SEARCH_PATH).
CONDARC_SEARCH_PATH = (
    "/etc/conda/.condarc", "/etc/conda/condarc", "/etc/conda/condarc.d/",
    "/var/lib/conda/.condarc", "/var/lib/conda/condarc", "/var/lib/conda/condarc.d/",
    "$CONDA_ROOT/.condarc", "$CONDA_ROOT/condarc", "$CONDA_ROOT/condarc.d/",
    "$XDG_CONFIG_HOME/conda/.condarc", "$XDG_CONFIG_HOME/conda/condarc",
    "$XDG_CONFIG_HOME/conda/condarc.d/",
    "~/.config/conda/.condarc", "~/.config/conda/condarc", "~/.config/conda/condarc.d/",
    "~/.conda/.condarc", "~/.conda/condarc", "~/.conda/condarc.d/",
    "~/.condarc",
    "$CONDA_PREFIX/.condarc", "$CONDA_PREFIX/condarc", "$CONDA_PREFIX/condarc.d/",
    "$CONDARC",
)
#: Where installers put conda when nobody tells us (a service's environment rarely has
#: CONDA_EXE): checked last, only when they hold a conda installation.
WELL_KNOWN_ROOTS = (
    "~/miniforge3", "~/miniconda3", "~/anaconda3", "~/mambaforge", "~/miniconda", "~/anaconda",
    "/opt/conda", "/opt/miniforge3", "/opt/miniconda3", "/opt/anaconda3",
    "/usr/local/miniconda3", "/usr/local/anaconda3",
)
#: micromamba's default root prefixes (1.x, 2.x) when MAMBA_ROOT_PREFIX is not set.
MAMBA_DEFAULT_ROOTS = ("~/micromamba", "~/.local/share/mamba")
RESERVED_NAMES = ("base", "root")
CONDA_INFO_TIMEOUT_S = 20.0


def _expand(p: str, env: Mapping[str, str]) -> str:
    return os.path.abspath(os.path.expanduser(_expandvars(p, env)))


_VAR = re.compile(r"\$(\w+|\{[^}]*\})")


def _expandvars(p: str, env: Mapping[str, str]) -> str:
    """``os.path.expandvars`` against a given mapping (unknown variables stay as written)."""
    def sub(m: re.Match[str]) -> str:
        name = m.group(1).strip("{}")
        return env.get(name, m.group(0))

    return _VAR.sub(sub, p) if "$" in p else p


def is_conda_prefix(p: str, need_history: bool = True) -> bool:
    """A conda-style prefix has ``conda-meta/`` and, made by a conda-like tool, its history."""
    meta = os.path.join(p, "conda-meta")
    if not os.path.isdir(meta):
        return False
    return not need_history or os.path.isfile(os.path.join(meta, "history"))


def is_venv(p: str) -> bool:
    return os.path.isfile(os.path.join(p, "pyvenv.cfg"))


def _is_conda_install(root: str) -> bool:
    return os.path.isdir(os.path.join(root, "conda-meta")) and any(
        os.path.exists(os.path.join(root, d, "conda")) for d in ("bin", "condabin"))


@record
class CondaConfig:
    """What conda would compute for locating environments, from the files and variables."""

    conda_root: Optional[str]
    conda_root_source: str
    root_prefix: Optional[str]
    condarc_files: List[str]
    envs_dirs: List[str]
    envs_dirs_sources: Dict[str, str] = field(default_factory=dict)
    mamba_root: Optional[str] = None
    environments_txt: List[str] = field(default_factory=list)
    settings: CondaSettings = field(default_factory=CondaSettings)


def _find_conda_root(env: Mapping[str, str]) -> Tuple[Optional[str], str]:
    cands: List[Tuple[str, str]] = []
    if env.get("CONDA_EXE"):
        cands.append((os.path.dirname(os.path.dirname(env["CONDA_EXE"])), "CONDA_EXE"))
    if env.get("_CONDA_ROOT"):
        cands.append((env["_CONDA_ROOT"], "_CONDA_ROOT"))
    if env.get("CONDA_PYTHON_EXE"):
        cands.append((os.path.dirname(os.path.dirname(env["CONDA_PYTHON_EXE"])),
                      "CONDA_PYTHON_EXE"))
    on_path = shutil.which("conda", path=env.get("PATH", ""))
    if on_path:
        cands.append((os.path.dirname(os.path.dirname(on_path)), "conda on PATH"))
        real = os.path.realpath(on_path)
        cands.append((os.path.dirname(os.path.dirname(real)), "conda on PATH"))
    cands.extend((os.path.expanduser(r) if r.startswith("~") else r, "default location")
                 for r in WELL_KNOWN_ROOTS)
    for root, source in cands:
        root = _expand(root, env)
        if _is_conda_install(root):
            return root, source
    return None, ""


def _condarc_files(env: Mapping[str, str], conda_root: Optional[str]) -> List[str]:
    e = dict(env)
    if conda_root and not e.get("CONDA_ROOT"):
        e["CONDA_ROOT"] = conda_root  # conda sets it to its own prefix at import
    out: List[str] = []
    for raw in CONDARC_SEARCH_PATH:
        if raw.startswith("$"):
            var = raw[1:].split("/", 1)[0]
            if not e.get(var):
                continue
        p = os.path.expanduser(_expandvars(raw, e))
        if raw.endswith("/"):
            if os.path.isdir(p):
                out.extend(os.path.join(p, n) for n in sorted(os.listdir(p))
                           if n.endswith((".yml", ".yaml")))
        elif os.path.isfile(p):
            out.append(os.path.abspath(p))
    return list(dict.fromkeys(out))


def _read_yaml(path: str) -> Dict[str, Any]:
    import yaml  # only when a .condarc exists: it costs ~20 ms on the start path

    try:
        with open(path, encoding="utf-8") as f:
            data = yaml.safe_load(f)
    except (OSError, yaml.YAMLError) as e:
        raise EnvError(f"cannot read conda configuration {path}: "
                       f"{str(e).splitlines()[0]}; fix or remove that file") from None
    return data if isinstance(data, dict) else {}


_FALSE = ("false", "no", "off", "0", "n", "f", "")
_TRUE = ("true", "yes", "on", "1", "y", "t")


def _setting(raw: Any, key: str, where: str, kind: type) -> Any:
    """One .condarc/CONDA_* value as conda's config would type it, or a one-line error."""
    if isinstance(raw, str) and "#!" in raw:
        raw = _strip_flag(raw)  # (an env_prompt keeps its spaces otherwise)
    try:
        if kind is bool:
            if isinstance(raw, bool):
                return raw
            s = str(raw).strip().lower()
            if s in _TRUE or s in _FALSE:
                return s in _TRUE
            raise ValueError(raw)
        if kind is int:
            if isinstance(raw, bool):
                return int(raw)
            return int(str(raw).strip())
        return str(raw)
    except ValueError:
        want = {bool: "true or false", int: "a whole number"}.get(kind, "text")
        raise EnvError(f"{where}: {key} is {raw!r}, not {want}; fix it as conda would "
                       f"need it") from None


def _settings(layers: List[Tuple[str, Dict[str, Any]]], env: Mapping[str, str]) -> CondaSettings:
    """changeps1, env_prompt and auto_stack: later .condarc files win, CONDA_<KEY> wins last."""
    vals: Dict[str, Any] = {}
    spec = (("changeps1", bool), ("env_prompt", str), ("auto_stack", int))
    for where, data in layers:
        for key, kind in spec:
            if key in data and data[key] is not None:
                vals[key] = _setting(data[key], key, where, kind)
    where = "conda's default"
    for key, kind in spec:
        var = f"CONDA_{key.upper()}"
        if env.get(var) is not None and env.get(var) != "":
            vals[key] = _setting(env[var], key, f"${var}", kind)
    for w, data in layers:
        if data.get("env_prompt") is not None:
            where = w
    if env.get("CONDA_ENV_PROMPT"):
        where = "$CONDA_ENV_PROMPT"
    settings = CondaSettings(**vals)
    try:  # checked here, where the launcher reports EnvError, not at activation
        settings.env_prompt.format(default_env="e", prefix="/p", name="n", stacked_env="e")
    except (KeyError, IndexError, ValueError, AttributeError):
        raise EnvError(f"{where}: env_prompt {settings.env_prompt!r} is not a valid template "
                       f"(use {{default_env}}, {{prefix}}, {{name}}, {{stacked_env}})") from None
    return settings


def _strip_flag(v: Any) -> str:
    s = str(v)
    for flag in ("#!important", "#!top", "#!bottom"):
        s = s.replace(flag, "")
    return s.strip()


def conda_config(env: Optional[Mapping[str, str]] = None) -> CondaConfig:
    """conda's envs_dirs and root prefix, computed as conda computes them."""
    env = dict(os.environ if env is None else env)
    conda_root, root_source = _find_conda_root(env)
    files = _condarc_files(env, conda_root)
    layers: List[Tuple[str, List[str]]] = []
    root_prefix_cfg: Optional[str] = None
    raw_layers: List[Tuple[str, Dict[str, Any]]] = []
    for f in files:
        data = _read_yaml(f)
        raw_layers.append((f, data))
        dirs = data.get("envs_dirs", data.get("envs_path"))
        if isinstance(dirs, str):
            dirs = [dirs]
        if isinstance(dirs, list):
            layers.append((f, [_strip_flag(d) for d in dirs if d is not None]))
        rp = data.get("root_prefix", data.get("root_dir"))
        if rp:
            root_prefix_cfg = _strip_flag(rp)
    for var in ("CONDA_ENVS_DIRS", "CONDA_ENVS_PATH"):
        if env.get(var):
            layers.append((f"${var}", [d for d in env[var].split(os.pathsep) if d]))
            break
    if env.get("CONDA_ROOT_PREFIX"):
        root_prefix: Optional[str] = _expand(env["CONDA_ROOT_PREFIX"], env)
    elif root_prefix_cfg:
        root_prefix = _expand(root_prefix_cfg, env)
    else:
        root_prefix = conda_root
    sources: Dict[str, str] = {}
    dirs_out: List[str] = []
    # later sources take precedence; within one source the order is kept (conda's merge)
    for src, dirs in reversed(layers):
        for d in dirs:
            p = _expand(d, env)
            if p not in sources:
                sources[p] = src
                dirs_out.append(p)
    fixed: List[Tuple[str, str]] = []
    home_envs = _expand("~/.conda/envs", env)
    if root_prefix:
        root_envs = os.path.join(root_prefix, "envs")
        hist = os.path.join(root_prefix, "conda-meta", "history")
        writable = os.path.isfile(hist) and os.access(hist, os.W_OK)
        fixed = ([(root_envs, "root prefix"), (home_envs, "default")] if writable
                 else [(home_envs, "default"), (root_envs, "root prefix")])
    else:
        fixed = [(home_envs, "default")]
    for p, src in fixed:
        if p not in sources:
            sources[p] = src
            dirs_out.append(p)
    mamba_root = env.get("MAMBA_ROOT_PREFIX")
    if mamba_root:
        mamba_root = _expand(mamba_root, env)
    else:
        for r in MAMBA_DEFAULT_ROOTS:
            r = _expand(r, env)
            if os.path.isdir(os.path.join(r, "envs")) or is_conda_prefix(r, False):
                mamba_root = r
                break
    return CondaConfig(conda_root=conda_root, conda_root_source=root_source,
                       root_prefix=root_prefix, condarc_files=files, envs_dirs=dirs_out,
                       envs_dirs_sources=sources, mamba_root=mamba_root,
                       environments_txt=_environments_txt(env),
                       settings=_settings(raw_layers, env))


def _environments_txt(env: Mapping[str, str]) -> List[str]:
    p = _expand("~/.conda/environments.txt", env)
    try:
        with open(p, encoding="utf-8") as f:
            lines = [ln.strip() for ln in f]
    except OSError:
        return []
    return [os.path.abspath(ln) for ln in lines if ln and not ln.startswith("#")]


def _python_of(prefix: str) -> Optional[Path]:
    for n in ("python", "python3"):
        p = os.path.join(prefix, "bin", n)
        if os.path.isfile(p) and os.access(p, os.X_OK):
            return Path(p)
    return None


def _kind_of(prefix: str, cfg: CondaConfig, env: Mapping[str, str],
             hint: Optional[str] = None) -> str:
    if hint in ("mamba", "micromamba", "pixi", "venv"):
        return hint
    p = Path(prefix)
    if p.parent.name == "envs" and p.parent.parent.name == ".pixi":
        return "pixi"
    if cfg.mamba_root and (prefix == cfg.mamba_root
                           or os.path.dirname(prefix) == os.path.join(cfg.mamba_root, "envs")):
        exe = os.path.basename(env.get("MAMBA_EXE", "micromamba"))
        in_conda = cfg.root_prefix and (prefix == cfg.root_prefix or os.path.dirname(prefix)
                                        == os.path.join(cfg.root_prefix, "envs"))
        if not in_conda:
            return "mamba" if exe == "mamba" else "micromamba"
    return "conda"


def _installation_of(prefix: str, cfg: CondaConfig) -> Optional[str]:
    """The conda installation an env belongs to when nothing announced one (a systemd unit,
    a container: no CONDA_EXE, no conda on PATH): the prefix itself (base), the folder above
    its ``envs/``, the root prefix ``.condarc`` names, then a conda installation listed in
    ``~/.conda/environments.txt`` (conda registers its root and every env it makes there)."""
    if cfg.conda_root:
        return cfg.conda_root
    p = Path(prefix)
    cands: List[str] = [prefix]
    if p.parent.name == "envs":
        cands.append(str(p.parent.parent))
    if cfg.root_prefix:
        cands.append(cfg.root_prefix)
    cands.extend(cfg.environments_txt)
    for c in cands:
        if _is_conda_install(c):
            return c
    return None


def _mamba_exe(env: Mapping[str, str], kind: str) -> Optional[str]:
    if env.get("MAMBA_EXE"):
        return env["MAMBA_EXE"]
    return shutil.which("mamba" if kind == "mamba" else "micromamba", path=env.get("PATH", ""))


def _pixi_vars(prefix: str) -> Tuple[Tuple[str, str], ...]:
    """pixi's documented shell-hook variables for an env at ``<project>/.pixi/envs/<name>``."""
    p = Path(prefix)
    if not (p.parent.name == "envs" and p.parent.parent.name == ".pixi"):
        return ()
    root = p.parent.parent.parent
    manifest = root / "pixi.toml"
    table: Dict[str, Any] = {}
    if manifest.is_file():
        data = _read_toml(manifest)
        table = data.get("workspace") or data.get("project") or {}
    elif (root / "pyproject.toml").is_file():
        manifest = root / "pyproject.toml"
        data = _read_toml(manifest)
        tool = (data.get("tool") or {}).get("pixi") or {}
        table = dict(data.get("project") or {})
        table.update(tool.get("workspace") or tool.get("project") or {})
    else:
        return ()
    if not isinstance(table, dict):
        table = {}
    name = str(table.get("name") or root.name)
    env_name = p.name
    default_env = name if env_name == "default" else f"{name}:{env_name}"
    out = [("PIXI_PROJECT_ROOT", str(root)), ("PIXI_PROJECT_NAME", name),
           ("PIXI_PROJECT_MANIFEST", str(manifest))]
    if table.get("version"):
        out.append(("PIXI_PROJECT_VERSION", str(table["version"])))
    out += [("PIXI_PROMPT", f"({default_env}) "), ("PIXI_ENVIRONMENT_NAME", env_name)]
    plats = table.get("platforms")
    if isinstance(plats, list):
        out.append(("PIXI_ENVIRONMENT_PLATFORMS", ",".join(str(x) for x in plats)))
    out.append(("CONDA_DEFAULT_ENV", default_env))
    return tuple(out)


def _read_toml(path: Path) -> Dict[str, Any]:
    try:
        import tomllib  # type: ignore[import-not-found]
    except ImportError:  # Python < 3.11
        try:
            import tomli as tomllib  # type: ignore[import-not-found,no-redef]
        except ImportError:
            return _toml_names(path)
    try:
        with open(path, "rb") as f:
            return tomllib.load(f)
    except OSError as e:
        raise EnvError(f"cannot read {path}: {e.strerror}") from None
    except (tomllib.TOMLDecodeError, UnicodeDecodeError) as e:
        m = re.search(r"line (\d+)", str(e))
        where = f"{path}:{m.group(1)}" if m else str(path)
        raise EnvError(f"{where}: not valid TOML ({str(e).split(' (at')[0]}); fix the pixi "
                       f"manifest") from None


def _toml_names(path: Path) -> Dict[str, Any]:
    """Without a TOML reader (Python 3.9/3.10, no tomli): name and version by line."""
    out: Dict[str, Any] = {}
    section = ""
    try:
        lines = path.read_text(encoding="utf-8", errors="replace").splitlines()
    except OSError:
        return {}
    for line in lines:
        s = line.strip()
        if s.startswith("["):
            section = s.strip("[] ")
        m = re.match(r"(name|version)\s*=\s*[\"']([^\"']*)[\"']", s)
        if m and section in ("workspace", "project", "tool.pixi.workspace",
                             "tool.pixi.project"):
            out.setdefault(m.group(1), m.group(2))
    return {"project": out}


def _make(prefix: str, kind: str, name: Optional[str], cfg: CondaConfig,
          found_in: str, environ: Optional[Mapping[str, str]] = None) -> Environment:
    from .activate import env_vars_of

    py = _python_of(prefix)
    if py is None:
        raise EnvError(f"environment {prefix} has no bin/python; install Python into it "
                       f"(for a conda env: `conda install -p {prefix} python`) or recreate it "
                       f"with `ekl env create PLUGIN`")
    environ = os.environ if environ is None else environ
    conda_root: Optional[Path] = None
    root: Optional[str] = None
    mamba_exe: Optional[str] = None
    pixi: Tuple[Tuple[str, str], ...] = ()
    if kind in ("conda", "mamba"):
        inst = _installation_of(prefix, cfg)
        if inst and not cfg.conda_root:
            # found from the env's location: read that installation's .condarc too, as the
            # conda there would (changeps1, env_prompt, auto_stack, root_prefix)
            cfg = conda_config(dict(environ, CONDA_EXE=os.path.join(inst, "bin", "conda")))
        conda_root = Path(inst) if inst else None
        root = cfg.root_prefix or inst
    if kind in ("mamba", "micromamba"):
        mamba_exe = _mamba_exe(environ, kind)
        if kind == "micromamba" or not root:
            root = cfg.mamba_root or root
    warnings: List[str] = []
    if kind == "pixi":
        pixi = _pixi_vars(prefix)
    if KINDS[kind].conda_style:
        # read now, so a file `conda activate` would fail on is one error naming it, at the
        # same place as "not found", and the warnings are known before the start
        warnings = env_vars_of(prefix)[1]
    return Environment(kind=kind, prefix=Path(prefix), name=name, python=py,
                       conda_root=conda_root, root_prefix=Path(root) if root else None,
                       found_in=found_in, settings=cfg.settings, mamba_exe=mamba_exe,
                       pixi_vars=pixi, warnings=warnings)


def _looks_like_path(env: str) -> bool:
    return "/" in env or env.startswith("~") or env in (".", "..")


def _norm_kind(kind: Optional[str]) -> Optional[str]:
    if kind is None or kind == "":
        return None
    k = kind.strip().lower()
    if k not in KINDS:
        raise EnvError(f"virtualEnvType {kind!r} is not supported; use one of "
                       f"{', '.join(KINDS)} (or leave it out)")
    return k


def _pixi_dirs(start: Optional[Path]) -> List[str]:
    """``.pixi/envs`` of the nearest pixi project at or above ``start``."""
    if start is None:
        return []
    p = Path(os.path.abspath(start))
    for d in (p, *p.parents):
        envs = d / ".pixi" / "envs"
        if envs.is_dir() or (d / "pixi.toml").is_file():
            return [str(envs)]
    return []


def find_environment(kind: Optional[str], env: str, *,
                     plugin_dir: Optional[Path] = None, quiet: bool = False) -> Environment:
    """The environment a plugin names, or an :class:`EnvError` listing where it looked.

    ``kind`` is the manifest's ``virtualEnvType`` (None: any kind). ``env`` is a name or a
    path; relative paths are taken from the plugin folder, because eKuiper's working
    directory is not the plugin's and a plugin shipping its own env must still find it.
    The env's warnings (``Environment.warnings``) are logged here, once per start, unless
    ``quiet`` (``ekl env doctor`` shows them itself).
    """
    found = _find(kind, env, plugin_dir)
    if not quiet:
        from .activate import log_warnings

        log_warnings(found)
    return found


def _find(kind: Optional[str], env: str, plugin_dir: Optional[Path]) -> Environment:
    k = _norm_kind(kind)
    name = (env or "").strip()
    if not name:
        if k == "pixi":
            name = "default"
        else:
            raise EnvError("the plugin's JSON has an empty \"env\"; set it to an environment "
                           "name or path (for example \"env\": \"myenv\")")
    environ = dict(os.environ)
    cfg = conda_config(environ)
    if k == "venv" or _looks_like_path(name):
        return _by_path(k, name, plugin_dir, cfg, environ)
    return _by_name(k, name, plugin_dir, cfg, environ)


def _by_path(kind: Optional[str], env: str, plugin_dir: Optional[Path], cfg: CondaConfig,
             environ: Mapping[str, str]) -> Environment:
    p = os.path.expanduser(_expandvars(env, environ))
    if not os.path.isabs(p) and plugin_dir is not None:
        p = os.path.join(os.path.abspath(plugin_dir), p)
    prefix = os.path.abspath(p)
    where = f"env {env!r}"
    if not os.path.isdir(prefix):
        raise EnvError(f"environment {prefix} ({where}) does not exist; create it with "
                       f"`ekl env create PLUGIN` or fix \"env\" in the plugin's JSON")
    conda_like = is_conda_prefix(prefix, need_history=False)
    if kind == "venv":
        if not is_venv(prefix):
            raise EnvError(f"{prefix} ({where}) is not a venv (no pyvenv.cfg); make one with "
                           f"`python3 -m venv {prefix}` or fix \"virtualEnvType\"")
        return _make(prefix, "venv", None, cfg, "path", environ)
    if kind is not None:
        if not conda_like:
            hint = (' (it is a venv: set "virtualEnvType": "venv")' if is_venv(prefix)
                    else "")
            raise EnvError(f"{prefix} ({where}) is not a conda environment (no conda-meta/)"
                           f"{hint}; fix \"env\" in the plugin's JSON")
        return _make(prefix, _kind_of(prefix, cfg, environ, kind), None, cfg, "path", environ)
    if conda_like:
        return _make(prefix, _kind_of(prefix, cfg, environ), None, cfg, "path", environ)
    if is_venv(prefix):
        return _make(prefix, "venv", None, cfg, "path", environ)
    raise EnvError(f"{prefix} ({where}) is neither a conda environment (conda-meta/) nor a "
                   f"venv (pyvenv.cfg); fix \"env\" in the plugin's JSON")


def _name_places(kind: Optional[str], name: str, plugin_dir: Optional[Path],
                 cfg: CondaConfig) -> List[Tuple[str, str, bool]]:
    """(candidate prefix, where it came from, needs history) in search order."""
    places: List[Tuple[str, str, bool]] = []
    conda_like = kind in (None, "conda", "mamba", "micromamba")
    if conda_like:
        if name in RESERVED_NAMES:
            if cfg.root_prefix:
                places.append((cfg.root_prefix, "conda root prefix", False))
            if cfg.mamba_root:
                places.append((cfg.mamba_root, "MAMBA_ROOT_PREFIX", False))
        else:
            for d in cfg.envs_dirs:
                places.append((os.path.join(d, name),
                               f"envs_dirs ({cfg.envs_dirs_sources.get(d, '')})", True))
            if cfg.mamba_root:
                places.append((os.path.join(cfg.mamba_root, "envs", name),
                               "MAMBA_ROOT_PREFIX/envs", True))
            for p in cfg.environments_txt:
                if Path(p).name == name and Path(p).parent.name == "envs":
                    places.append((p, "~/.conda/environments.txt", True))
    if kind in (None, "pixi"):
        for d in _pixi_dirs(plugin_dir):
            places.append((os.path.join(d, name), "pixi project", False))
    return places


def _by_name(kind: Optional[str], name: str, plugin_dir: Optional[Path], cfg: CondaConfig,
             environ: Mapping[str, str]) -> Environment:
    places = _name_places(kind, name, plugin_dir, cfg)
    matches: Dict[str, Tuple[str, str]] = {}
    for prefix, src, need_hist in places:
        if is_conda_prefix(prefix, need_history=need_hist):
            real = os.path.realpath(prefix)
            if real not in matches:
                matches[real] = (prefix, src)
    if not matches and kind in (None, "conda"):
        for prefix in _conda_info_envs(cfg, environ):
            if (Path(prefix).name == name and Path(prefix).parent.name == "envs") or (
                    name in RESERVED_NAMES and prefix == cfg.root_prefix):
                matches.setdefault(os.path.realpath(prefix), (prefix, "conda info --envs"))
    label = f"{kind} environment" if kind else "environment"
    if len(matches) == 1:
        prefix, src = next(iter(matches.values()))
        return _make(prefix, _kind_of(prefix, cfg, environ, kind if kind != "conda" else None),
                     name, cfg, src, environ)
    if not matches:
        searched = "; ".join(f"{p} [{s}]" for p, s, _ in places) or "nowhere (no conda, " \
            "mamba or pixi installation found)"
        raise EnvError(f"{label} {name!r} not found; searched: {searched}; create it with "
                       f"`ekl env create PLUGIN`, or give its full path in \"env\"")
    found = "; ".join(f"{p} [{s}]" for p, s in matches.values())
    raise EnvError(f"{label} {name!r} is ambiguous, found {len(matches)} times: {found}; "
                   f"give the full path of the one to use in \"env\"")


def _conda_binary(cfg: CondaConfig, environ: Mapping[str, str]) -> Optional[str]:
    if cfg.conda_root:
        exe = os.path.join(cfg.conda_root, "bin", "conda")
        if os.access(exe, os.X_OK):
            return exe
    return shutil.which("conda", path=environ.get("PATH", ""))


def _conda_info_envs(cfg: CondaConfig, environ: Mapping[str, str]) -> List[str]:
    """Ask a conda binary, if one is there; any failure means 'no answer', never an error."""
    exe = _conda_binary(cfg, environ)
    if exe is None:
        return []
    try:
        cp = subprocess.run([exe, "info", "--envs", "--json"], capture_output=True, text=True,
                            timeout=CONDA_INFO_TIMEOUT_S, env=dict(environ), cwd="/")
        envs = json.loads(cp.stdout).get("envs", [])
    except (OSError, subprocess.SubprocessError, ValueError, AttributeError):
        return []
    return [os.path.abspath(str(e)) for e in envs if isinstance(e, str)]


def list_environments() -> List[Environment]:
    """Every environment the rules can see (for ``ekl env list``); python may be missing."""
    environ = dict(os.environ)
    cfg = conda_config(environ)
    seen: Dict[str, Environment] = {}

    def add(prefix: str, src: str, need_hist: bool = True, kind: Optional[str] = None) -> None:
        prefix = os.path.abspath(prefix)
        if not is_conda_prefix(prefix, need_hist):
            return
        real = os.path.realpath(prefix)
        if real in seen:
            return
        k = _kind_of(prefix, cfg, environ, kind)
        root = cfg.root_prefix if k == "conda" else cfg.mamba_root
        name: Optional[str] = None
        if root and prefix == root:
            name = "base"
        elif Path(prefix).parent.name == "envs":
            name = Path(prefix).name
        seen[real] = Environment(
            kind=k, prefix=Path(prefix), name=name,
            python=_python_of(prefix) or Path(prefix, "bin", "python"),
            conda_root=Path(cfg.conda_root) if cfg.conda_root and k == "conda" else None,
            root_prefix=Path(root) if root else None, found_in=src)

    if cfg.root_prefix:
        add(cfg.root_prefix, "conda root prefix", False)
    for d in cfg.envs_dirs:
        for child in _children(d):
            add(child, f"envs_dirs ({cfg.envs_dirs_sources.get(d, '')})")
    if cfg.mamba_root:
        add(cfg.mamba_root, "MAMBA_ROOT_PREFIX", False)
        for child in _children(os.path.join(cfg.mamba_root, "envs")):
            add(child, "MAMBA_ROOT_PREFIX/envs")
    for p in cfg.environments_txt:
        add(p, "~/.conda/environments.txt", False)
    for d in _pixi_dirs(Path.cwd()):
        for child in _children(d):
            add(child, "pixi project", False, "pixi")
    for p in _conda_info_envs(cfg, environ) if _conda_binary(cfg, environ) else []:
        add(p, "conda info --envs", False)
    return list(seen.values())


def _children(d: str) -> Iterable[str]:
    try:
        return sorted(e.path for e in os.scandir(d) if e.is_dir())
    except OSError:
        return []


def default_create_prefix(kind: Optional[str], name: str) -> str:
    """Where ``ekl env create`` puts a named env: the first writable envs dir (conda's rule),
    or ``$MAMBA_ROOT_PREFIX/envs`` for mamba kinds."""
    cfg = conda_config()
    if kind in ("mamba", "micromamba") and cfg.mamba_root:
        return os.path.join(cfg.mamba_root, "envs", name)
    for d in cfg.envs_dirs:
        probe = d
        while not os.path.exists(probe) and os.path.dirname(probe) != probe:
            probe = os.path.dirname(probe)
        if os.access(probe, os.W_OK):
            return os.path.join(d, name)
    raise EnvError(f"no writable envs directory for {name!r} among {', '.join(cfg.envs_dirs)}; "
                   f"set CONDA_ENVS_DIRS or give a path in \"env\"")


def plugin_environment(plugin: PluginEnv, *, quiet: bool = False) -> Optional[Environment]:
    """The environment a plugin runs in, by the launcher's rule, for every ``ekl env`` verb.

    The env its JSON names (``pixi`` may leave the name out); else, when no type is given and
    a lock file sits beside the JSON, the plugin-local ``.ekl-env`` that ``ekl env create``
    builds and ``run``/``call``/ekl-python use; else None (the default interpreter).
    """
    from .lock import find_lock_file

    if plugin.env or plugin.kind == "pixi":
        return find_environment(plugin.kind, plugin.env or "", plugin_dir=plugin.folder,
                                quiet=quiet)
    if plugin.kind is None:
        lock = find_lock_file(plugin.folder, plugin.lock)
        if lock is not None:
            prefix = plugin.folder / LOCAL_ENV_DIR
            if not (prefix / "conda-meta").is_dir():
                raise EnvError(f"{prefix} (the plugin-local env described by {lock.name}) is "
                               f"not built; build it with "
                               f"`ekl env create {shlex.quote(str(plugin.folder))}`")
            return find_environment("conda", str(prefix), plugin_dir=plugin.folder,
                                    quiet=quiet)
    return None
