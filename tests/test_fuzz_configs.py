"""Property-based: a generated stream/strategy/model configuration whose values are all valid
runs to the end; one with a single invalid value is refused at start with our ConfigError,
whose message names that value (never a deep torch traceback, never a silent run)."""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import pytest
from hypothesis import HealthCheck, Phase, given, settings
from hypothesis import strategies as st

from continual.types import ConfigError

pytestmark = pytest.mark.slow  # dozens of generated runs

VALID_N_TASKS = (1, 2, 5, 10)  # split_digits: 10 classes
ER_ONLY = ("strategy.buffer_size", "strategy.replay_batch_size")


def _order(xs) -> str:
    return "[" + ",".join(map(str, xs)) + "]"


def _broken_order(args) -> str:
    """A permutation of 0..9 with one class dropped, repeated or replaced by an unknown id."""
    perm, how, i = args
    xs = list(perm)
    if how == "drop":
        del xs[i]
    elif how == "repeat":
        xs[i] = xs[(i + 1) % 10]
    else:
        xs[i] = 10 if i % 2 else -1
    return _order(xs)


@dataclass(frozen=True)
class Field:
    """An override: values that must run, values that must be refused, and the refusal's
    message (a regex) given the bad value and the whole configuration."""

    valid: st.SearchStrategy
    invalid: st.SearchStrategy
    message: Callable[[Any, dict[str, Any]], str]


FIELDS: dict[str, Field] = {
    "stream.n_tasks": Field(
        st.sampled_from(VALID_N_TASKS), st.integers(-1, 12).filter(lambda n: n not in VALID_N_TASKS),
        lambda v, c: rf"10 classes but n_tasks={v} does not divide them; use n_tasks in \[1, 2, 5, 10\]"),
    "stream.batch_size": Field(
        st.integers(1, 40), st.integers(-2, 0),
        lambda v, c: rf"batch_size, passes and repeats must be >= 1, got {v}, {c['stream.passes']}, 1"),
    "stream.passes": Field(
        st.integers(1, 2), st.integers(-1, 0),
        lambda v, c: rf"batch_size, passes and repeats must be >= 1, got {c['stream.batch_size']}, {v}, 1"),
    "stream.boundaries": Field(
        st.sampled_from(["visible", "hidden"]), st.just("fuzzy"),
        lambda v, c: "boundaries must be 'visible' or 'hidden', got 'fuzzy'"),
    "stream.blurry": Field(
        st.floats(0.0, 0.9), st.floats(-0.5, -0.01) | st.floats(1.0, 1.5),
        lambda v, c: rf"blurry is a share of samples in \[0, 1\), got {re.escape(str(v))}"),
    "stream.gradual_width": Field(
        st.integers(0, 300), st.integers(-10, -1),
        lambda v, c: rf"gradual_width is a number of samples >= 0, got {v}"),
    "stream.train_per_class": Field(
        st.integers(1, 12), st.integers(-1, 0),
        lambda v, c: rf"per-class subset must be at least 1, got {v}"),
    "model.hidden": Field(
        st.integers(1, 24), st.integers(-2, 0),
        lambda v, c: rf"model 'mlp': sizes must be positive integers, got \{{'hidden': {v}\}}"),
    "strategy.lr": Field(
        st.sampled_from([1e-3, 0.1]), st.sampled_from([-1.0, 0.0]),
        lambda v, c: rf"learning rate must be positive, got lr={v}"),
    "strategy.optimizer": Field(
        st.sampled_from(["sgd", "adam", "adamw"]), st.just("rmsprop"),
        lambda v, c: r"unknown optimizer 'rmsprop'; choose one of \['sgd', 'adam', 'adamw'"),
    "stream.class_order": Field(
        st.permutations(range(10)).map(_order),
        st.tuples(st.permutations(range(10)), st.sampled_from(["drop", "repeat", "unknown"]),
                  st.integers(0, 9)).map(_broken_order),
        lambda v, c: r"class_order must be a permutation of 0\.\.9, got .*; list every class exactly once"),
    "strategy.buffer_size": Field(
        st.integers(1, 50), st.integers(-3, 0),
        lambda v, c: rf"buffer capacity must be at least 1, got {v}"),
    "strategy.replay_batch_size": Field(
        st.integers(0, 20), st.integers(-3, -1),
        lambda v, c: rf"replay_batch_size must be >= 0, got {v}"),
}
OPTIONAL = ("stream.class_order", *ER_ONLY)


@st.composite
def configurations(draw, bad: str | None = None) -> tuple[str, dict[str, Any]]:
    """(strategy, overrides): every field valid except ``bad``, which gets an invalid value."""
    strategy = "er" if bad in ER_ONLY else draw(st.sampled_from(["naive", "er", "joint"]))
    values = {}
    for name, field in FIELDS.items():
        applies = strategy == "er" or name not in ER_ONLY
        if name == bad:
            values[name] = draw(field.invalid)
        elif applies and (name not in OPTIONAL or draw(st.booleans())):
            values[name] = draw(field.valid)
    return strategy, values


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    """run(strategy, overrides) -> (summary or None, ConfigError or None, the run folder)."""
    from hydra import compose, initialize_config_module

    from continual.config import register_configs
    from continual.experiment import run_experiment

    register_configs()
    with initialize_config_module(config_module="continual.conf", version_base="1.3"):
        def _run(strategy: str, values: dict[str, Any]):
            args = ["stream=split_digits", "log.console=false", "checkpoint.enabled=false", "report.per_run=false",
                    "++stream.test_per_class=5", *(f"++{k}={v}" for k, v in values.items()),
                    f"strategy={strategy}"]
            out = tmp_path_factory.mktemp("run")
            try:
                return run_experiment(compose(config_name="config", overrides=args), out_dir=str(out)), None, out
            except ConfigError as e:
                return None, e, out

        yield _run


SETTINGS = dict(deadline=None, derandomize=True, phases=[Phase.explicit, Phase.generate],
                suppress_health_check=list(HealthCheck))


@settings(max_examples=40, **SETTINGS)
@given(case=configurations())
def test_every_valid_configuration_runs_to_the_end(run, case):
    strategy, values = case
    summary, error, out = run(strategy, values)
    assert error is None, f"a valid configuration was refused: {error}"
    assert summary["strategy"].lower() == strategy
    assert summary["n_tasks"] == values["stream.n_tasks"]
    # every training sample of the subset, once per pass (blurry and gradual only move samples)
    assert summary["samples_seen"] == 10 * values["stream.train_per_class"] * values["stream.passes"]
    assert 0.0 <= summary["acc"] <= 1.0
    assert (out / "summary.json").is_file()


@pytest.mark.parametrize("bad", list(FIELDS))
@settings(max_examples=4, **SETTINGS)
@given(data=st.data())
def test_one_invalid_value_is_refused_at_start_naming_it(run, bad, data):
    strategy, values = data.draw(configurations(bad))
    summary, error, out = run(strategy, values)
    assert error is not None, f"{bad}={values[bad]!r} was not refused"
    assert re.search(FIELDS[bad].message(values[bad], values), str(error)), str(error)
    assert not (out / "summary.json").exists()
