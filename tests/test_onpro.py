"""OnPro (strategies/onpro.py): the maths of each part on hand-checked inputs, then the strategy."""

from __future__ import annotations

import math

import pytest
import torch
from torch.nn import functional as F

from continual.models.backbones import build_model
from continual.strategies.onpro import (
    OnPro,
    apf_mixup,
    apf_pair_counts,
    apf_pair_probabilities,
    augmented_view,
    class_prototypes,
    instance_loss,
    instance_similarity,
    mixup_cross_entropy,
    ope_loss,
    random_mixup,
    rotation_views,
)
from continual.testing import check_strategy
from continual.types import Batch, ConfigError, TaskInfo


@pytest.fixture(autouse=True)
def _seed_and_one_thread():
    torch.manual_seed(0)
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


# --------------------------------------------------------------------------- OPE


def test_ope_loss_on_two_orthogonal_classes_matches_closed_form():
    # both views put class 0 at e1 and class 1 at e2: each prototype's positive has
    # similarity 1, its two negatives 0 -> loss = log(1 + 2 exp(-1/T)).
    z = torch.tensor([[1.0, 0.0], [1.0, 0.0], [0.0, 1.0]])
    y = torch.tensor([0, 0, 1])
    loss, classes, _, _ = ope_loss(z, z.clone(), y, temperature=0.5)
    assert classes.tolist() == [0, 1]
    assert loss.item() == pytest.approx(math.log(1 + 2 * math.exp(-2.0)), rel=1e-5)


def test_ope_loss_with_views_that_disagree_matches_hand_computation():
    # view 1: class 0 at e1, class 1 at e2; view 2 swaps them. For every prototype the
    # positive (same class, other view) is orthogonal and one negative is identical.
    t = 0.5
    z1 = torch.tensor([[1.0, 0.0], [0.0, 1.0]])
    z2 = torch.tensor([[0.0, 1.0], [1.0, 0.0]])
    loss, *_ = ope_loss(z1, z2, torch.tensor([0, 1]), temperature=t)
    expected = -(0.0 - math.log(math.exp(0.0) + math.exp(0.0) + math.exp(1 / t)))
    assert loss.item() == pytest.approx(expected, rel=1e-5)


def test_ope_prototypes_are_class_means_renormalised_for_the_loss():
    z = torch.tensor([[1.0, 0.0], [0.0, 1.0], [0.0, -1.0]])
    y = torch.tensor([0, 0, 1])
    _, _, m1, _ = ope_loss(z, z, y)
    assert torch.allclose(m1, torch.tensor([[0.5, 0.5], [0.0, -1.0]]))
    # the loss sees the renormalised prototypes: scaling a class's samples changes nothing
    loss_a, *_ = ope_loss(z, z, y)
    loss_b, *_ = ope_loss(z * torch.tensor([[3.0], [3.0], [1.0]]), z, y)
    assert loss_a.item() == pytest.approx(loss_b.item(), rel=1e-5)


def test_ope_loss_is_zero_for_a_single_class():
    z = F.normalize(torch.randn(4, 8), dim=1)
    loss, *_ = ope_loss(z, z.flip(0), torch.zeros(4, dtype=torch.long))
    assert loss.item() == pytest.approx(0.0, abs=1e-6)


def test_class_prototypes_average_rows_per_class():
    z = torch.tensor([[1.0, 2.0], [3.0, 4.0], [5.0, 6.0]])
    out = class_prototypes(z, torch.tensor([2, 0, 2]), torch.tensor([0, 2]))
    assert torch.allclose(out, torch.tensor([[3.0, 4.0], [3.0, 4.0]]))


# --------------------------------------------------------------------------- APF


def test_apf_pair_probabilities_are_softmax_of_inverse_distances_in_combination_order():
    protos = torch.tensor([[0.0], [1.0], [3.0]])  # d01 = 1, d02 = 3, d12 = 2
    pairs, probs = apf_pair_probabilities(protos)
    assert pairs.tolist() == [[0, 1], [0, 2], [1, 2]]
    w = [math.exp(1.0), math.exp(1 / 3), math.exp(1 / 2)]
    assert probs.tolist() == pytest.approx([v / sum(w) for v in w], rel=1e-5)


def test_apf_pair_counts_round_and_spread_the_remainder():
    assert apf_pair_counts(torch.tensor([0.5, 0.25, 0.25]), 8).tolist() == [4, 2, 2]
    probs = torch.tensor([0.34, 0.33, 0.33])  # rounds to 3 + 3 + 3 for n = 10
    counts = apf_pair_counts(probs, 10)
    assert int(counts.sum()) == 10
    assert (counts - probs * 10).abs().max() <= 1


def _class_valued_buffer(classes, per_class=5):
    y = torch.tensor(classes).repeat_interleave(per_class)
    x = y.float().view(-1, 1, 1, 1).expand(-1, 1, 2, 2).clone()  # every pixel = class id
    return x, y


def test_apf_mixup_spends_the_pair_share_as_eq7_says():
    bx, by = _class_valued_buffer([0, 1, 2], per_class=20)
    means = torch.zeros(4, 1)
    means[:3] = torch.tensor([[1.0], [2.0], [4.0]])  # class 3 has no prototype (zero row)
    _, probs = apf_pair_probabilities(means[:3])
    n = 40
    x, y = apf_mixup(bx[:n], by[:n], bx, by, means, base_rate=0.0, mixup_p=1.0)
    pairs = [tuple(p) for p in y[:, :2].long().tolist()]
    counts = [pairs.count(p) for p in [(0, 1), (0, 2), (1, 2)]]
    # by hand: class means 1, 2, 4 give pair probabilities (0.4717, 0.2422, 0.2861) for
    # (0,1), (0,2), (1,2); times 40 pairs, rounded: 19, 10, 11 (a value, not the function again)
    assert counts == [19, 10, 11]
    # each mixed image is (1 - lam) x_a + lam x_b of an a-item and a b-item
    lam = y[:, 2]
    assert torch.allclose(x[:, 0, 0, 0], (1 - lam) * y[:, 0] + lam * y[:, 1], atol=1e-6)


def test_apf_mixup_keeps_the_base_share_from_the_sample():
    bx, by = _class_valued_buffer([0, 1])
    mem_x = torch.arange(8.0).view(8, 1, 1, 1).expand(-1, 1, 2, 2)  # distinct items
    means = torch.tensor([[1.0], [2.0]])
    x, y = apf_mixup(mem_x, by[:8], bx, by, means, base_rate=0.75, mixup_p=0.0)
    assert x.shape[0] == 8 and y.shape == (8, 3)
    assert torch.all(y[:, 2] == 0)  # mixup_p = 0: nothing is mixed
    base = x[:6, 0, 0, 0].long().tolist()
    assert len(set(base)) == 6  # int(8 x 0.75) distinct sample items
    assert torch.equal(y[:6, 0].long(), by[:8][base])
    assert set(y[6:, 0].long().tolist()) <= {0}  # the pair share: pair (0, 1), unmixed a-items


def test_random_mixup_with_p_zero_returns_the_batch_unmixed():
    x = torch.rand(5, 1, 3, 3)
    y = torch.arange(5)
    mx, my = random_mixup(x, y, p=0.0, lam_range=(0.0, 0.6))
    assert torch.equal(mx, x)
    assert torch.equal(my[:, 2], torch.zeros(5)) and torch.equal(my[:, 0].long(), y)


def test_random_mixup_lambdas_stay_in_range_and_mix_with_the_partner_label():
    x = torch.arange(50.0).view(50, 1, 1, 1)
    y = torch.arange(50)
    mx, my = random_mixup(x, y, p=1.0, lam_range=(0.0, 0.6))
    assert float(my[:, 2].min()) >= 0.0 and float(my[:, 2].max()) <= 0.6
    expected = (1 - my[:, 2]) * my[:, 0] + my[:, 2] * my[:, 1]
    assert torch.allclose(mx.view(-1), expected, atol=1e-5)


def test_mixup_cross_entropy_interpolates_the_two_label_losses():
    logits = torch.randn(3, 4)
    ya, yb = torch.tensor([0, 1, 2]), torch.tensor([3, 3, 1])
    lam = torch.tensor([0.0, 1.0, 0.25])
    got = mixup_cross_entropy(logits, torch.stack([ya.float(), yb.float(), lam], 1))
    la = F.cross_entropy(logits, ya, reduction="none")
    lb = F.cross_entropy(logits, yb, reduction="none")
    assert got.item() == pytest.approx(((1 - lam) * la + lam * lb).mean().item(), rel=1e-6)


# --------------------------------------------------------------------------- views


def test_rotation_views_label_copy_i_as_y_plus_c_times_i():
    x = torch.rand(3, 1, 4, 4)
    y = torch.tensor([0, 1, 2])
    copies, labels = rotation_views(x, y, n_classes=10, rotations=16)
    assert copies.shape == (48, 1, 4, 4)
    assert labels.tolist() == [int(v) + 10 * i for i in range(16) for v in y]


def test_rotation_views_order_global_rotations_0_180_90_270_of_four_inner_variants():
    x = torch.arange(16.0).view(1, 1, 4, 4)
    copies, _ = rotation_views(x, torch.tensor([0]), n_classes=2, rotations=16)
    left = x.clone()
    left[..., :2] = x[..., :2].flip(-2, -1)  # left half turned by 180 degrees
    assert torch.equal(copies[0], x[0])
    assert torch.equal(copies[1], left[0])
    assert torch.equal(copies[4], torch.rot90(x, 2, (2, 3))[0])
    assert torch.equal(copies[8], torch.rot90(x, 1, (2, 3))[0])
    assert torch.equal(copies[13], torch.rot90(left, 3, (2, 3))[0])
    assert len({tuple(c.flatten().tolist()) for c in copies}) == 16  # all distinct


def test_rotation_views_with_four_copies_are_the_global_rotations():
    x = torch.rand(2, 3, 6, 6)
    copies, labels = rotation_views(x, torch.tensor([4, 5]), n_classes=6, rotations=4)
    assert torch.equal(copies[2:4], torch.rot90(x, 2, (2, 3)))
    assert labels.tolist() == [4, 5, 10, 11, 16, 17, 22, 23]


def test_rotation_views_reject_other_counts():
    with pytest.raises(ConfigError, match="rotations"):
        rotation_views(torch.rand(1, 1, 4, 4), torch.tensor([0]), 2, rotations=8)


def test_augmented_view_without_crop_is_the_image_or_its_mirror():
    x = torch.rand(32, 1, 8, 8)
    out = augmented_view(x, crop_scale=(1.0, 1.0), gray_p=0.0)
    plain = (out - x).abs().amax((1, 2, 3)) < 1e-5
    mirror = (out - x.flip(-1)).abs().amax((1, 2, 3)) < 1e-5
    assert bool((plain | mirror).all()) and plain.any() and mirror.any()


def test_augmented_view_keeps_shape_and_range_and_draws_per_sample():
    x = torch.rand(16, 3, 32, 32)
    out = augmented_view(x)
    assert out.shape == x.shape
    assert float(out.min()) >= 0.0 and float(out.max()) <= 1.0
    views = augmented_view(x[:1].expand(16, -1, -1, -1).contiguous())  # one image, 16 draws
    assert len({round(float(v), 4) for v in views.sum((1, 2, 3))}) > 1


# --------------------------------------------------------------------------- L_INS


def _sim():
    return torch.tensor([[1.0, 0.5, 0.2, 0.0],
                         [0.5, 1.0, 0.0, 0.2],
                         [0.2, 0.0, 1.0, 0.5],
                         [0.0, 0.2, 0.5, 1.0]])


def test_instance_loss_for_the_incoming_batch_matches_hand_computation():
    # B = 2 samples of different classes; each row's only other positive is its other
    # view (similarity 0.2); self is excluded from the denominator.
    nll_pair = -math.log(math.exp(0.2) / (math.exp(0.5) + math.exp(0.2) + math.exp(0.0)))
    got = instance_loss(_sim(), torch.tensor([0, 1]), temperature=1.0, pair_views=True)
    # views term nll_pair + 2 x (weight 1/2 x nll_pair)
    assert got.item() == pytest.approx(2 * nll_pair, rel=1e-5)


def test_instance_loss_for_the_buffer_batch_keeps_self_in_the_softmax():
    d = sum(math.exp(v) for v in (1.0, 0.5, 0.2, 0.0))
    expected = 0.5 * -math.log(math.exp(1.0) / d) + 0.5 * -math.log(math.exp(0.2) / d)
    got = instance_loss(_sim(), torch.tensor([0, 1]), temperature=1.0, pair_views=False)
    assert got.item() == pytest.approx(expected, rel=1e-5)


def test_instance_loss_falls_when_same_label_pairs_get_more_similar():
    labels = torch.tensor([0, 1])
    closer = _sim().clone()
    closer[0, 2] = closer[2, 0] = closer[1, 3] = closer[3, 1] = 0.9
    assert instance_loss(closer, labels, 0.07).item() < instance_loss(_sim(), labels, 0.07).item()


def test_instance_similarity_adds_feature_slice_and_projection_terms():
    z = torch.tensor([[1.0, 0.0], [0.0, 1.0]])
    f = torch.tensor([[9.0, 1.0, 0.0], [9.0, 0.0, 1.0]])
    sim = instance_similarity(z, f, sim_lambda=0.5, start=1)
    assert torch.allclose(sim, 0.5 * (z @ f[:, 1:3].t() + z @ z.t()))


# --------------------------------------------------------------------------- the strategy


def _run(strategy, shape, tasks=2, steps=3, hooks=True, classes_per_task=2):
    out = {}
    for t in range(tasks):
        cls = list(range(classes_per_task * t, classes_per_task * (t + 1)))
        if hooks:
            strategy.on_task_start(TaskInfo(t, cls, 10, 0))
        for _ in range(steps):
            y = torch.tensor(cls).repeat(5)[torch.randperm(2 * 5)]
            out = strategy.observe(Batch(torch.rand(10, *shape), y))
    return out


@pytest.mark.parametrize("name,shape", [("cnn", (1, 28, 28)), ("mlp", (1, 28, 28)),
                                        ("cnn", (3, 32, 32)), ("resnet18_reduced", (3, 32, 32))])
def test_onpro_trains_every_backbone_on_both_image_shapes(name, shape):
    model = build_model(name, shape, 10)
    s = OnPro(model, buffer_size=20, rotations=1, buffer_batch_size=8)
    out = _run(s, shape, steps=2)
    assert set(out) == {"loss", "ce", "ins", "ope_new", "ope_seen"}
    assert all(torch.isfinite(v) for v in out.values())
    assert s.predict(torch.rand(3, *shape)).shape == (3, 10)
    assert len(s.buffer) == 20 and s.task_index == 1


def test_onpro_infers_tasks_from_new_classes_on_task_free_streams():
    s = OnPro(build_model("mlp", (1, 4, 4), 10), buffer_size=20, rotations=1, proj_dim=64)
    _run(s, (1, 4, 4), tasks=3, steps=2, hooks=False)
    assert s.task_index == 2 and s.batch_in_task == 2


def test_onpro_follows_visible_boundaries_not_class_novelty():
    s = OnPro(build_model("mlp", (1, 4, 4), 10), buffer_size=20, rotations=1, proj_dim=64)
    s.on_task_start(TaskInfo(0, [0, 1, 2, 3], 10, 0))
    for cls in ([0, 1], [2, 3]):  # new classes inside one visible task
        s.observe(Batch(torch.rand(10, 1, 4, 4), torch.tensor(cls).repeat(5)))
    assert s.task_index == 0 and s.batch_in_task == 2


def test_onpro_ablation_without_ope_has_no_prototype_loss_but_keeps_prototypes():
    s = OnPro(build_model("cnn", (1, 8, 8), 10), buffer_size=30, rotations=1, ope=False)
    out = _run(s, (1, 8, 8))
    assert out["ope_new"].item() == 0.0 and out["ope_seen"].item() == 0.0
    assert int((s.class_means.abs().sum(1) > 0).sum()) >= 2  # APF still has its prototypes


def test_onpro_ablation_without_apf_mixes_the_whole_sample_at_random():
    s = OnPro(build_model("mlp", (1, 4, 4), 10), proj_dim=64, apf=False, mixup_base_rate=0.75)
    assert s.mixup_base_rate == 1.0


def test_onpro_rejects_a_projection_wider_than_the_features():
    with pytest.raises(ConfigError, match="proj_dim"):
        OnPro(build_model("mlp", (1, 4, 4), 10, hidden=32), proj_dim=128)


def test_onpro_state_dict_round_trip_resumes_identically():
    shape = (1, 8, 8)
    a = OnPro(build_model("cnn", shape, 10), buffer_size=20, rotations=4, buffer_batch_size=8)
    _run(a, shape, tasks=2, steps=2)
    b = OnPro(build_model("cnn", shape, 10), buffer_size=20, rotations=4, buffer_batch_size=8)
    assert not torch.allclose(a.predict(torch.ones(1, *shape)), b.predict(torch.ones(1, *shape)))
    b.load_state_dict(a.state_dict())
    x = torch.rand(10, *shape)
    y = torch.tensor([2, 3]).repeat(5)
    torch.manual_seed(5)
    out_a = a.observe(Batch(x, y))
    torch.manual_seed(5)
    out_b = b.observe(Batch(x, y))
    assert out_a["loss"].item() == pytest.approx(out_b["loss"].item(), rel=1e-5)
    assert torch.allclose(a.predict(x), b.predict(x), atol=1e-5)


def test_onpro_learns_an_easy_two_class_stream():
    shape = (1, 8, 8)
    s = OnPro(build_model("cnn", shape, 2), buffer_size=50, rotations=1, lr=2e-3)
    s.on_task_start(TaskInfo(0, [0, 1], 2, 0))

    def make(n):
        y = torch.randint(0, 2, (n,))
        x = torch.rand(n, *shape) * 0.3
        x[y == 1, :, :4] += 0.7  # class 1: bright top half
        return x, y

    for _ in range(40):
        s.observe(Batch(*make(10)))
    x, y = make(200)
    assert (s.predict(x).argmax(1) == y).float().mean().item() > 0.9


def test_onpro_passes_the_conformance_kit():
    results = check_strategy(OnPro, {"rotations": 4, "buffer_size": 20, "proj_dim": 32})
    assert set(results.values()) == {"passed"}


# --------------------------------------------------------------------------- step rules
# (the official train.py: train_task0 and train_other_tasks)


def _onpro(**options):
    return OnPro(build_model("mlp", (1, 4, 4), 12), rotations=1, proj_dim=16,
                 **{"buffer_size": 200, **options})


def _step(s, classes, n=10):
    y = torch.tensor(classes).repeat(n // len(classes) + 1)[:n]
    return s.observe(Batch(torch.rand(n, 1, 4, 4), y))


def _train_task(s, task, classes, steps):
    s.on_task_start(TaskInfo(task, classes, 12, 0))
    return [_step(s, classes) for _ in range(steps)]


def _watch(monkeypatch, s):
    """What a step asks for: buffer sample sizes, APF calls, and the label mix CE trains on."""
    import continual.strategies.onpro as onpro

    seen = {"sample": [], "apf": 0, "mix": []}
    sample, apf, ce = s._sample_buffer, onpro.apf_mixup, onpro.mixup_cross_entropy

    def counted_apf(*args, **kwargs):
        seen["apf"] += 1
        return apf(*args, **kwargs)

    monkeypatch.setattr(s, "_sample_buffer", lambda n: seen["sample"].append(n) or sample(n))
    monkeypatch.setattr(onpro, "apf_mixup", counted_apf)
    monkeypatch.setattr(onpro, "mixup_cross_entropy", lambda logits, mix: seen["mix"].append(mix) or ce(logits, mix))
    return seen


def test_the_first_step_of_the_first_task_takes_no_l_seen_and_every_later_step_does(monkeypatch):
    s = _onpro()
    s.on_task_start(TaskInfo(0, [0, 1], 12, 0))
    y = torch.tensor([0, 1]).repeat(10)
    s.buffer.add(torch.rand(20, 1, 4, 4), y, y)  # memories in the buffer do not change the rule
    seen = _watch(monkeypatch, s)
    first = _step(s, [0, 1])
    assert first["ope_seen"].item() == 0.0 and seen["sample"] == []
    second = _step(s, [0, 1])
    assert second["ope_seen"].item() > 0.0
    assert seen["sample"] == [64]  # the first task's L_seen sample: buffer_batch_size items


def test_a_later_tasks_first_step_skips_apf_and_its_second_step_uses_it(monkeypatch):
    s = _onpro(mixup_p=1.0)  # every APF item mixed: a mixed batch cannot pass for an unmixed one
    _train_task(s, 0, [0, 1], steps=3)
    seen = _watch(monkeypatch, s)
    s.on_task_start(TaskInfo(1, [2, 3], 12, 0))
    first = _step(s, [2, 3])
    assert seen["apf"] == 0
    assert torch.all(seen["mix"][0][:, 2] == 0)  # CE on the plain buffer sample
    assert first["ope_seen"].item() > 0.0  # L_seen on every step of a later task, its first too
    _step(s, [2, 3])
    assert seen["apf"] == 1
    assert seen["mix"][1][:, 2].max() > 0


@pytest.mark.parametrize(("first_task", "later_batches", "sizes"), [
    # 2 classes, then a batch of one new class (3 seen) and one of two (4 seen): 7 x seen
    ([0, 1], [[2], [2, 3]], [21, 28]),
    # 10 classes, then 2 more: 7 x 12 = 84, capped at buffer_batch_size 64
    (list(range(10)), [[10, 11]], [64]),
])
def test_a_later_tasks_buffer_batch_is_7_per_class_seen_at_most_64(monkeypatch, first_task, later_batches, sizes):
    s = _onpro()
    _train_task(s, 0, first_task, steps=10)
    seen = _watch(monkeypatch, s)
    s.on_task_start(TaskInfo(1, sorted({c for b in later_batches for c in b}), 12, 0))
    for classes in later_batches:
        _step(s, classes)
    assert seen["sample"] == sizes


# --------------------------------------------------------------------------- inputs it refuses


@pytest.mark.parametrize("rotations", [1, 4, 16])
def test_onpro_on_a_vector_stream_is_refused_at_the_first_batch_saying_what_it_needs(tmp_path, rotations):
    from continual import streams
    from continual.runner import Runner

    stream = streams.river_drift("sea", samples_per_concept=50, test_per_concept=10, batch_size=10)
    model = build_model("mlp", stream.input_shape, stream.n_classes, hidden=32)
    s = OnPro(model, rotations=rotations, proj_dim=16)
    with pytest.raises(ConfigError, match=r"image batches \(B, C, H, W\).*shape \(3,\).*"
                                          r"stream=split_mnist.*naive, er"):
        Runner(stream, s, out_dir=str(tmp_path)).run()
    assert len(s.buffer) == 0 and s.task_index == -1  # refused before anything was learnt


def test_onpro_rotation_views_need_square_images_but_rotations_1_does_not():
    shape = (1, 8, 6)
    with pytest.raises(ConfigError, match=r"square images.*rotations=1"):
        _run(OnPro(build_model("mlp", shape, 10), rotations=4, proj_dim=16), shape, steps=1)
    out = _run(OnPro(build_model("mlp", shape, 10), rotations=1, proj_dim=16, buffer_size=20),
               shape, steps=2)
    assert torch.isfinite(out["loss"])
