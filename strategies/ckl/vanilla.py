"""Vanilla: fine-tune every parameter on the new corpus (the CKL paper's baseline, Sec. 4)."""

from continual.strategies.ckl.base import LMStrategy


class Vanilla(LMStrategy):
    """Full fine-tuning by next-token loss; everything is in ``LMStrategy``."""
