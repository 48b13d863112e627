"""NaN handling for every built-in strategy: a batch whose loss is NaN is refused before it
changes any weight; under on_nan=skip the runner counts it and the run goes on, under
on_nan=stop it stops with a message.

The NaN comes from the model, not the data (a strategy may rightly refuse NaN inputs, as LTM
does): the backbone's first layer turns any input holding ``POISON`` into NaN outputs.
"""

from __future__ import annotations

import dataclasses
from importlib import resources

import pytest
import torch
from omegaconf import OmegaConf
from torch import nn

from continual import streams
from continual.config import instantiate_checked
from continual.models import build_model
from continual.runner import Runner, RunStopped
from continual.types import NonFiniteLoss, TaskInfo

pytestmark = pytest.mark.filterwarnings("ignore::DeprecationWarning", "ignore::UserWarning")

POISON = 1234.5  # no stream produces this input value
POISONED_STEP = 23  # inside the third task of the digits stream
# shipped configs, with cheaper settings where the defaults would take minutes on the CPU
STRATEGIES = {
    "naive": {},
    "er": {},
    "joint": {},
    "onpro": {"rotations": 4, "proj_dim": 16},
    "tame": {"selector_epochs": 2, "prune_epochs": 2},
    "ltm_replay": {},
    "avl_naive": {},
}


def _nan_on_poison(module: nn.Module, inputs: tuple[torch.Tensor, ...], output: torch.Tensor):
    if bool((inputs[0] == POISON).any()):
        return output * float("nan")
    return None


def _digits() -> streams.Stream:
    return streams.class_incremental("digits", n_tasks=5, batch_size=10, seed=0)


def _strategy(name: str, stream):
    torch.manual_seed(0)
    model = build_model("mlp", stream.input_shape, stream.n_classes, hidden=32)
    first = next(m for m in model.modules() if isinstance(m, nn.Linear))
    first.register_forward_hook(_nan_on_poison)  # kept by the copies TAME makes of the model
    path = resources.files("continual.conf") / "strategy" / f"{name}.yaml"
    options = {**OmegaConf.to_container(OmegaConf.load(str(path))), **STRATEGIES[name]}
    if name in ("joint", "er", "onpro", "tame", "ltm_replay"):
        options.setdefault("seed", 0)
    return instantiate_checked(options, "strategy", model=model)


def _poisoned(batch):
    return dataclasses.replace(batch, x=torch.full_like(batch.x, POISON))


def _weights(obj, prefix: str = "strategy", seen: set[int] | None = None, depth: int = 0
             ) -> dict[str, torch.Tensor]:
    """Copies of every module's state and optimiser state reachable from ``obj``'s attributes."""
    seen = set() if seen is None else seen
    if id(obj) in seen or depth > 4:
        return {}
    seen.add(id(obj))
    if isinstance(obj, nn.Module):
        return {f"{prefix}.{k}": v.detach().clone() for k, v in obj.state_dict().items()}
    if isinstance(obj, torch.optim.Optimizer):
        return {f"{prefix}.{i}.{k}": v.detach().clone() for i, st in obj.state.items()
                for k, v in st.items() if torch.is_tensor(v)}
    if isinstance(obj, dict):
        children = obj.items()
    elif isinstance(obj, (list, tuple)):
        children = enumerate(obj)
    elif hasattr(obj, "__dict__") and type(obj).__module__.startswith(("continual", "avalanche")):
        children = vars(obj).items()
    else:
        return {}
    out: dict[str, torch.Tensor] = {}
    for key, child in children:
        out.update(_weights(child, f"{prefix}.{key}", seen, depth + 1))
    return out


@pytest.mark.parametrize("name", list(STRATEGIES))
def test_a_nan_batch_is_refused_before_any_weight_changes(name):
    stream = _digits()
    strategy = _strategy(name, stream)
    seg = stream.segments[0]
    strategy.on_task_start(TaskInfo(seg.task, stream.tasks[seg.task].classes, stream.n_classes, 0))
    batches = list(stream.batches(seg))
    for b in batches[:3]:
        strategy.observe(b)
    before = _weights(strategy)
    assert before, "found no weights to compare"
    with pytest.raises(NonFiniteLoss):
        strategy.observe(_poisoned(batches[3]))
    after = _weights(strategy)
    assert after.keys() == before.keys()
    changed = [k for k in before if not torch.equal(before[k], after[k])]
    assert changed == []
    strategy.observe(batches[4])  # and it trains on
    assert any(not torch.equal(before[k], v) for k, v in _weights(strategy).items() if k in before)


def _poison_step(stream, step: int):
    batches = stream.batches

    def poisoned(*args, **kwargs):
        for b in batches(*args, **kwargs):
            yield _poisoned(b) if b.step == step else b

    stream.batches = poisoned
    return stream


@pytest.mark.parametrize("name", list(STRATEGIES))
def test_on_nan_skip_counts_the_nan_batch_and_runs_to_the_end(name, tmp_path):
    stream = _poison_step(_digits(), POISONED_STEP)
    summary = Runner(stream, _strategy(name, stream), out_dir=str(tmp_path), on_nan="skip").run()
    assert summary["skipped_nonfinite_batches"] == 1
    assert summary["steps"] == stream.n_steps()
    assert all(0.0 <= a <= 1.0 for a in summary["final_task_acc"])


@pytest.mark.parametrize("name", ["onpro", "tame", "avl_naive"])
def test_on_nan_stop_stops_with_a_message(name, tmp_path):
    stream = _poison_step(_digits(), POISONED_STEP)
    runner = Runner(stream, _strategy(name, stream), out_dir=str(tmp_path), on_nan="stop")
    with pytest.raises(RunStopped, match="non-finite loss.*on_nan=skip"):
        runner.run()
