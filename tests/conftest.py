import os

# One thread each: the test models are tiny, and subprocesses inherit these settings.
os.environ.setdefault("OMP_NUM_THREADS", "1")
os.environ.setdefault("WANDB_MODE", "offline")
os.environ.setdefault("HF_HUB_OFFLINE", "1")

import pytest  # noqa: E402
import torch  # noqa: E402

torch.set_num_threads(1)


@pytest.fixture
def digits_stream():
    from continual import streams
    return streams.class_incremental("digits", n_tasks=5, batch_size=10)
