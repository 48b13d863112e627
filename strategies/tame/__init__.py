"""TAME (Zhu et al., CVPR-W 2024): task-agnostic continual learning with multiple experts.

``strategy``: the strategy (the paper, and where we depart from it); ``detector``: task-switch
detectors on an expert's loss; ``experts``: the expert pool; ``selector``: the network that
routes inputs to experts. ``continual.strategies.tame.TAME`` is the Hydra ``_target_``.
"""

from continual.strategies.tame.detector import (
    DETECTORS,
    AdaptiveWindow,
    LossTracker,
    RiverDetector,
    SwitchDetector,
    ThresholdDetector,
    detect_shifts,
    make_detector,
)
from continual.strategies.tame.experts import Expert, ExpertPool
from continual.strategies.tame.selector import ExpertSelector
from continual.strategies.tame.strategy import TAME

# The public path: a run's fingerprint (kept in its checkpoints, checked on resume) names the
# class by module, and checkpoints written before the package split say continual.strategies.tame.
TAME.__module__ = __name__

__all__ = [
    "DETECTORS", "TAME", "AdaptiveWindow", "Expert", "ExpertPool", "ExpertSelector", "LossTracker",
    "RiverDetector", "SwitchDetector", "ThresholdDetector", "detect_shifts", "make_detector",
]
