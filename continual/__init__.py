"""continual: a continual-learning simulation framework (streams, strategies, metrics, runs).

Importing this package is cheap: torch, avalanche and wandb load only when used.
"""

__version__ = "0.1.0"

from continual import _layout

_layout.install()  # continual.streams & co. from a source checkout; the old top-level names, for one release
