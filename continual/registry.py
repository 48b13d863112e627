"""The plugin registry: built-in and installed strategies and streams, found without importing them.

Three Python entry-point groups let a third-party package join (see docs/plugins.md):

- ``continual.strategies``: ``name = "package.module:Class"``, a strategy class;
- ``continual.streams``: ``name = "package.module:function"``, a stream factory;
- ``continual.configs``: ``name = "package.conf"``, a package holding Hydra config files
  (``strategy/<name>.yaml``, ``stream/<name>.yaml``). Our Hydra search-path plugin
  (``hydra_plugins/continual_searchpath``) appends every such package to the config search
  path, so ``continual strategy=<name>`` works after ``pip install``.

Everything here reads config files, entry-point metadata and module sources (with ``ast``);
nothing imports torch or a plugin's code, so ``continual list`` answers quickly.
"""

from __future__ import annotations

import ast
import importlib.util
import sys
from dataclasses import dataclass
from importlib import metadata
from pathlib import Path
from typing import Any, TextIO

GROUPS = {"strategy": "continual.strategies", "stream": "continual.streams"}
CONFIG_GROUP = "continual.configs"
BUILTIN = "built-in"


@dataclass
class Entry:
    """One strategy or stream a user can pick.

    ``name`` is what goes after ``strategy=`` / ``stream=``; ``target`` the object it builds
    (``module.attr``); ``config`` the config file, or None for an entry point without one
    (usable from Python through ``load``, not by name on the command line).
    """

    kind: str
    name: str
    target: str
    doc: str
    source: str
    config: str | None = None


# ---------------------------------------------------------------------- locating sources
def module_path(module: str) -> Path | None:
    """The source file (or package folder) of ``module`` without executing it or its parents."""
    parts = module.split(".")
    parent = ".".join(parts[:-1])
    if parent and parent in sys.modules:
        # The parent is imported already (always so for ``continual.*``, whose subpackages live in
        # the repo's top-level folders through the package-dir mapping): the import system knows.
        try:
            spec = importlib.util.find_spec(module)
        except (ImportError, ValueError):
            return None
        if spec is None:
            return None
        if spec.submodule_search_locations:
            return Path(list(spec.submodule_search_locations)[0])
        return Path(spec.origin) if spec.origin else None
    try:
        spec = importlib.util.find_spec(parts[0])
    except (ImportError, ValueError):
        return None
    if spec is None:
        return None
    if len(parts) == 1:
        if spec.submodule_search_locations:
            return Path(list(spec.submodule_search_locations)[0])
        return Path(spec.origin) if spec.origin else None
    for base in spec.submodule_search_locations or []:
        path = Path(base, *parts[1:])
        if path.is_dir():
            return path
        if path.with_suffix(".py").is_file():
            return path.with_suffix(".py")
    return None


def _source_file(module: str) -> Path | None:
    path = module_path(module)
    if path is not None and path.is_dir():
        path = path / "__init__.py"
    return path if path is not None and path.is_file() else None


def _split_target(target: str) -> tuple[str, str]:
    """``pkg.mod:Obj`` or ``pkg.mod.Obj`` -> (``pkg.mod``, ``Obj``)."""
    if ":" in target:
        module, _, attr = target.partition(":")
        return module, attr
    module, _, attr = target.rpartition(".")
    return module, attr


def first_doc_line(target: str, _depth: int = 0) -> str:
    """First docstring line of ``target`` (``module.attr`` or ``module:attr``), read with ``ast``.

    Follows one ``from x import attr`` re-export per level (up to 3 levels); falls back to the
    module's docstring; "" when the source cannot be found.
    """
    module, attr = _split_target(target)
    path = _source_file(module)
    if path is None:
        return ""
    try:
        tree = ast.parse(path.read_text(encoding="utf-8"))
    except (OSError, SyntaxError, UnicodeDecodeError):
        return ""
    for node in tree.body:
        defines = (ast.ClassDef, ast.FunctionDef, ast.AsyncFunctionDef)
        if isinstance(node, defines) and node.name == attr:
            return _first_line(ast.get_docstring(node) or ast.get_docstring(tree))
    if _depth < 3:
        for node in tree.body:
            if isinstance(node, ast.ImportFrom) and any(a.name == attr for a in node.names):
                alias = next(a for a in node.names if a.name == attr)
                source = node.module or ""
                if node.level:  # relative import
                    package = module if path.name == "__init__.py" else module.rpartition(".")[0]
                    for _ in range(node.level - 1):
                        package = package.rpartition(".")[0]
                    source = f"{package}.{source}" if source else package
                line = first_doc_line(f"{source}:{alias.name}", _depth + 1)
                if line:
                    return line
    return _first_line(ast.get_docstring(tree))


def _first_line(doc: str | None) -> str:
    return doc.strip().splitlines()[0].strip() if doc and doc.strip() else ""


def read_config(path: Path) -> tuple[str, str]:
    """(``_target_``, first comment line) of a config file, parsed without OmegaConf."""
    import yaml

    text = path.read_text(encoding="utf-8")
    comment = ""
    for line in text.splitlines():
        stripped = line.strip()
        if stripped.startswith("# @package"):
            continue
        if stripped.startswith("#"):
            comment = stripped.lstrip("#").strip()
            break
        if stripped:
            break
    try:
        data = yaml.safe_load(text) or {}
    except yaml.YAMLError:
        data = {}
    target = data.get("_target_", "") if isinstance(data, dict) else ""
    return str(target), comment


# ---------------------------------------------------------------------- entry points
def _entry_points(group: str) -> list[metadata.EntryPoint]:
    return sorted(metadata.entry_points(group=group), key=lambda ep: ep.name)


def _dist_name(ep: metadata.EntryPoint) -> str:
    dist = getattr(ep, "dist", None)
    return dist.metadata["Name"] if dist is not None else "?"


def config_packages() -> list[tuple[str, str]]:
    """(entry-point name, config package) for every installed ``continual.configs`` entry point."""
    return [(ep.name, ep.value.strip()) for ep in _entry_points(CONFIG_GROUP)]


def _config_dirs() -> list[tuple[str, Path]]:
    """(source, folder) of every config tree: ours first, then each installed plugin's."""
    dirs: list[tuple[str, Path]] = []
    ours = module_path("continual.conf")
    if ours is not None:
        dirs.append((BUILTIN, ours))
    for ep in _entry_points(CONFIG_GROUP):
        path = module_path(ep.value.strip())
        if path is not None and path.is_dir():
            dirs.append((_dist_name(ep), path))
    return dirs


# ---------------------------------------------------------------------- the listing
def available(kind: str) -> dict[str, Entry]:
    """Every ``kind`` ("strategy" or "stream") a user can pick, by name.

    Config files come first (ours, then plugins' in entry-point order: on a name clash the
    first wins, as in Hydra's search path); entry points without a config file of the same
    name are added after them.
    """
    if kind not in GROUPS:
        raise ValueError(f"kind must be one of {sorted(GROUPS)}, got {kind!r}")
    found: dict[str, Entry] = {}
    for source, folder in _config_dirs():
        for path in sorted((folder / kind).glob("*.yaml")):
            if path.stem in found:
                continue
            target, comment = read_config(path)
            doc = comment or (first_doc_line(target) if target else "")
            found[path.stem] = Entry(kind, path.stem, target, doc, source, str(path))
    for ep in _entry_points(GROUPS[kind]):
        module, attr = _split_target(ep.value.strip())
        target = f"{module}.{attr}"
        if ep.name in found:
            entry = found[ep.name]
            if not entry.doc:
                entry.doc = first_doc_line(target)
            continue
        found[ep.name] = Entry(kind, ep.name, target, first_doc_line(target), _dist_name(ep))
    return found


def config_file(group: str, name: str) -> Path | None:
    """The config file ``<group>/<name>.yaml`` that Hydra would pick (ours first, then plugins')."""
    for _, folder in _config_dirs():
        path = folder / group / f"{name}.yaml"
        if path.is_file():
            return path
    return None


#: config groups listed by ``continual list`` from their config files alone (no entry points)
CONFIG_ONLY_GROUPS = ("model", "schedule")


def config_choices(group: str) -> dict[str, tuple[str, str]]:
    """Every config file of ``group`` (``model``, ``schedule``): name -> (first comment line, source)."""
    found: dict[str, tuple[str, str]] = {}
    for source, folder in _config_dirs():
        for path in sorted((folder / group).glob("*.yaml")):
            if path.stem not in found:
                target, comment = read_config(path)
                found[path.stem] = (comment or (first_doc_line(target) if target else ""), source)
    return found


def load(kind: str, name: str) -> Any:
    """Import the class or factory behind a name, e.g. ``load("strategy", "er")``."""
    entries = available(kind)
    if name not in entries:
        from continual.types import ConfigError

        raise ConfigError(
            f"no {kind} named {name!r}; installed: {', '.join(sorted(entries))} "
            "(see `continual list`)"
        )
    from continual.config import locate_target

    return locate_target(entries[name].target)


def print_list(file: TextIO | None = None) -> None:
    """Print built-in and installed strategies, streams, models and schedules with their one-line docs."""
    out = file or sys.stdout
    for kind in ("strategy", "stream"):
        entries = available(kind)
        print(f"{'strategies' if kind == 'strategy' else 'streams'} ({kind}=<name>):", file=out)
        width = max((len(e.name) for e in entries.values()), default=0)
        for e in entries.values():
            where = "" if e.source == BUILTIN else f"  [{e.source}]"
            how = "" if e.config else f"  (no config file; registry.load({kind!r}, {e.name!r}))"
            print(f"  {e.name:<{width}}  {e.doc}{where}{how}", file=out)
        print(file=out)
    for group in CONFIG_ONLY_GROUPS:
        choices = config_choices(group)
        print(f"{group}s ({group}=<name>):", file=out)
        width = max((len(n) for n in choices), default=0)
        for name, (doc, source) in choices.items():
            where = "" if source == BUILTIN else f"  [{source}]"
            print(f"  {name:<{width}}  {doc}{where}", file=out)
        print(file=out)
    plugins = config_packages()
    if plugins:
        print("config packages (continual.configs): " + ", ".join(m for _, m in plugins), file=out)
