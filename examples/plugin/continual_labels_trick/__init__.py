"""The labels trick as a continual strategy: an example third-party plugin package.

Kept free of heavy imports: Hydra imports this package to find its configs every time
`continual` starts, so the strategy (and torch) load only when used.
"""

__all__ = ["LabelsTrick"]


def __getattr__(name: str):
    if name == "LabelsTrick":
        from continual_labels_trick.strategy import LabelsTrick

        return LabelsTrick
    raise AttributeError(name)
