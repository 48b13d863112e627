"""A missing package of the ``lm`` extra stops a run with a ConfigError that names the package
and the extra to install, not a raw ImportError from deep inside Hydra's instantiation."""

from __future__ import annotations

import importlib
import sys

import pytest

from continual.types import ConfigError

INSTALL = r"pip install 'continual-sim\[lm\]'"
LM_PACKAGES = ("transformers", "tokenizers", "peft")


@pytest.fixture
def without(monkeypatch):
    """``without("peft")``: importing that package fails from here to the test's end. The LM
    packages are imported first, so none of them caches the hidden one as missing for later tests
    (transformers checks at import which optional packages exist)."""
    for package in LM_PACKAGES:
        importlib.import_module(package)

    def hide(name: str) -> None:
        monkeypatch.setitem(sys.modules, name, None)
    return hide


@pytest.mark.parametrize("package", ["transformers", "tokenizers"])
def test_the_tiny_lm_without_a_package_names_it_and_the_extra(without, package):
    from continual.models.lm import tiny_causal_lm

    without(package)
    with pytest.raises(ConfigError, match=rf"'{package}'.*{INSTALL}"):
        tiny_causal_lm(hidden_size=32, n_layers=1)


def test_loading_a_model_folder_without_transformers_names_it_and_the_extra(without, tmp_path):
    from continual.models.lm import load_causal_lm

    without("transformers")
    with pytest.raises(ConfigError, match=rf"'transformers'.*{INSTALL}"):
        load_causal_lm(str(tmp_path))


def test_lora_from_its_config_without_peft_names_it_and_the_extra(without, tiny):
    from hydra import compose, initialize_config_module

    from continual.config import instantiate_checked, register_configs

    register_configs()
    with initialize_config_module(config_module="continual.conf", version_base="1.3"):
        cfg = compose(config_name="config", overrides=["strategy=ckl_lora"])
    model, tok = tiny
    without("peft")
    with pytest.raises(ConfigError, match=rf"'peft'.*{INSTALL}"):
        instantiate_checked(cfg.strategy, "strategy", model=model, tokenizer=tok)
