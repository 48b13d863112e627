"""Hydra configs of continual-labels-trick (found through the ``continual.configs`` entry point)."""
