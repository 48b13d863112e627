"""Stream generators: determinism, presentation options, and clear errors."""

import pytest
import torch

from continual import streams
from continual.streams.datasets import from_arrays
from continual.types import ConfigError


def _tiny(n_classes=4, per_class=20, shape=(1, 4, 4)):
    g = torch.Generator().manual_seed(0)
    y = torch.arange(n_classes).repeat_interleave(per_class)
    x = torch.rand((len(y), *shape), generator=g)
    return from_arrays(x, y, x[::2], y[::2], name="tiny")


def test_class_incremental_splits_classes_into_tasks():
    s = streams.class_incremental(_tiny(), n_tasks=2, batch_size=8)
    assert [t.classes for t in s.tasks] == [[0, 1], [2, 3]]
    seg0 = s.segments[0]
    assert set(s.dataset.y_train[s.order[seg0.start:seg0.end]].tolist()) == {0, 1}


def test_same_seed_same_batches_other_seed_differs():
    a = streams.class_incremental(_tiny(), n_tasks=2, seed=1)
    b = streams.class_incremental(_tiny(), n_tasks=2, seed=1)
    c = streams.class_incremental(_tiny(), n_tasks=2, seed=2)
    assert torch.equal(a.order, b.order)
    assert not torch.equal(a.order, c.order)


def test_class_order_is_respected():
    s = streams.class_incremental(_tiny(), n_tasks=2, class_order=[3, 1, 0, 2])
    assert [t.classes for t in s.tasks] == [[3, 1], [0, 2]]


def test_passes_repeat_each_task_contiguously():
    s = streams.class_incremental(_tiny(), n_tasks=2, passes=3)
    assert len(s) == 3 * 80 and s.segments[0].end == 120


def test_task_incremental_shows_task_ids_and_class_incremental_hides_them():
    ti = streams.task_incremental(dataset=_tiny(), n_tasks=2)
    ci = streams.class_incremental(_tiny(), n_tasks=2)
    assert torch.equal(ti.batch(0, 5).task, torch.zeros(5, dtype=torch.long))
    assert ci.batch(0, 5).task is None and ci.batch(0, 5).true_task is not None


def test_blurry_boundaries_leak_the_given_share():
    s = streams.class_incremental(_tiny(per_class=100), n_tasks=2, blurry=0.2)
    seg0 = s.segments[0]
    foreign = (s.true_task[seg0.start:seg0.end] != 0).float().mean().item()
    assert foreign == pytest.approx(0.1, abs=0.01)  # 0.2 * 200 / 2 swapped each way


def test_gradual_drift_blends_linearly_around_the_boundary():
    s = streams.class_incremental(_tiny(per_class=500), n_tasks=2, gradual_width=400)
    b = s.segments[0].end
    early = s.true_task[b - 200 : b - 100].float().mean().item()
    late = s.true_task[b + 100 : b + 200].float().mean().item()
    assert early < 0.4 < 0.6 < late
    assert s.true_task[: b - 200].eq(0).all() and s.true_task[b + 200 :].eq(1).all()


def test_recurring_stream_repeats_the_task_sequence():
    s = streams.class_incremental(_tiny(), n_tasks=2, repeats=3, boundaries="hidden")
    assert [seg.task for seg in s.segments] == [0, 1, 0, 1, 0, 1]
    assert len(s.true_boundaries) == 5


def test_permuted_stream_permutes_inputs_per_task():
    s = streams.domain_incremental(_tiny(), n_tasks=3, kind="permuted")
    x0, _ = s.eval_set(0)
    x1, _ = s.eval_set(1)
    assert torch.equal(x0, s.dataset.x_test)
    assert not torch.equal(x1, x0)
    assert torch.equal(x1.flatten(1).sort(1).values, x0.flatten(1).sort(1).values)


def test_rotated_stream_rotates_inputs():
    s = streams.domain_incremental(_tiny(), n_tasks=2, kind="rotated", angles=[0.0, 90.0])
    x1, _ = s.eval_set(1)
    assert torch.allclose(x1, torch.rot90(s.dataset.x_test, 1, dims=(2, 3)), atol=1e-5)


def test_river_drift_stream_has_known_drift_positions():
    s = streams.river_drift("sea", concepts=[0, 1, 2], samples_per_concept=300, test_per_concept=50)
    assert s.true_boundaries == [300, 600]
    assert s.boundaries == "hidden" and s.n_classes == 2 and s.input_shape == (3,)


def test_eval_subset_is_fixed_and_bounded():
    s = streams.class_incremental(_tiny(), n_tasks=2)
    a, _ = s.eval_set(0, max_items=5)
    b, _ = s.eval_set(0, max_items=5)
    assert a.shape[0] == 5 and torch.equal(a, b)


# --------------------------------------------------------------- bad input: one test each
def test_n_tasks_that_does_not_divide_the_classes():
    with pytest.raises(ConfigError, match=r"n_tasks=3 does not divide them; use n_tasks in \[1, 2, 4\]"):
        streams.class_incremental(_tiny(), n_tasks=3)


def test_class_order_that_is_not_a_permutation():
    with pytest.raises(ConfigError, match="permutation"):
        streams.class_incremental(_tiny(), n_tasks=2, class_order=[0, 0, 1, 2])


def test_empty_task():
    d = _tiny()
    d.x_test, d.y_test = d.x_test[d.y_test < 2], d.y_test[d.y_test < 2]
    with pytest.raises(ConfigError, match="task 1 .* has no test samples"):
        streams.class_incremental(d, n_tasks=2)


def test_unknown_dataset_name():
    with pytest.raises(ConfigError, match="unknown dataset 'mnistt'"):
        streams.class_incremental("mnistt", n_tasks=2)


def test_labels_out_of_range():
    with pytest.raises(ConfigError, match="labels must lie in 0..3"):
        from_arrays(torch.rand(4, 2), torch.tensor([0, 1, 2, 7]), torch.rand(2, 2), torch.tensor([0, 1]),
                    n_classes=4)


def test_negative_labels():
    with pytest.raises(ConfigError, match="labels must lie"):
        from_arrays(torch.rand(2, 2), torch.tensor([0, -1]), torch.rand(2, 2), torch.tensor([0, 1]))


def test_bad_presentation_values():
    with pytest.raises(ConfigError, match="blurry"):
        streams.class_incremental(_tiny(), n_tasks=2, blurry=1.5)
    with pytest.raises(ConfigError, match="boundaries"):
        streams.class_incremental(_tiny(), n_tasks=2, boundaries="soft")
