"""Every numeric option of every image-stream config group, set to zero, a negative number or
the wrong type (and floats to a huge value), either runs or fails with a clear message: our
ConfigError, or the run stopping on a non-finite loss - never a traceback from deep inside.

Huge integers are left out on purpose: a buffer of 10**12 items or 10**12 epochs is a request
the run would honour until memory or time runs out, not a crash to catch.
"""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from continual.runner import RunStopped
from continual.types import ConfigError

pytestmark = pytest.mark.slow  # a few hundred tiny runs

CONF = Path(__file__).resolve().parents[1] / "conf"
# image-stream groups; Avalanche and language-model strategies have their own tests
GROUPS = {
    "strategy": [p.stem for p in sorted((CONF / "strategy").glob("*.yaml"))
                 if not p.stem.startswith(("avl_", "ckl_", "lm_"))],
    "model": ["mlp", "cnn"],
    "schedule": [p.stem for p in sorted((CONF / "schedule").glob("*.yaml"))],
    "stream": ["split_digits"],
}
SMALL = {"onpro": ["strategy.rotations=4", "strategy.proj_dim=32", "model.hidden=32"],
         "tame": ["strategy.selector_epochs=1", "strategy.prune_epochs=1"],
         "tame_code": ["strategy.selector_epochs=1", "strategy.prune_epochs=1"],
         "tame_code_within_task": ["strategy.selector_epochs=1", "strategy.prune_epochs=1"]}


def _cases():
    for group, names in GROUPS.items():
        for name in names:
            data = yaml.safe_load((CONF / group / f"{name}.yaml").read_text()) or {}
            for key, value in data.items():
                if isinstance(value, bool) or not isinstance(value, (int, float)) or key.startswith("_"):
                    continue
                bad = [0, -1, "x"] + ([1e12] if isinstance(value, float) else [])
                for v in bad:
                    yield pytest.param(group, name, key, v, id=f"{group}={name}:{key}={v}")


@pytest.fixture(scope="module")
def compose():
    from hydra import compose as hydra_compose
    from hydra import initialize_config_module

    from continual.config import register_configs

    register_configs()
    with initialize_config_module(config_module="continual.conf", version_base="1.3"):
        yield hydra_compose


@pytest.mark.parametrize(("group", "name", "key", "value"), list(_cases()))
def test_a_bad_numeric_option_runs_or_fails_clearly(compose, tmp_path, group, name, key, value):
    from continual.experiment import run_experiment

    strategy = name if group == "strategy" else "naive"
    args = ["stream=split_digits", f"strategy={strategy}", "log.console=false", "checkpoint.enabled=false",
            "++stream.train_per_class=4", "++stream.test_per_class=3", *SMALL.get(strategy, [])]
    if group in ("model", "schedule"):
        args.append(f"{group}={name}")
    args = [a for a in args if not a.startswith(f"{group}.{key}=")] + [f"{group}.{key}={value}"]
    try:
        cfg = compose(config_name="config", overrides=args)
    except Exception as e:  # Hydra's own type check of the structured config (e.g. "x" for an int)
        assert "Value 'x'" in str(e) or "could not convert" in str(e).lower() or "Invalid" in str(e), e
        return
    try:
        run_experiment(cfg, out_dir=str(tmp_path), report=False)
    except (ConfigError, RunStopped):
        pass  # a clear refusal or a clear stop
