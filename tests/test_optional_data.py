"""A test that needs an optional dataset skips, saying how to install it, when the data is
absent, and fails instead when CONTINUAL_REQUIRE_DATA names the dataset (as CI sets it)."""

from pathlib import Path

import pytest

pytest_plugins = ["pytester"]

CONFTEST = (Path(__file__).parent / "conftest.py").read_text()
NEEDS_FASHION_MNIST = """
import pytest

@pytest.mark.needs_data("fashion_mnist")
def test_reads_fashion_mnist():
    pass
"""


@pytest.fixture
def without_fashion_mnist(pytester, monkeypatch, tmp_path):
    from continual.streams import datasets

    monkeypatch.setattr(datasets, "FASHION_MNIST_DIR", tmp_path / "absent")
    pytester.makeconftest(CONFTEST)
    pytester.makeini('[pytest]\nmarkers =\n    needs_data(name): reads an optional dataset\n')
    pytester.makepyfile(NEEDS_FASHION_MNIST)
    return pytester


def test_missing_optional_data_skips_with_the_install_command(without_fashion_mnist, monkeypatch):
    monkeypatch.delenv("CONTINUAL_REQUIRE_DATA", raising=False)
    result = without_fashion_mnist.runpytest_inprocess("-rs")
    result.assert_outcomes(skipped=1)
    result.stdout.fnmatch_lines(["*fashion_mnist is not installed: sudo apt-get install -y dataset-fashion-mnist*"])


def test_missing_required_data_fails(without_fashion_mnist, monkeypatch):
    monkeypatch.setenv("CONTINUAL_REQUIRE_DATA", "fashion_mnist")
    result = without_fashion_mnist.runpytest_inprocess()
    result.assert_outcomes(errors=1)  # failed in setup: the session's exit code is non-zero
    assert result.ret != 0
    result.stdout.fnmatch_lines(["*fashion_mnist is missing and CONTINUAL_REQUIRE_DATA requires it*"])
