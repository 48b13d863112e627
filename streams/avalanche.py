"""Avalanche benchmarks <-> our streams: ``from_avalanche(benchmark)`` and ``to_avalanche(stream)``.

``avalanche_benchmark(factory, args)`` is ``from_avalanche`` for the CLI (``stream=avalanche``):
it builds the benchmark from a dotted factory path and its keyword arguments.

``from_avalanche`` materialises an Avalanche benchmark (0.6: any ``CLScenario`` with train and
test streams of dataset experiences) into a ``Stream``: experience i becomes task i.
``to_avalanche`` gives Avalanche users our generators -- class/domain-incremental, blurry,
gradual and task-free presentations -- as a ``CLScenario`` with ``train_stream`` and
``test_stream``. ``avalanche`` is imported inside the functions (it takes seconds to import).
"""

from __future__ import annotations

from typing import Any

import torch

from continual.streams.datasets import from_arrays
from continual.streams.stream import Stream, Task
from continual.types import ConfigError


def _materialise(experience: Any, batch_size: int = 1024) -> tuple[torch.Tensor, ...]:
    """(x, y, task labels) of one Avalanche experience, with its eval transforms applied."""
    from torch.utils.data import DataLoader

    data = experience.dataset
    data = data.eval() if hasattr(data, "eval") else data  # no random training augmentation
    collate = getattr(data, "collate_fn", None)
    xs, ys, ts = [], [], []
    for item in DataLoader(data, batch_size=batch_size, shuffle=False, collate_fn=collate):
        xs.append(torch.as_tensor(item[0]))
        ys.append(torch.as_tensor(item[1]))
        ts.append(torch.as_tensor(item[2]) if len(item) > 2 else torch.zeros_like(ys[-1]))
    if not xs:
        raise ConfigError(f"avalanche experience {experience.current_experience} is empty")
    return torch.cat(xs).float(), torch.cat(ys).long(), torch.cat(ts).long()


def from_avalanche(
    benchmark: Any,
    name: str = "avalanche",
    train_stream: str = "train_stream",
    test_stream: str = "test_stream",
    seed: int = 0,
    **presentation: Any,
) -> Stream:
    """Our ``Stream`` from an Avalanche benchmark: train experience i (with test experience i)
    becomes task i, its classes the labels present in its training data.

    Inputs are materialised in memory (x: (N, ...) float32) with the datasets' *eval*
    transforms. When the benchmark's experiences carry different task labels and
    ``presentation`` does not say otherwise, task ids are shown (``task_labels=True``);
    our task ids are experience indices. ``presentation``: ``batch_size``, ``passes``,
    ``boundaries``, ``blurry``, ... as in ``continual.streams.stream.Stream``.
    """
    try:
        train_exps = list(getattr(benchmark, train_stream))
        test_exps = list(getattr(benchmark, test_stream))
    except AttributeError as e:
        raise ConfigError(
            f"the benchmark has no {e.name!r}; give train_stream/test_stream names of its streams "
            f"(it has {sorted(getattr(benchmark, 'streams', {}))})"
        ) from None
    if len(train_exps) != len(test_exps):
        raise ConfigError(
            f"the benchmark has {len(train_exps)} training but {len(test_exps)} test experiences; "
            "from_avalanche pairs them one to one (give streams that match)"
        )
    parts = {"train": [_materialise(e) for e in train_exps],
             "test": [_materialise(e) for e in test_exps]}
    arrays = {k: [torch.cat([p[i] for p in v]) for i in range(3)] for k, v in parts.items()}
    n_classes = int(max(arrays["train"][1].max(), arrays["test"][1].max())) + 1
    dataset = from_arrays(arrays["train"][0], arrays["train"][1], arrays["test"][0],
                          arrays["test"][1], name=name, n_classes=n_classes)
    tasks, offsets = [], {"train": 0, "test": 0}
    for i in range(len(train_exps)):
        idx = {}
        for split in ("train", "test"):
            n = parts[split][i][1].numel()
            idx[split] = torch.arange(offsets[split], offsets[split] + n)
            offsets[split] += n
        classes = sorted(parts["train"][i][1].unique().tolist())
        tasks.append(Task(id=i, classes=classes, train_idx=idx["train"], test_idx=idx["test"],
                          name=f"experience {i}"))
    if "task_labels" not in presentation:
        labels = {int(t) for p in parts["train"] for t in p[2].unique()}
        presentation["task_labels"] = len(labels) > 1
    return Stream(name, dataset, tasks, seed=seed, **presentation)


def avalanche_benchmark(
    factory: str,
    args: dict[str, Any] | None = None,
    seed_arg: str | None = "seed",
    name: str | None = None,
    train_stream: str = "train_stream",
    test_stream: str = "test_stream",
    seed: int = 0,
    **presentation: Any,
) -> Stream:
    """An Avalanche benchmark as our stream, from the command line (``conf/stream/avalanche.yaml``).

    factory: dotted path of a callable returning an Avalanche benchmark, e.g.
        ``avalanche.benchmarks.classic.SplitMNIST`` (the benchmark's own data rules apply:
        Avalanche's classic benchmarks download their datasets when missing).
    args: its keyword arguments (e.g. ``{n_experiences: 5, return_task_id: false}``).
    seed_arg: the factory argument that receives the run's seed (Avalanche's classic
        benchmarks call it ``seed``; null: the seed is not passed). A value in ``args`` wins.
    name: the stream's name in run folders and reports (default: the factory's name).
    Everything else is ``from_avalanche``'s (train/test stream names, presentation).
    """
    from hydra.utils import get_object

    try:
        make = get_object(factory)
    except Exception as e:  # hydra wraps import errors in several types
        raise ConfigError(f"stream.factory={factory!r} cannot be imported ({e}); give the dotted "
                          "path of a function that returns an Avalanche benchmark") from None
    if not callable(make):
        raise ConfigError(f"stream.factory={factory!r} is not callable")
    kwargs = dict(args or {})
    if seed_arg is not None:
        kwargs.setdefault(seed_arg, seed)
    try:
        benchmark = make(**kwargs)
    except TypeError as e:
        raise ConfigError(f"stream.factory {factory} refused its arguments {kwargs}: {e} "
                          "(set stream.seed_arg=null if it takes no seed)") from None
    return from_avalanche(benchmark, name=name or factory.rsplit(".", 1)[-1].lower(),
                          train_stream=train_stream, test_stream=test_stream, seed=seed, **presentation)


avalanche_benchmark.forwards_to = Stream  # config checking follows **presentation into Stream


def _experience_data(x: torch.Tensor, y: torch.Tensor, task: torch.Tensor | int):
    from avalanche.benchmarks.utils import _make_taskaware_tensor_classification_dataset

    labels = task if isinstance(task, int) else task.tolist()
    return _make_taskaware_tensor_classification_dataset(
        x.cpu(), y.cpu(), targets=y.tolist(), task_labels=labels
    )


def _add_class_timeline(experiences: list) -> None:
    """Avalanche's ClassesTimeline attributes, from each experience's own labels."""
    all_classes: set[int] = set()
    labels = [set(e.dataset.targets.uniques) for e in experiences]
    for s in labels:
        all_classes |= s
    seen: set[int] = set()
    for exp, current in zip(experiences, labels):
        exp.classes_in_this_experience = sorted(current)
        exp.previous_classes = sorted(seen)
        seen |= current
        exp.classes_seen_so_far = sorted(seen)
        exp.future_classes = sorted(all_classes - seen)


def to_avalanche(stream: Stream, online: bool | None = None, experience_size: int | None = None):
    """An Avalanche ``CLScenario`` (``train_stream``, ``test_stream``) built from our ``stream``.

    Training experiences follow our schedule, so blurry and gradual presentations keep their
    mixing: one ``DatasetExperience`` per segment (the stretch in which one task is nominally
    trained; passes repeat the data inside it, so ``train_epochs=1`` reproduces our schedule),
    or, when ``online`` (default: the stream hides its boundaries), ``OnlineCLExperience``s of
    ``experience_size`` consecutive samples (default: the stream's batch size) whose
    ``origin_experience`` is the segment; they expose boundary attributes only when the stream
    shows boundaries. Test experience t is task t's test set. Task labels are the true task
    when the stream shows them (task-incremental), else 0 (Avalanche's class-incremental
    convention). With ``repeats`` > 1 training experience ids count segments, not tasks.
    """
    from avalanche.benchmarks import OnlineCLExperience
    from avalanche.benchmarks.scenarios.dataset_scenario import DatasetExperience
    from avalanche.benchmarks.scenarios.generic_scenario import CLScenario, EagerCLStream

    online = stream.boundaries == "hidden" if online is None else online
    size = experience_size or stream.batch_size
    if size < 1:
        raise ConfigError(f"experience_size must be >= 1, got {size}")
    visible = stream.boundaries == "visible"
    train = []
    for k, seg in enumerate(stream.segments):
        b = stream.batch(seg.start, seg.end)
        task = b.true_task if stream.task_labels else 0
        origin = DatasetExperience(dataset=_experience_data(b.x, b.y, task), current_experience=k)
        if not online:
            train.append(origin)
            continue
        n = seg.end - seg.start
        starts = list(range(0, n, size))
        for j, s in enumerate(starts):
            sl = slice(s, min(s + size, n))
            part = task if isinstance(task, int) else task[sl]
            train.append(OnlineCLExperience(
                dataset=_experience_data(b.x[sl], b.y[sl], part), origin_experience=origin,
                is_first_subexp=j == 0, is_last_subexp=j == len(starts) - 1,
                sub_stream_length=len(starts), access_task_boundaries=visible,
            ))
    test = []
    for t in range(stream.n_tasks):
        x, y = stream.eval_set(t)
        labels = t if stream.task_labels else 0
        test.append(DatasetExperience(dataset=_experience_data(x, y, labels)))
    _add_class_timeline(train)
    _add_class_timeline(test)
    return CLScenario([EagerCLStream("train", train), EagerCLStream("test", test)])
