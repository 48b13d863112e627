"""Backbones (image/vector classifiers) and, in ``continual.models.lm``, language models."""

from continual.models.backbones import BACKBONES, Classifier, build_model

__all__ = ["BACKBONES", "Classifier", "build_model"]
