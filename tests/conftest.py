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


# Heavy tests (CLI runs in subprocesses, sweeps) marked here rather than beside their code: a
# test whose node id starts with one of these is slow. The rest carry @pytest.mark.slow.
SLOW_TESTS = (
    "tests/test_avalanche.py::test_an_avalanche_strategy_runs_end_to_end_through_the_cli",
    "tests/test_schedule_runs.py::test_schedule_from_the_cli_on_every_gradient_strategy",
    "tests/test_schedule_runs.py::test_cli_refuses_repeated_cosine_on_a_task_free_stream",
    "tests/test_sweep_exit.py::",
    "tests/test_resume_checks.py::test_resume_accepts_the_documented_spellings",
    "tests/test_resume_checks.py::test_resume_false_starts_over_and_resume_true_continues",
    "tests/lm/test_lm_runs.py::test_a_ckl_run_through_the_cli",
    "tests/lm/test_lm_runs.py::test_a_corpus_run_through_the_cli",
    "tests/lm/test_lm_runs.py::test_a_two_job_multirun_over_lm_strategies",
    "tests/lm/test_lm_runs.py::test_a_model_of_the_wrong_kind_is_refused_clearly",
)


def pytest_collection_modifyitems(config, items):
    for item in items:
        if item.nodeid.startswith(SLOW_TESTS):
            item.add_marker(pytest.mark.slow)


@pytest.fixture
def digits_stream():
    from continual import streams
    return streams.class_incremental("digits", n_tasks=5, batch_size=10)
