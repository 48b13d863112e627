"""Where ``continual.streams``, ``.strategies``, ``.memory`` and ``.conf`` come from, and their old names.

The repo keeps them as top-level folders; they install under ``continual`` (pyproject's
package-dir mapping: a wheel copies them into ``continual/``, an editable install maps them with
setuptools' import finder). ``SourceTreeFinder`` does the same mapping for a checkout that is
imported without being installed (``PYTHONPATH=/path/to/clone``), so the ``continual`` package and
its subpackages always come from the same tree.

Deprecated top-level names ``streams``, ``strategies``, ``memory`` for ``continual.*`` (one
release): until 0.2 these folders were installed as top-level packages, so configs and plugins wrote
``_target_: strategies.er.ER`` or ``from strategies.base import SupervisedStrategy``. Those
still import, with a ``FutureWarning`` (shown by default, unlike a DeprecationWarning raised
inside importlib) that names the new path, through a finder on
``sys.meta_path`` that answers a top-level old name only when no other finder has it, so a user's
own ``strategies/`` (or ``streams/``, ``memory/``) folder always wins; submodules of an alias
resolve to the very same module objects as their new names (no second copy of any class).
Removed in the next release.
"""

from __future__ import annotations

import importlib
import importlib.abc
import importlib.util
import sys
import warnings
from pathlib import Path
from types import ModuleType

OLD_NAMES = ("streams", "strategies", "memory")
MAPPED = ("streams", "strategies", "memory", "conf")
SOURCE_ROOT = Path(__file__).resolve().parents[1]


def _is_source_checkout() -> bool:
    """True when this ``continual`` package sits in a clone of the repo (its folders beside it)."""
    if (SOURCE_ROOT / "continual" / "streams").exists():
        return False  # installed from a wheel: the subpackages are inside continual/
    pyproject = SOURCE_ROOT / "pyproject.toml"
    return pyproject.is_file() and 'name = "continual-sim"' in pyproject.read_text()


class SourceTreeFinder(importlib.abc.MetaPathFinder):
    """Maps ``continual.<name>`` to the checkout's ``<name>/`` folder (not installed, or installed elsewhere)."""

    def find_spec(self, fullname: str, path=None, target=None):  # noqa: D102 - importlib protocol
        head, _, name = fullname.partition(".")
        if head != "continual" or name not in MAPPED:
            return None
        init = SOURCE_ROOT / name / "__init__.py"
        if not init.is_file():
            return None
        return importlib.util.spec_from_file_location(fullname, init, submodule_search_locations=[str(init.parent)])


class _AliasLoader(importlib.abc.Loader):
    def __init__(self, new_name: str) -> None:
        self.new_name = new_name

    def create_module(self, spec):  # noqa: D102 - importlib protocol
        module = importlib.import_module(self.new_name)
        self.real_spec = module.__spec__
        return module

    def exec_module(self, module: ModuleType) -> None:  # noqa: D102 - importlib protocol
        # importlib stamped the alias's spec on the real module; give it back its own.
        module.__spec__ = self.real_spec


class DeprecatedNameFinder(importlib.abc.MetaPathFinder):
    """Resolves ``streams.x`` to ``continual.streams.x`` (and so on) when nothing else does."""

    def find_spec(self, fullname: str, path=None, target=None):  # noqa: D102 - importlib protocol
        top = fullname.split(".")[0]
        if top not in OLD_NAMES:
            return None
        if "." not in fullname:
            ours = str(SOURCE_ROOT / fullname / "__init__.py")
            for finder in sys.meta_path:
                spec = finder.find_spec(fullname, None) if finder is not self and hasattr(finder, "find_spec") else None
                # a package of the user's own wins; our own folder (the checkout's root on sys.path)
                # is aliased, or its modules would load a second time under the old names
                if spec is not None and spec.origin != ours:
                    return None
        elif sys.modules.get(top) is not sys.modules.get(f"continual.{top}"):
            return None  # a submodule of the user's own package
        new_name = f"continual.{fullname}"
        if importlib.util.find_spec(new_name) is None:
            return None
        warnings.warn(
            f"the module name {fullname!r} is deprecated and will be removed in the next release; "
            f"use {new_name!r} (in imports and in configs' _target_)",
            FutureWarning, stacklevel=2,
        )
        return importlib.util.spec_from_loader(fullname, _AliasLoader(new_name))


def install() -> None:
    """Put the finders first on ``sys.meta_path`` (once): the source-tree finder must win over an
    editable install of another checkout, and the alias finder must see an alias's submodules
    before the path finder, which would load a second copy from the real folder."""
    if not any(isinstance(f, DeprecatedNameFinder) for f in sys.meta_path):
        sys.meta_path.insert(0, DeprecatedNameFinder())
    if _is_source_checkout() and not any(isinstance(f, SourceTreeFinder) for f in sys.meta_path):
        sys.meta_path.insert(0, SourceTreeFinder())
