"""Property-based: any generated stream/strategy/model configuration either runs or fails at
start with our ConfigError (never a deep torch traceback)."""

import pytest
from hypothesis import HealthCheck, Phase, given, settings
from hypothesis import strategies as st

from continual.types import ConfigError

pytestmark = pytest.mark.slow  # dozens of generated runs

CASES = {"tried": 0, "ran": 0, "refused": 0}
REASONS: list[str] = []


@pytest.fixture(scope="module")
def compose():
    from hydra import compose as hydra_compose
    from hydra import initialize_config_module

    from continual.config import register_configs

    register_configs()
    with initialize_config_module(config_module="continual.conf", version_base="1.3"):
        yield hydra_compose


def mostly(valid, invalid):
    """Valid values nine times in ten, so that both outcomes are exercised."""
    return st.integers(0, 9).flatmap(lambda i: valid if i else invalid)


overrides = st.fixed_dictionaries({
    "strategy": st.sampled_from(["naive", "er", "joint"]),
    "stream.n_tasks": mostly(st.sampled_from([1, 2, 5, 10]), st.integers(-1, 12)),
    "stream.batch_size": mostly(st.integers(1, 40), st.integers(-2, 0)),
    "stream.passes": mostly(st.integers(1, 2), st.integers(-1, 0)),
    "stream.boundaries": mostly(st.sampled_from(["visible", "hidden"]), st.just("fuzzy")),
    "stream.blurry": mostly(st.floats(0.0, 0.9), st.floats(-0.5, 1.5)),
    "stream.gradual_width": mostly(st.integers(0, 300), st.integers(-10, -1)),
    "stream.train_per_class": mostly(st.integers(1, 12), st.integers(-1, 0)),
    "model.hidden": mostly(st.integers(1, 24), st.integers(-2, 0)),
    "strategy.lr": mostly(st.sampled_from([1e-3, 0.1]), st.sampled_from([-1.0, 0.0])),
    "strategy.optimizer": mostly(st.sampled_from(["sgd", "adam", "adamw"]), st.just("rmsprop")),
}, optional={
    "stream.class_order": mostly(st.permutations(range(10)), st.lists(st.integers(-1, 10), max_size=10)).map(
        lambda xs: "[" + ",".join(map(str, xs)) + "]"),
    "strategy.buffer_size": mostly(st.integers(1, 50), st.integers(-3, 0)),
    "strategy.replay_batch_size": mostly(st.integers(0, 20), st.integers(-3, -1)),
})


@settings(max_examples=60, deadline=None, derandomize=True, phases=[Phase.generate],
          suppress_health_check=list(HealthCheck))
@given(ov=overrides)
def test_every_configuration_runs_or_fails_clearly(compose, tmp_path_factory, ov):
    from continual.cli import run_experiment

    if ov["strategy"] != "er":
        ov = {k: v for k, v in ov.items() if "buffer" not in k and "replay" not in k}
    args = ["stream=split_digits", "log.console=false", "checkpoint.enabled=false", "++stream.test_per_class=5"]
    args += [f"++{k}={v}" for k, v in ov.items() if k != "strategy"] + [f"strategy={ov['strategy']}"]
    cfg = compose(config_name="config", overrides=args)
    CASES["tried"] += 1
    try:
        run_experiment(cfg, out_dir=str(tmp_path_factory.mktemp("run")))
        CASES["ran"] += 1
    except ConfigError as e:
        CASES["refused"] += 1
        REASONS.append(str(e)[:80])


def test_report_cases_tried():
    print(f"fuzzed configurations: {CASES}")
    print("refusals:", *sorted(set(REASONS))[:20], sep="\n  ")
    assert CASES["tried"] >= 60 and CASES["ran"] > 0 and CASES["refused"] > 0
