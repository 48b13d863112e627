"""GPU readiness checked on the CPU: device placement, determinism, the memory store's device,
and the GPU smoke script's refusal without a GPU (torch.cuda functions monkeypatched where a GPU
would be needed; what only a real GPU can show is benchmarks/gpu_smoke.py's job)."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
import torch

from continual.cli import resolve_device, set_determinism
from continual.types import ConfigError

ROOT = Path(__file__).resolve().parents[1]


def _gpus(monkeypatch, count: int) -> None:
    """Pretend torch sees ``count`` GPUs."""
    monkeypatch.setattr(torch.cuda, "is_available", lambda: count > 0)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: count)


# ---------------------------------------------------------------- placement
def test_cpu_and_auto_without_a_gpu_resolve_to_the_cpu(monkeypatch):
    _gpus(monkeypatch, 0)
    assert resolve_device("cpu") == "cpu"
    assert resolve_device("auto") == "cpu"
    assert resolve_device("auto", job_num=3) == "cpu"


def test_cuda_with_an_index_is_accepted_when_torch_sees_that_gpu(monkeypatch):
    _gpus(monkeypatch, 2)
    assert resolve_device("cuda:1") == "cuda:1"
    assert resolve_device("CUDA:0") == "cuda:0"


def test_cuda_with_an_index_torch_does_not_see_is_a_clear_config_error(monkeypatch):
    _gpus(monkeypatch, 2)
    with pytest.raises(ConfigError, match=r"device=cuda:2 but torch sees 2 GPU\(s\).*cuda:0, cuda:1"):
        resolve_device("cuda:2")


def test_cuda_without_a_gpu_is_a_clear_config_error(monkeypatch):
    _gpus(monkeypatch, 0)
    with pytest.raises(ConfigError, match="torch sees no GPU"):
        resolve_device("cuda:0")
    with pytest.raises(ConfigError, match="torch sees no GPU"):
        resolve_device("cuda")


@pytest.mark.parametrize("bad", ["gpu", "cuda:", "cuda:-1", "cuda:x", "mps0"])
def test_a_malformed_device_names_the_accepted_forms(monkeypatch, bad):
    _gpus(monkeypatch, 1)
    with pytest.raises(ConfigError, match="auto, cpu, cuda or cuda:N"):
        resolve_device(bad)


def test_a_single_run_under_cuda_takes_gpu_0(monkeypatch):
    _gpus(monkeypatch, 4)
    assert resolve_device("cuda") == "cuda:0"
    assert resolve_device("auto") == "cuda:0"


def test_sweep_jobs_under_cuda_spread_over_the_visible_gpus_by_job_number(monkeypatch):
    _gpus(monkeypatch, 3)
    assert [resolve_device("cuda", job_num=j) for j in range(7)] == [
        "cuda:0", "cuda:1", "cuda:2", "cuda:0", "cuda:1", "cuda:2", "cuda:0"]
    assert resolve_device("auto", job_num=4) == "cuda:1"


def test_an_explicit_gpu_index_is_kept_in_a_sweep(monkeypatch):
    _gpus(monkeypatch, 3)
    assert resolve_device("cuda:2", job_num=0) == "cuda:2"


def test_sweep_jobs_on_a_one_gpu_machine_all_use_it(monkeypatch):
    _gpus(monkeypatch, 1)
    assert {resolve_device("cuda", job_num=j) for j in range(4)} == {"cuda:0"}


def test_the_run_schema_accepts_cuda_with_an_index():
    from hydra import compose, initialize_config_module

    from continual.config import register_configs

    register_configs()
    with initialize_config_module(config_module="continual.conf", version_base="1.3"):
        cfg = compose(config_name="config", overrides=["device=cuda:1", "deterministic=true"])
    assert cfg.device == "cuda:1" and cfg.deterministic is True


# ---------------------------------------------------------------- determinism
@pytest.fixture
def restore_determinism():
    before = (torch.are_deterministic_algorithms_enabled(), torch.backends.cudnn.deterministic,
              torch.backends.cudnn.benchmark, os.environ.get("CUBLAS_WORKSPACE_CONFIG"))
    yield
    torch.use_deterministic_algorithms(before[0])
    torch.backends.cudnn.deterministic, torch.backends.cudnn.benchmark = before[1], before[2]
    if before[3] is None:
        os.environ.pop("CUBLAS_WORKSPACE_CONFIG", None)
    else:
        os.environ["CUBLAS_WORKSPACE_CONFIG"] = before[3]


def test_deterministic_true_sets_torch_cudnn_and_cublas(restore_determinism, monkeypatch):
    monkeypatch.delenv("CUBLAS_WORKSPACE_CONFIG", raising=False)
    set_determinism(True)
    assert torch.are_deterministic_algorithms_enabled()
    assert torch.backends.cudnn.deterministic and not torch.backends.cudnn.benchmark
    assert os.environ["CUBLAS_WORKSPACE_CONFIG"] == ":4096:8"


def test_deterministic_keeps_a_cublas_workspace_the_user_chose(restore_determinism, monkeypatch):
    monkeypatch.setenv("CUBLAS_WORKSPACE_CONFIG", ":16:8")
    set_determinism(True)
    assert os.environ["CUBLAS_WORKSPACE_CONFIG"] == ":16:8"


def test_deterministic_false_undoes_an_earlier_jobs_true(restore_determinism):
    set_determinism(True)
    set_determinism(False)
    assert not torch.are_deterministic_algorithms_enabled()
    assert not torch.backends.cudnn.deterministic


def test_deterministic_refuses_a_non_boolean(restore_determinism):
    with pytest.raises(ConfigError, match="deterministic must be true or false"):
        set_determinism("yes")


def test_summary_records_the_deterministic_setting(tmp_path, restore_determinism):
    import json

    from hydra import compose, initialize_config_module

    from continual.cli import run_experiment
    from continual.config import register_configs

    register_configs()
    with initialize_config_module(config_module="continual.conf", version_base="1.3"):
        cfg = compose(config_name="config", overrides=[
            "stream=split_digits", "model.hidden=16", "log.console=false", "strategy=naive",
            "device=cpu", "deterministic=true", "checkpoint.enabled=false", "report.per_run=false"])
    summary = run_experiment(cfg, out_dir=str(tmp_path))
    assert summary["deterministic"] is True
    assert json.loads((tmp_path / "summary.json").read_text())["deterministic"] is True
    assert summary["config"]["device"] == "cpu"
