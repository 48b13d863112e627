"""A run that asks for a logger gets it or stops at start, saying why (loggers.<name>.on_failure)."""

from __future__ import annotations

import sys

import pytest

from continual.loggers import GuardedLogger, make_loggers
from continual.types import ConfigError

CONFIG = {"stream": {"name": "s"}, "strategy": {"_target_": "x.Naive"}, "model": {"name": "mlp"}, "seed": 0}


@pytest.mark.parametrize(("options", "message"), [
    ({"log_checkpoints": "maybe"}, "loggers.wandb.log_checkpoints='maybe' has the wrong type"),
    ({"log_checkpoints": 2}, "loggers.wandb.log_checkpoints=2 has the wrong type"),
    ({"project": ""}, "loggers.wandb.project='' is empty"),
    ({"project": "a/b c"}, "loggers.wandb.project='a/b c' contains '/'"),
    ({"entity": "x" * 129}, "is over 128 characters"),
    ({"on_failure": "maybe"}, "on_failure must be one of \\['stop', 'continue'\\]"),
])
def test_a_wandb_option_wandb_would_not_honour_is_refused_before_any_work(tmp_path, options, message):
    with pytest.raises(ConfigError, match=message):
        make_loggers({"wandb": options}, CONFIG, tmp_path)


def test_a_logger_whose_package_is_missing_stops_the_run_unless_told_to_continue(tmp_path, monkeypatch):
    monkeypatch.setitem(sys.modules, "wandb", None)  # as if not installed
    import importlib.util

    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec", lambda name, *a: None if name == "wandb" else real(name, *a))
    with pytest.raises(ConfigError, match="needs the wandb package.*pip install wandb.*on_failure=continue"):
        make_loggers({"wandb": {}}, CONFIG, tmp_path)
    with pytest.warns(RuntimeWarning, match="goes on without it"):
        assert make_loggers({"wandb": {"on_failure": "continue"}}, CONFIG, tmp_path) == []


def test_valid_options_build_the_logger(tmp_path):
    pytest.importorskip("wandb")
    (logger,) = make_loggers({"wandb": {"project": "my-project_1.0", "log_checkpoints": True,
                                        "on_failure": "stop"}}, CONFIG, tmp_path)
    assert isinstance(logger, GuardedLogger) and logger.inner.project == "my-project_1.0"
