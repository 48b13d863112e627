"""Errors that say what to do (no heavy imports, so the CLI can use them before torch loads)."""


class ConfigError(ValueError):
    """A configuration or input that cannot run; the message says what to do."""


class NonFiniteLoss(FloatingPointError):
    """A training step produced a NaN or Inf loss; raised before the update is applied."""
