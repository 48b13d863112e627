"""Hydra search-path plugin: installed ``continual.configs`` packages join the config path.

A third-party package declares, in its pyproject.toml::

    [project.entry-points."continual.configs"]
    theirs = "their_package.conf"

and ships ``their_package/conf/strategy/theirs.yaml`` (an ``__init__.py`` in ``conf/``). This
plugin appends ``pkg://their_package.conf`` to the search path of the ``continual`` app, so
``continual strategy=theirs`` works after ``pip install``. Built-in configs come first: on a
name clash ours win (``continual list`` shows which file a name resolves to).

Why one generic plugin instead of one ``hydra_plugins.<name>`` package per third party:
the plugin author writes two lines of metadata instead of a Hydra plugin class, and the same
entry points feed ``continual list``.
"""

from __future__ import annotations

from hydra.core.config_search_path import ConfigSearchPath
from hydra.plugins.search_path_plugin import SearchPathPlugin

# The primary config of the continual app (continual/cli.py: config_path="pkg://continual.conf").
CONTINUAL_PRIMARY = "pkg://continual.conf"
PROVIDER_PREFIX = "continual-plugin:"


class ContinualSearchPathPlugin(SearchPathPlugin):
    """Append ``pkg://<module>`` for each ``continual.configs`` entry point (continual app only)."""

    def manipulate_search_path(self, search_path: ConfigSearchPath) -> None:
        paths = [element.path for element in search_path.get_path()]
        if CONTINUAL_PRIMARY not in paths:
            return  # another Hydra app in the same environment: leave its search path alone
        from continual.registry import config_packages

        for name, module in config_packages():
            path = f"pkg://{module}"
            if path not in paths:
                search_path.append(provider=f"{PROVIDER_PREFIX}{name}", path=path)
                paths.append(path)
