"""The plugin registry, `continual list` and the Hydra search-path plugin."""

import importlib
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from continual import registry

REPO = Path(__file__).resolve().parents[1]


@pytest.fixture
def fake_plugin(tmp_path, monkeypatch):
    """An installed-looking distribution: a strategy module, a config package, entry points."""
    pkg = tmp_path / "fakeplug"
    (pkg / "conf" / "strategy").mkdir(parents=True)
    (pkg / "__init__.py").write_text('"""Fake plugin."""\nfrom fakeplug.impl import Theirs\n')
    (pkg / "impl.py").write_text(textwrap.dedent('''
        """Module doc."""

        class Theirs:
            """Their strategy: one line of docs.

            More text.
            """

        class Undocumented:
            pass
    '''))
    (pkg / "conf" / "__init__.py").write_text("")
    (pkg / "conf" / "strategy" / "theirs.yaml").write_text(
        "# Theirs, from a config file.\n_target_: continual.strategies.naive.Naive\nlr: 0.01\n")
    (pkg / "conf" / "strategy" / "er.yaml").write_text(  # clashes with a built-in name
        "# A plugin's er.\n_target_: continual.strategies.naive.Naive\n")
    dist = tmp_path / "fakeplug-0.1.dist-info"
    dist.mkdir()
    (dist / "METADATA").write_text("Metadata-Version: 2.1\nName: fakeplug\nVersion: 0.1\n")
    (dist / "entry_points.txt").write_text(textwrap.dedent("""
        [continual.strategies]
        theirs = fakeplug:Theirs
        bare = fakeplug.impl:Undocumented
        [continual.configs]
        fakeplug = fakeplug.conf
    """))
    monkeypatch.syspath_prepend(str(tmp_path))
    importlib.invalidate_caches()
    yield tmp_path
    for name in [m for m in sys.modules if m == "fakeplug" or m.startswith("fakeplug.")]:
        del sys.modules[name]


def test_builtins_are_listed_with_the_first_comment_of_their_config():
    strategies = registry.available("strategy")
    assert strategies["er"].source == registry.BUILTIN
    assert strategies["er"].target == "continual.strategies.er.ER"
    assert strategies["er"].doc.startswith("Experience replay")
    assert registry.available("stream")["split_digits"].doc.startswith("scikit-learn digits")


def test_docs_come_from_source_via_ast_following_reexports(fake_plugin):
    assert registry.first_doc_line("fakeplug:Theirs") == "Their strategy: one line of docs."
    assert registry.first_doc_line("fakeplug.impl.Theirs") == "Their strategy: one line of docs."
    assert registry.first_doc_line("fakeplug.impl:Undocumented") == "Module doc."
    assert "fakeplug" not in sys.modules and "fakeplug.impl" not in sys.modules


def test_installed_entry_points_and_configs_join_the_list(fake_plugin):
    strategies = registry.available("strategy")
    assert strategies["theirs"].source == "fakeplug"
    assert strategies["theirs"].doc == "Theirs, from a config file."
    assert strategies["theirs"].config.endswith("theirs.yaml")
    assert strategies["bare"].config is None
    assert strategies["bare"].target == "fakeplug.impl.Undocumented"


def test_a_builtin_name_wins_over_a_plugin_config(fake_plugin):
    er = registry.available("strategy")["er"]
    assert er.source == registry.BUILTIN and er.target == "continual.strategies.er.ER"


def test_print_list_shows_names_docs_and_sources(fake_plugin, capsys):
    registry.print_list()
    out = capsys.readouterr().out
    assert "strategies (strategy=<name>):" in out and "streams (stream=<name>):" in out
    assert "theirs" in out and "[fakeplug]" in out and "no config file" in out
    assert "split_digits" in out and "fakeplug.conf" in out


def test_load_imports_the_target_and_names_the_choices_when_unknown():
    from continual.strategies.naive import Naive
    from continual.types import ConfigError

    assert registry.load("strategy", "naive") is Naive
    with pytest.raises(ConfigError, match="no strategy named 'nope'.*naive"):
        registry.load("strategy", "nope")


def test_listing_imports_neither_torch_nor_avalanche():
    # what keeps `continual list` quick; its speed itself is not a unit test's business
    code = ("import sys, io; from continual.registry import print_list; print_list(io.StringIO()); "
            "assert 'torch' not in sys.modules and 'avalanche' not in sys.modules")
    subprocess.run([sys.executable, "-c", code], check=True, cwd=REPO, timeout=60)


def test_the_search_path_plugin_makes_plugin_configs_choosable(fake_plugin):
    from hydra import compose, initialize_config_module

    from continual.config import register_configs

    register_configs()
    with initialize_config_module(config_module="continual.conf", version_base="1.3"):
        cfg = compose(config_name="config", overrides=["strategy=theirs"])
    assert cfg.strategy._target_ == "continual.strategies.naive.Naive" and cfg.strategy.lr == 0.01
