"""Task-free drift streams from river's synthetic generators, with known drift positions.

Each concept (a river generator variant: SEA's 4 functions, Agrawal's 10, STAGGER's 3,
Sine's 4) is one task; its training and test samples are drawn from its own river
generator (different seeds). The stream's schedule then presents the concepts in
order, abruptly or blended over ``gradual_width`` samples, which is what river's
``ConceptDriftStream`` does, except that here the concept of every sample is
known, so the runner can score detection and per-concept accuracy exactly.
Features are standardised with the first concept's training statistics.
"""

from __future__ import annotations

import itertools
from typing import Any

import numpy as np
import torch

from continual.streams.datasets import Dataset
from continual.streams.stream import Stream, Task
from continual.types import ConfigError

_GENERATORS = {
    "sea": ("SEA", "variant", 4),
    "agrawal": ("Agrawal", "classification_function", 10),
    "stagger": ("STAGGER", "classification_function", 3),
    "sine": ("Sine", "classification_function", 4),
}


def _generator(kind: str, concept: int, seed: int):
    from river.datasets import synth

    cls_name, arg, _ = _GENERATORS[kind]
    return getattr(synth, cls_name)(**{arg: concept, "seed": seed})


def _take(gen, n: int) -> tuple[np.ndarray, np.ndarray]:
    rows = list(itertools.islice(iter(gen), n))
    keys = sorted(rows[0][0])
    x = np.array([[float(r[0][k]) for k in keys] for r in rows], dtype=np.float32)
    y = np.array([int(r[1]) for r in rows])
    return x, y


def river_drift(
    generator: str = "sea",
    concepts: list[int] | None = None,
    samples_per_concept: int = 2000,
    test_per_concept: int = 500,
    seed: int = 0,
    name: str | None = None,
    **presentation: Any,
) -> Stream:
    """A task-free stream whose concept changes every ``samples_per_concept`` samples.

    Drift positions are exact (the stream's ``true_boundaries``); ``gradual_width``
    blends neighbouring concepts as for every other stream.
    """
    if generator not in _GENERATORS:
        raise ConfigError(f"unknown river generator {generator!r}; choose one of {sorted(_GENERATORS)}")
    n_variants = _GENERATORS[generator][2]
    concepts = list(range(n_variants)) if concepts is None else [int(c) for c in concepts]
    bad = [c for c in concepts if not 0 <= c < n_variants]
    if bad or not concepts:
        raise ConfigError(f"{generator} has concepts 0..{n_variants - 1}, got {concepts}")
    xs_tr, ys_tr, xs_te, ys_te, tasks, n_tr, n_te = [], [], [], [], [], 0, 0
    for t, c in enumerate(concepts):
        x, y = _take(_generator(generator, c, seed + 1000 * t), samples_per_concept)
        xt, yt = _take(_generator(generator, c, seed + 1000 * t + 500), test_per_concept)
        xs_tr.append(x)
        ys_tr.append(y)
        xs_te.append(xt)
        ys_te.append(yt)
        tasks.append(Task(
            id=t, classes=[0, 1], name=f"{generator}-{c}",
            train_idx=torch.arange(n_tr, n_tr + len(y)), test_idx=torch.arange(n_te, n_te + len(yt)),
        ))
        n_tr, n_te = n_tr + len(y), n_te + len(yt)
    x_tr, x_te = np.concatenate(xs_tr), np.concatenate(xs_te)
    mean, std = xs_tr[0].mean(0), xs_tr[0].std(0) + 1e-6
    d = Dataset(
        f"river_{generator}",
        torch.from_numpy((x_tr - mean) / std), torch.from_numpy(np.concatenate(ys_tr)).long(),
        torch.from_numpy((x_te - mean) / std), torch.from_numpy(np.concatenate(ys_te)).long(),
        n_classes=2,
    )
    presentation.setdefault("boundaries", "hidden")
    return Stream(name or f"drift_{generator}", d, tasks, seed=seed, **presentation)


river_drift.forwards_to = Stream  # config checking follows **presentation into Stream
