import os

# One thread each: the test models are tiny, and subprocesses inherit these settings.
os.environ.setdefault("OMP_NUM_THREADS", "1")
os.environ.setdefault("WANDB_MODE", "offline")
os.environ.setdefault("HF_HUB_OFFLINE", "1")

import pytest  # noqa: E402
import torch  # noqa: E402

from continual.streams import datasets  # noqa: E402

torch.set_num_threads(1)

# Optional data a test may need (``@pytest.mark.needs_data("fashion_mnist")``): whether it is
# here, and what to run when it is not.
OPTIONAL_DATA = {
    "fashion_mnist": (
        lambda: any((datasets.FASHION_MNIST_DIR / f"train-images-idx3-ubyte{ext}").exists() for ext in (".gz", "")),
        "sudo apt-get install -y dataset-fashion-mnist (scripts/setup.sh does it when run as root)",
    ),
}


def required_data() -> set[str]:
    """Datasets named in CONTINUAL_REQUIRE_DATA (comma-separated): CI sets it so that a test
    needing one fails, rather than skips, when it is missing."""
    return {n.strip() for n in os.environ.get("CONTINUAL_REQUIRE_DATA", "").split(",") if n.strip()}


@pytest.hookimpl(tryfirst=True)  # before skipif marks, so that required data is never skipped
def pytest_runtest_setup(item):
    for mark in item.iter_markers("needs_data"):
        (name,) = mark.args
        present, install = OPTIONAL_DATA[name]
        if not present():
            if name in required_data():
                pytest.fail(f"{name} is missing and CONTINUAL_REQUIRE_DATA requires it: {install}", pytrace=False)
            pytest.skip(f"{name} is not installed: {install}")


@pytest.fixture
def digits_stream():
    from continual import streams
    return streams.class_incremental("digits", n_tasks=5, batch_size=10)
