"""Every shipped stream, strategy and model config is accepted by what it builds, every option
the docs name is in a config (so `group.key=value` works as written, without `+`), and the
documented stream and strategy options take effect."""

import gzip
import re
import struct
from pathlib import Path

import numpy as np
import pytest
import yaml

from continual.config import check_options, instantiate_checked, register_configs
from continual.models import BACKBONES

ROOT = Path(__file__).resolve().parents[1]
GROUPS = ("stream", "strategy", "model")
CONFIGS = [p for g in GROUPS for p in sorted((ROOT / "conf" / g).glob("*.yaml"))]
DOCS = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]


def _options(path: Path) -> dict:
    return yaml.safe_load(path.read_text()) or {}


@pytest.fixture(scope="module")
def compose():
    from hydra import compose as hydra_compose
    from hydra import initialize_config_module

    register_configs()
    with initialize_config_module(config_module="continual.conf", version_base="1.3"):
        yield hydra_compose


@pytest.mark.parametrize("path", CONFIGS, ids=lambda p: f"{p.parent.name}/{p.stem}")
def test_every_option_of_a_shipped_config_is_accepted_by_its_target(compose, path):
    from hydra.utils import get_object
    from omegaconf import OmegaConf

    group = path.parent.name
    cfg = compose(config_name="config", overrides=[f"{group}={path.stem}"])
    options = OmegaConf.to_container(cfg[group])
    if group == "model" and "_target_" not in options:
        name = options.pop("name")
        options.pop("channels_last", None)
        check_options(BACKBONES[name], options, f"model {name}")
    else:
        check_options(get_object(options.pop("_target_")), options, group)


def documented_options() -> list[tuple[str, str, str]]:
    """(group, key, page) for every `group.key=...` or `` `group.key` `` a page names without `+`."""
    found = set()
    pattern = re.compile(r"(?<![\w+./-])(stream|strategy|model)\.([a-z_]+)(?==|`)")
    for doc in DOCS:
        for group, key in pattern.findall(doc.read_text()):
            if key != "py":  # a file name such as `strategy.py`
                found.add((group, key, doc.name))
    return sorted(found)


@pytest.mark.parametrize("group,key,page", documented_options(), ids=lambda v: str(v))
def test_every_documented_option_is_in_a_config_of_its_group(group, key, page):
    holders = [p.stem for p in sorted((ROOT / "conf" / group).glob("*.yaml")) if key in _options(p)]
    assert holders, f"{page} names {group}.{key}, which no conf/{group}/*.yaml has: `{group}.{key}=` fails"


def _stream(compose, *overrides):
    cfg = compose(config_name="config", overrides=list(overrides))
    return instantiate_checked(cfg.stream, "stream", seed=0)


def test_classes_per_task_and_class_order(compose):
    stream = _stream(compose, "stream=split_digits", "stream.classes_per_task=5",
                     "stream.class_order=[9,8,7,6,5,4,3,2,1,0]")
    assert [t.classes for t in stream.tasks] == [[9, 8, 7, 6, 5], [4, 3, 2, 1, 0]]


def test_shuffle_classes_draws_the_order_from_the_seed(compose):
    stream = _stream(compose, "stream=split_digits", "stream.shuffle_classes=true")
    order = [c for t in stream.tasks for c in t.classes]
    assert sorted(order) == list(range(10)) and order != list(range(10))


def test_angles_of_rotated_mnist(compose):
    stream = _stream(compose, "stream=rotated_mnist", "stream.n_tasks=2", "stream.angles=[0,90]",
                     "stream.train_per_class=2", "stream.test_per_class=2")
    assert [t.transform.degrees for t in stream.tasks] == [0.0, 90.0]


def test_concepts_of_a_river_stream(compose):
    stream = _stream(compose, "stream=drift_sea", "stream.concepts=[2,0]", "stream.samples_per_concept=20",
                     "stream.test_per_concept=10")
    assert [t.name for t in stream.tasks] == ["sea-2", "sea-0"]


def test_dataset_root_reads_fashion_mnist_from_a_folder(compose, tmp_path):
    for split, n in (("train", 20), ("t10k", 10)):
        for kind, array in (("images-idx3", np.zeros((n, 28, 28))), ("labels-idx1", np.arange(n) % 10)):
            header = struct.pack(">BBBB", 0, 0, 0x08, array.ndim) + struct.pack(f">{array.ndim}I", *array.shape)
            with gzip.open(tmp_path / f"{split}-{kind}-ubyte.gz", "wb") as f:
                f.write(header + array.astype(np.uint8).tobytes())
    stream = _stream(compose, "stream=split_fashion_mnist", f"stream.dataset_root={tmp_path}")
    assert stream.dataset.x_train.shape == (20, 1, 28, 28)


def test_strategy_momentum_and_weight_decay_reach_the_optimiser(compose):
    import torch

    cfg = compose(config_name="config", overrides=["strategy=er", "strategy.momentum=0.9",
                                                   "strategy.weight_decay=0.001"])
    strategy = instantiate_checked(cfg.strategy, "strategy", model=torch.nn.Linear(4, 2))
    group = strategy.optimizer.param_groups[0]
    assert group["momentum"] == 0.9 and group["weight_decay"] == 0.001


# Language-model configs are documented in docs/language_models.md.
LM_TARGETS = ("continual.strategies.ckl.", "continual.models.lm.", "continual.streams.text.")
REFERENCE = ROOT / "docs" / "configuration.md"


def _composed_options(compose, path: Path) -> dict:
    from omegaconf import OmegaConf

    group = path.parent.name
    return OmegaConf.to_container(compose(config_name="config", overrides=[f"{group}={path.stem}"])[group])


@pytest.mark.parametrize("path", CONFIGS, ids=lambda p: f"{p.parent.name}/{p.stem}")
def test_the_configuration_reference_names_every_option_of_every_config(compose, path):
    options = _composed_options(compose, path)
    if str(options.get("_target_", "")).startswith(LM_TARGETS):
        pytest.skip("a language-model config: docs/language_models.md")
    text = REFERENCE.read_text()
    assert f"`{path.stem}`" in text or path.stem.startswith("avl_"), f"configuration.md lacks the config {path.stem}"
    missing = [key for key in options if key not in ("_target_", "name") and f"`{key}`" not in text]
    assert not missing, f"docs/configuration.md does not describe {path.parent.name}.{missing} ({path.name})"


def test_the_configuration_reference_names_every_top_level_key():
    from dataclasses import fields, is_dataclass

    from continual.config import RunConfig

    text = REFERENCE.read_text()
    keys = []
    for f in fields(RunConfig):
        default = f.default_factory() if callable(f.default_factory) else f.default
        if is_dataclass(default):
            keys += [f"{f.name}.{g.name}" for g in fields(default)]
        elif f.name not in ("stream", "strategy", "model"):
            keys.append(f.name)
    missing = [k for k in keys if f"`{k}`" not in text]
    assert not missing, f"docs/configuration.md does not describe the top-level keys {missing}"
