"""Hydra plugin package of continual: joins third-party config packages to the search path."""
