"""Stream generators: class-, task- and domain-incremental streams over a dataset.

Each returns a ``Stream``; the presentation keyword arguments (``batch_size``,
``passes``, ``boundaries``, ``task_labels``, ``blurry``, ``gradual_width``,
``repeats``) are those of ``continual.streams.stream.Stream``.

The data: a built-in dataset by name (``continual.streams.datasets.DATASETS``), a ``Dataset``, or
a user's own images (``dataset`` ``folder``, ``npz`` or ``hf_disk`` read from ``dataset_root``,
with ``test_fraction``, ``image_column`` and ``label_column``: ``continual.streams.image_sources``).
``image_size``, ``color``, ``normalize``, ``mean`` and ``std`` shape any image dataset
(``image_sources.shape_images``).
"""

from __future__ import annotations

from dataclasses import replace
from typing import Any

import torch

from continual.streams.datasets import IMAGE_SOURCES, Dataset, load_dataset, subsample_per_class
from continual.streams.image_sources import load_image_source, shape_images
from continual.streams.stream import Stream, Task
from continual.types import ConfigError


def _dataset(
    dataset: str | Dataset, seed: int, dataset_root: str | None = None, download: bool = False,
    train_per_class: int | None = None, test_per_class: int | None = None, test_fraction: float = 0.2,
    image_size: int | list[int] | None = None, color: str | None = None, normalize: bool = False,
    mean: float | list[float] | None = None, std: float | list[float] | None = None,
    image_column: str = "image", label_column: str = "label",
) -> Dataset:
    """The stream's data: loaded (by name, or a user's own images), shaped, then subsampled."""
    if isinstance(dataset, Dataset):
        d = dataset
    elif dataset in IMAGE_SOURCES:
        d = load_image_source(dataset, dataset_root, seed=seed, test_fraction=test_fraction,
                              image_size=image_size, color=color, image_column=image_column,
                              label_column=label_column)
    else:
        d = load_dataset(dataset, dataset_root, download)
    # normalised with the whole training split's moments, before any per-class subset
    d = shape_images(d, image_size, color, normalize, mean, std)
    if train_per_class is not None or test_per_class is not None:
        xtr, ytr = subsample_per_class(d.x_train, d.y_train, train_per_class, seed)
        xte, yte = subsample_per_class(d.x_test, d.y_test, test_per_class, seed + 1)
        d = replace(d, x_train=xtr, y_train=ytr, x_test=xte, y_test=yte)
    return d


def split_classes(
    n_classes: int, n_tasks: int | None, classes_per_task: int | None, class_order: list[int] | None
) -> list[list[int]]:
    """Split classes 0..n_classes-1 (in ``class_order``) into equal consecutive groups."""
    order = list(range(n_classes)) if class_order is None else [int(c) for c in class_order]
    if sorted(order) != list(range(n_classes)):
        raise ConfigError(
            f"class_order must be a permutation of 0..{n_classes - 1}, got {order}; "
            "list every class exactly once"
        )
    if (n_tasks is None) == (classes_per_task is None):
        raise ConfigError("give exactly one of n_tasks and classes_per_task")
    if classes_per_task is not None:
        if classes_per_task < 1 or n_classes % classes_per_task:
            raise ConfigError(
                f"classes_per_task={classes_per_task} does not divide the {n_classes} classes; "
                f"use one of {[k for k in range(1, n_classes + 1) if n_classes % k == 0]}"
            )
        n_tasks = n_classes // classes_per_task
    if n_tasks < 1 or n_classes % n_tasks:
        raise ConfigError(
            f"the stream has {n_classes} classes but n_tasks={n_tasks} does not divide them; "
            f"use n_tasks in {[k for k in range(1, n_classes + 1) if n_classes % k == 0]} "
            "or give classes_per_task"
        )
    k = n_classes // n_tasks
    return [order[i * k : (i + 1) * k] for i in range(n_tasks)]


def class_incremental(
    dataset: str | Dataset = "mnist",
    n_tasks: int | None = 5,
    classes_per_task: int | None = None,
    class_order: list[int] | None = None,
    shuffle_classes: bool = False,
    dataset_root: str | None = None,
    download: bool = False,
    train_per_class: int | None = None,
    test_per_class: int | None = None,
    test_fraction: float = 0.2,
    image_size: int | list[int] | None = None,
    color: str | None = None,
    normalize: bool = False,
    mean: float | list[float] | None = None,
    std: float | list[float] | None = None,
    image_column: str = "image",
    label_column: str = "label",
    seed: int = 0,
    name: str | None = None,
    **presentation: Any,
) -> Stream:
    """Class-incremental split: each task brings new classes; labels stay global.

    With ``task_labels=True`` this is the task-incremental scenario. The data options: see the
    module docstring.
    """
    d = _dataset(dataset, seed, dataset_root, download, train_per_class, test_per_class, test_fraction,
                 image_size, color, normalize, mean, std, image_column, label_column)
    if class_order is None and shuffle_classes:
        class_order = torch.randperm(d.n_classes, generator=torch.Generator().manual_seed(seed)).tolist()
    if classes_per_task is not None:
        n_tasks = None
    groups = split_classes(d.n_classes, n_tasks, classes_per_task, class_order)
    tasks = []
    for t, classes in enumerate(groups):
        cls = torch.tensor(classes)
        tasks.append(Task(
            id=t, classes=classes,
            train_idx=torch.isin(d.y_train, cls).nonzero().squeeze(1),
            test_idx=torch.isin(d.y_test, cls).nonzero().squeeze(1),
        ))
    return Stream(name or f"split_{d.name}", d, tasks, seed=seed, **presentation)


def task_incremental(**kwargs: Any) -> Stream:
    """Class-incremental split with task ids shown at train and test."""
    return class_incremental(**{**kwargs, "task_labels": True})


class Permute:
    """A fixed permutation of the flattened input (Permuted MNIST, Goodfellow et al. 2013)."""

    def __init__(self, perm: torch.Tensor) -> None:
        self.perm = perm

    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        flat = x.reshape(x.shape[0], -1)
        return flat[:, self.perm.to(x.device)].reshape(x.shape)


class Rotate:
    """A fixed rotation of image inputs by ``degrees`` (Rotated MNIST)."""

    def __init__(self, degrees: float) -> None:
        self.degrees = float(degrees)

    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        from torchvision.transforms.v2 import functional as TF

        return TF.rotate(x, self.degrees)


def domain_incremental(
    dataset: str | Dataset = "mnist",
    n_tasks: int = 10,
    kind: str = "permuted",
    angles: list[float] | None = None,
    dataset_root: str | None = None,
    download: bool = False,
    train_per_class: int | None = None,
    test_per_class: int | None = None,
    test_fraction: float = 0.2,
    image_size: int | list[int] | None = None,
    color: str | None = None,
    normalize: bool = False,
    mean: float | list[float] | None = None,
    std: float | list[float] | None = None,
    image_column: str = "image",
    label_column: str = "label",
    seed: int = 0,
    name: str | None = None,
    **presentation: Any,
) -> Stream:
    """Domain-incremental: every task has all classes under a new input transform.

    ``kind='permuted'``: task 0 is the original input, task t>0 a fixed pixel permutation.
    ``kind='rotated'``: task t rotates by ``angles[t]`` (default evenly spaced in [0, 180)).
    The data options: see the module docstring.
    """
    d = _dataset(dataset, seed, dataset_root, download, train_per_class, test_per_class, test_fraction,
                 image_size, color, normalize, mean, std, image_column, label_column)
    if n_tasks < 1:
        raise ConfigError(f"n_tasks must be >= 1, got {n_tasks}")
    g = torch.Generator().manual_seed(seed)
    dim = int(torch.tensor(d.input_shape).prod())
    if kind == "permuted":
        transforms = [Permute(torch.arange(dim))] + [
            Permute(torch.randperm(dim, generator=g)) for _ in range(n_tasks - 1)
        ]
    elif kind == "rotated":
        if len(d.input_shape) != 3:
            raise ConfigError(
                f"rotated streams need image inputs, dataset {d.name} has shape {d.input_shape}"
            )
        angles = angles if angles is not None else [180.0 * t / n_tasks for t in range(n_tasks)]
        if len(angles) != n_tasks:
            raise ConfigError(f"angles has {len(angles)} entries but n_tasks={n_tasks}")
        transforms = [Rotate(a) for a in angles]
    else:
        raise ConfigError(f"unknown domain-incremental kind {kind!r}; choose 'permuted' or 'rotated'")
    all_train, all_test = torch.arange(d.y_train.numel()), torch.arange(d.y_test.numel())
    tasks = [
        Task(id=t, classes=list(range(d.n_classes)), train_idx=all_train, test_idx=all_test, transform=tf)
        for t, tf in enumerate(transforms)
    ]
    return Stream(name or f"{kind}_{d.name}", d, tasks, seed=seed, **presentation)


# Let config checking follow **presentation into the Stream's options.
class_incremental.forwards_to = Stream
domain_incremental.forwards_to = Stream
task_incremental.forwards_to = class_incremental
