"""The experiment entry point: configs compose, strategies build from them, tables render."""

import pytest

from continual.lm.run import build_from_config, compose_experiment, write_ckl_table
from continual.types import ConfigError


def test_ckl_experiment_composes_with_overrides():
    cfg = compose_experiment("ckl_smollm2", ["methods=[lora]", "stream.n_per_set=120"])
    assert cfg.kind == "knowledge" and list(cfg.methods) == ["lora"]
    assert cfg.stream.n_per_set == 120 and cfg.model.name == "smollm2"


def test_infinite_lr_experiment_pulls_in_every_schedule_config():
    cfg = compose_experiment("infinite_lr", ["seeds=[0]"])
    assert set(cfg.schedules) == {"infinite", "repeated_cosine", "constant", "wsd"}
    assert cfg.schedules.infinite._target_ == "continual.strategies.schedules.InfiniteSchedule"
    assert cfg.schedules.infinite.eta_const == pytest.approx(1.65e-3)  # scaled for the tiny model


def test_unknown_experiment_is_a_config_error():
    with pytest.raises(ConfigError, match="no experiment"):
        compose_experiment("nope", [])


def test_every_ckl_strategy_builds_from_the_experiment_config():
    from continual.models.lm import tiny_causal_lm

    cfg = compose_experiment("ckl_smollm2", [])
    for name in cfg.methods:
        model, tok = tiny_causal_lm(hidden_size=32, n_layers=2)
        strategy = build_from_config(cfg.strategies[name], model=model, tokenizer=tok)
        assert hasattr(strategy, "observe") and hasattr(strategy, "answer")


def test_ckl_table_has_a_row_per_method_and_marks_undefined_fuar(tmp_path):
    row = {"IL": 50.0, "UL1": 0.0, "NL1": 0.0, "UL1_old": 90.0, "heldout_loss": 3.0}
    runs = [{"method": m, "initial": row, "final": dict(row, UL1=10.0), "FUAR": f,
             "trainable_params": 1, "train_s": 1.0}
            for m, f in (("lora", 0.5), ("vanilla", None))]
    text = write_ckl_table(runs, tmp_path / "t.md", echo=False)
    lines = text.splitlines()
    assert lines[3].startswith("| vanilla") and "n.d." in lines[3]  # paper order
    assert lines[4].startswith("| lora") and "0.50" in lines[4]
