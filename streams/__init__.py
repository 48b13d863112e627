"""Datasets and stream generators: what a learner sees, in which order, with which boundaries."""

from continual.streams.datasets import DATASETS, Dataset, from_arrays, load_dataset
from continual.streams.drift import river_drift
from continual.streams.generators import class_incremental, domain_incremental, split_classes, task_incremental
from continual.streams.stream import Segment, Stream, Task

__all__ = [
    "DATASETS", "Dataset", "Segment", "Stream", "Task", "class_incremental", "domain_incremental",
    "from_arrays", "load_dataset", "river_drift", "split_classes", "task_incremental",
]
