"""continual.testing.check_strategy: it passes a conforming strategy and names each broken rule."""

import copy

import pytest
import torch
from torch.nn import functional as F

from continual.models import build_model
from continual.strategies.naive import Naive
from continual.testing import ContractViolation, TaskLeakError, TaskTripwire, check_strategy


def _problems(cls, **kwargs) -> str:
    with pytest.raises(ContractViolation) as info:
        check_strategy(cls, **kwargs)
    return str(info.value)


def test_a_conforming_strategy_passes_every_check():
    results = check_strategy(Naive, {"lr": 0.05})
    assert results == {name: "passed" for name in
                       ("observe", "predict", "no_grad", "state_dict", "determinism", "task_free",
                        "inputs_unchanged")}


def test_supervised_strategies_with_optimiser_state_pass_the_state_dict_check():
    for options in ({"lr": 0.05, "momentum": 0.9}, {"lr": 0.01, "optimizer": "adam"}):
        assert check_strategy(Naive, options)["state_dict"] == "passed"


def test_a_supervised_state_dict_is_a_copy_unchanged_by_training(digits_stream):
    model = build_model("mlp", digits_stream.input_shape, digits_stream.n_classes, hidden=16)
    a = Naive(model, lr=0.05, momentum=0.9)
    batches = list(digits_stream.batches(digits_stream.segments[0]))[:6]
    for b in batches[:3]:
        a.observe(b)
    state = a.state_dict()
    saved = copy.deepcopy(state)
    b = Naive(build_model("mlp", digits_stream.input_shape, digits_stream.n_classes, hidden=16),
              lr=0.05, momentum=0.9)
    b.load_state_dict(state)
    for s in (a, b):
        for batch in batches[3:]:
            s.observe(batch)
    for key in ("model", "optimizer"):
        torch.testing.assert_close(state[key], saved[key], rtol=0, atol=0)
    torch.testing.assert_close(a.model.state_dict(), b.model.state_dict(), rtol=0, atol=0)


class _RawTorchState(Naive):
    """torch's own state dicts, uncopied: views of the live weights and optimiser moments."""

    def state_dict(self):
        return {"model": self.model.state_dict(), "optimizer": self.optimizer.state_dict()}

    def load_state_dict(self, state):
        self.model.load_state_dict(state["model"])
        self.optimizer.load_state_dict(state["optimizer"])


def test_a_state_dict_sharing_tensors_with_the_live_model_fails():
    message = _problems(_RawTorchState, options={"lr": 0.05, "momentum": 0.9})
    assert "[state_dict] state['model']" in message and "changed while training went on" in message
    assert "trains differently from the original" in message  # the shared momentum


def test_a_load_that_keeps_references_into_the_state_fails():
    class LoadsWithoutCopy(_RawTorchState):
        def state_dict(self):
            return copy.deepcopy(super().state_dict())

    message = _problems(LoadsWithoutCopy, options={"lr": 0.05, "momentum": 0.9})
    assert "[state_dict] state['optimizer']" in message and "changed while training" in message
    assert "state['model']" not in message


def test_skipped_checks_are_reported_as_skipped():
    results = check_strategy(Naive, skip=("state_dict",))
    assert results["state_dict"] == "skipped" and results["observe"] == "passed"


def test_an_unknown_check_name_is_refused():
    with pytest.raises(ValueError, match="unknown checks"):
        check_strategy(Naive, skip=("speed",))


def test_reading_hidden_task_ids_is_caught():
    class Peeks(Naive):
        def observe(self, batch):
            self.last_task = int(batch.true_task[0])
            return super().observe(batch)

    message = _problems(Peeks)
    assert "[task_free]" in message and "true_task" in message
    assert "[observe]" not in message  # visible streams may carry true_task


def test_predict_that_keeps_the_graph_fails_no_grad():
    class Grad(Naive):
        def predict(self, x, task=None):
            return self.model(x)

    assert "[no_grad] predict returned a tensor that requires grad" in _problems(Grad)


def test_predict_with_the_wrong_shape_fails_predict():
    class Narrow(Naive):
        def predict(self, x, task=None):
            return super().predict(x, task)[:, :2]

    message = _problems(Narrow)
    assert "[predict]" in message and "expected (B, n_classes)" in message


def test_observe_returning_per_sample_losses_fails_observe():
    class PerSample(Naive):
        def observe(self, batch):
            logits = self.model(batch.x)
            loss = F.cross_entropy(logits, batch.y, reduction="none")
            self.step(loss.mean())
            return {"loss": loss.detach()}

    assert "[observe] observe()['loss'] is a tensor of shape" in _problems(PerSample)


def test_state_dict_without_the_optimiser_fails_the_round_trip():
    class ForgetsMomentum(Naive):
        def state_dict(self):
            return {"model": self.model.state_dict()}

        def load_state_dict(self, state):
            self.model.load_state_dict(state["model"])

    message = _problems(ForgetsMomentum, options={"momentum": 0.9})
    assert "[state_dict]" in message and "misses something training depends on" in message


def test_an_empty_state_dict_fails():
    class NoState(Naive):
        def state_dict(self):
            return {}

    assert "[state_dict] state_dict() returned {}" in _problems(NoState)


def test_unseeded_randomness_fails_determinism():
    class Noisy(Naive):
        def __init__(self, model, **kw):
            super().__init__(model, **kw)
            self.rng = torch.Generator().manual_seed(torch.seed())

        def observe(self, batch):
            noise = 0.1 * torch.randn(batch.x.shape, generator=self.rng)
            return self.fit_batch(batch.x + noise, batch.y)

    assert "[determinism]" in _problems(Noisy, skip=("state_dict",))


def test_batchnorm_statistics_updated_in_predict_fail_no_grad():
    def with_batchnorm(input_shape, n_classes):
        return torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(64, 16),
                                   torch.nn.BatchNorm1d(16), torch.nn.Linear(16, n_classes))

    class TrainModePredict(Naive):
        @torch.inference_mode()
        def predict(self, x, task=None):
            return self.model(x)  # no model.eval(): BatchNorm updates its running statistics

    message = _problems(TrainModePredict, model=with_batchnorm)
    assert "[no_grad] predict changed the model state" in message


def test_the_tripwire_raises_on_use_but_not_on_repr():
    wire = TaskTripwire()
    assert repr(wire) == "<hidden true_task>"
    for use in (lambda: wire[0], lambda: int(wire), lambda: wire == 1, lambda: wire.to("cpu"),
                lambda: torch.cat([torch.zeros(1), wire]), lambda: bool(wire)):
        with pytest.raises(TaskLeakError):
            use()


@pytest.mark.parametrize("field", ["x", "y", "index"])
def test_observe_that_zeroes_a_batch_field_in_place_fails_inputs_unchanged(field):
    class Zeroes(Naive):
        def observe(self, batch):
            out = super().observe(batch)
            getattr(batch, field).zero_()
            return out

    message = _problems(Zeroes)
    assert f"[inputs_unchanged] observe changed batch.{field} in place" in message
    assert "work on a copy" in message


def test_observe_that_reassigns_a_batch_field_fails_inputs_unchanged():
    class Normalises(Naive):
        def observe(self, batch):
            batch.x = batch.x / batch.x.abs().max()
            return super().observe(batch)

    assert "[inputs_unchanged] observe changed batch.x" in _problems(Normalises)


def test_predict_that_changes_its_input_in_place_fails_inputs_unchanged():
    class Clamps(Naive):
        @torch.inference_mode()
        def predict(self, x, task=None):
            return super().predict(x.clamp_(0, 0.5), task)

    assert "[inputs_unchanged] predict changed its input x in place" in _problems(Clamps)


def test_a_plain_class_without_the_hooks_is_told_to_subclass_strategy():
    class Plain:
        def __init__(self, model, lr=0.05):
            self.inner = Naive(model, lr=lr)

        def observe(self, batch):
            return self.inner.observe(batch)

        def predict(self, x, task=None):
            return self.inner.predict(x, task)

    message = _problems(Plain)
    assert "has no on_task_start, on_task_end, state_dict, load_state_dict" in message
    assert "Subclass continual.types.Strategy" in message
    assert "AttributeError" not in message


def test_the_same_class_subclassing_strategy_gets_past_the_hook_check():
    from continual.types import Strategy

    class Subclassed(Strategy):
        def __init__(self, model, lr=0.05):
            self.inner = Naive(model, lr=lr)

        def observe(self, batch):
            return self.inner.observe(batch)

        def predict(self, x, task=None):
            return self.inner.predict(x, task)

    message = _problems(Subclassed)  # only its missing state fails now
    assert "Subclass continual.types.Strategy" not in message
    assert "[state_dict] state_dict() returned {}" in message
