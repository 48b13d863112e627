"""continual: a continual-learning simulation framework (streams, strategies, metrics, runs).

Importing this package is cheap: torch, avalanche and wandb load only when used.
"""

__version__ = "0.1.0"
