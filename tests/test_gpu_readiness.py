"""GPU readiness checked on the CPU: device placement, determinism, the memory store's device,
and the GPU smoke script's refusal without a GPU (torch.cuda functions monkeypatched where a GPU
would be needed; what only a real GPU can show is benchmarks/gpu_smoke.py's job)."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
import torch

from continual.experiment import resolve_device, set_determinism
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

    from continual.config import register_configs
    from continual.experiment import run_experiment

    register_configs()
    with initialize_config_module(config_module="continual.conf", version_base="1.3"):
        cfg = compose(config_name="config", overrides=[
            "stream=split_digits", "model.hidden=16", "log.console=false", "strategy=naive",
            "device=cpu", "deterministic=true", "checkpoint.enabled=false", "report.per_run=false"])
    summary = run_experiment(cfg, out_dir=str(tmp_path))
    assert summary["deterministic"] is True
    assert json.loads((tmp_path / "summary.json").read_text())["deterministic"] is True
    assert summary["config"]["device"] == "cpu"


# ---------------------------------------------------------------- the memory store's device
def _fake_faiss_gpu(monkeypatch, made: list | None = None):
    """FAISS "sees" a GPU; the GPU pieces are CPU stand-ins (a torch mirror searched by
    topk, a CPU clone of the IVF index), so the store's GPU bookkeeping runs here."""
    import faiss

    from continual.memory import vector_store as vs

    def mirror(dim, metric, device_index):
        if made is not None:
            made.append(("mirror", device_index))

        def knn(q, base, k):
            d = torch.cdist(q.double(), base.double()) ** 2
            dist, pos = torch.topk(d, k, largest=False)
            return dist.float(), pos

        return vs.TorchMirror(dim, torch.device("cpu"), knn)

    def gpu_index(index, resources, device_index):
        if made is not None:
            made.append(("ivf", index.ntotal, device_index, id(resources)))
        return faiss.clone_index(index)

    monkeypatch.setattr(vs.gpu, "faiss_gpu_count", lambda: 1)
    monkeypatch.setattr(vs.gpu, "make_gpu_mirror", mirror)
    monkeypatch.setattr(vs.gpu, "make_gpu_index", gpu_index)
    monkeypatch.setattr(vs.gpu, "new_gpu_resources", lambda: object())
    monkeypatch.setattr(vs.gpu, "_GPU_RESOURCES", None)
    return vs


def _vectors(n: int, seed: int = 0, dim: int = 8):
    import numpy as np

    return np.random.default_rng(seed).standard_normal((n, dim)).astype("float32")


def test_a_gpu_store_refuses_k_above_faiss_gpu_limit(monkeypatch):
    vs = _fake_faiss_gpu(monkeypatch)
    store = vs.VectorStore(8, device="cuda")
    store.add(_vectors(vs.GPU_MAX_K + 10))
    assert store.search(_vectors(2, seed=1), vs.GPU_MAX_K).ids.shape == (2, vs.GPU_MAX_K)
    with pytest.raises(ConfigError, match=r"k=2049 but FAISS's GPU search returns at most 2048"):
        store.search(_vectors(2, seed=1), vs.GPU_MAX_K + 1)


def test_a_cpu_store_has_no_k_limit_beyond_its_size():
    from continual.memory.vector_store import GPU_MAX_K, VectorStore

    store = VectorStore(8, device="cpu")
    store.add(_vectors(GPU_MAX_K + 10))
    assert store.search(_vectors(1, seed=1), GPU_MAX_K + 1).ids.shape == (1, GPU_MAX_K + 1)


def test_a_store_on_cuda_n_searches_on_gpu_n_not_gpu_0(monkeypatch):
    made = []
    vs = _fake_faiss_gpu(monkeypatch, made)
    flat = vs.VectorStore(8, device="cuda:1")
    flat.add(_vectors(20))
    ivf = vs.VectorStore(8, kind="ivf", device="cuda:1", nlist=2, train_size=10)
    ivf.add(_vectors(20))
    ivf.search(_vectors(1), 2)
    assert flat.device == "cuda" and flat.gpu_index == 1 and flat.device_name == "cuda:1"
    assert [m[-2] if m[0] == "ivf" else m[1] for m in made] == [1, 1]


def test_gpu_stores_of_a_process_share_one_faiss_resources_object(monkeypatch):
    made = []
    vs = _fake_faiss_gpu(monkeypatch, made)
    for seed in range(3):  # LTM rebuilds its store at every re-embed and resume
        s = vs.VectorStore(8, kind="ivf", device="cuda", nlist=2, train_size=10)
        s.add(_vectors(20, seed=seed))
        s.search(_vectors(1), 2)
    assert len({m[-1] for m in made}) == 1


def test_appends_to_a_gpu_ivf_do_not_reclone_it_and_match_the_cpu_store(monkeypatch):
    made = []
    vs = _fake_faiss_gpu(monkeypatch, made)
    gpu = vs.VectorStore(8, kind="ivf", device="cuda", nlist=2, train_size=10)
    cpu = vs.VectorStore(8, kind="ivf", device="cpu", nlist=2, train_size=10)
    q = _vectors(5, seed=9)
    for step in range(6):
        batch = _vectors(15, seed=step)
        gpu.add(batch)
        cpu.add(batch)
        assert (gpu.search(q, 4).ids == cpu.search(q, 4).ids).all()
    gpu.nprobe = 1
    cpu.nprobe = 1
    assert (gpu.search(q, 4).ids == cpu.search(q, 4).ids).all()
    assert len(made) == 1  # one upload: appends and nprobe changes reach the GPU copy in place
    gpu.remove(gpu.ids()[:3])
    cpu.remove(cpu.ids()[:3])
    assert (gpu.search(q, 4).ids == cpu.search(q, 4).ids).all()
    assert len(made) == 2  # a removal (which a GPU IVF cannot do) re-uploads once


def test_a_gpu_store_takes_queries_on_its_device_and_refuses_non_finite_ones(monkeypatch):
    vs = _fake_faiss_gpu(monkeypatch)
    gpu, cpu = vs.VectorStore(8, device="cuda"), vs.VectorStore(8, device="cpu")
    base = _vectors(50)
    gpu.add(base)
    cpu.add(base)
    q = torch.from_numpy(_vectors(4, seed=3))  # on the (stand-in) mirror's device
    assert (gpu.search(q, 5).ids == cpu.search(q, 5).ids).all()
    q[1, 2] = float("nan")
    with pytest.raises(ConfigError, match="queries contain NaN or Inf"):
        gpu.search(q, 5)


def test_ltm_store_follows_a_cpu_model_even_when_faiss_sees_a_gpu(monkeypatch):
    from continual.strategies.ltm import LongTermMemory
    from continual.types import Batch

    _fake_faiss_gpu(monkeypatch)
    model = torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(4, 3))
    model.n_classes = 3
    s = LongTermMemory(model, embed_dim=2)
    s.observe(Batch(torch.randn(6, 4), torch.tensor([0, 1, 2, 0, 1, 2])))
    assert s.store.device == "cpu"


def test_ltm_store_device_auto_and_cuda_name_the_models_gpu(monkeypatch):
    from continual.strategies.ltm import LongTermMemory

    _fake_faiss_gpu(monkeypatch)
    model = torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(4, 3))
    model.n_classes = 3
    s = LongTermMemory(model, embed_dim=2)
    s.device = torch.device("cuda", 2)  # as if the model were on GPU 2
    assert s._store_device_name() == "cuda:2"
    s.store_device = "cuda"
    assert s._store_device_name() == "cuda:2"
    s.store_kind, s.store_device = "hnsw", "auto"  # FAISS has no GPU HNSW
    assert s._store_device_name() == "cpu"
    s.store_device = "cpu"
    assert s._store_device_name() == "cpu"


def test_a_saved_store_loads_its_inputs_where_asked(tmp_path):
    from continual.memory.vector_store import VectorStore

    s = VectorStore(8, device="cpu")
    s.add(_vectors(5), inputs=torch.randn(5, 3))
    loaded = VectorStore.from_bytes(s.to_bytes(), device="cpu", inputs_device="cpu")
    assert torch.equal(loaded.get(loaded.ids()).payload.inputs, s.get(s.ids()).payload.inputs)


@pytest.mark.parametrize("saved", ["cuda:3", "cuda", "cpu"])
def test_inputs_saved_on_a_gpu_this_process_lacks_load_on_the_cpu(monkeypatch, saved):
    from continual.memory.gpu import saved_device

    _gpus(monkeypatch, 1 if saved == "cuda:3" else 0)
    assert saved_device(saved) == torch.device("cpu")


# ---------------------------------------------------------------- the GPU smoke script
def _smoke():
    import importlib.util

    spec = importlib.util.spec_from_file_location("gpu_smoke", ROOT / "benchmarks" / "gpu_smoke.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_gpu_smoke_without_a_gpu_says_so_and_runs_nothing(tmp_path):
    import subprocess
    import sys

    out = tmp_path / "smoke.json"
    env = {**os.environ, "CUDA_VISIBLE_DEVICES": ""}  # no GPU, whatever this machine has
    r = subprocess.run([sys.executable, str(ROOT / "benchmarks" / "gpu_smoke.py"), "--out", str(out)],
                       capture_output=True, text=True, env=env, timeout=120)
    assert r.returncode == 2
    assert "gpu_smoke: no GPU" in r.stderr and "nothing was run" in r.stderr
    assert not out.exists()


def test_gpu_smoke_runs_every_image_strategy_and_names_what_it_skips():
    names, skipped = _smoke().image_strategies()
    assert {"naive", "er", "joint", "onpro", "tame"} <= set(names)
    assert not any(n.startswith(("ckl_", "lm_")) for n in names)
    assert any(line.startswith("ckl_") and "language-model" in line for line in skipped)


@pytest.mark.parametrize("name", ["er", "onpro"])
def test_gpu_smoke_sync_counter_drives_a_strategy_over_split_digits(tmp_path, name):
    r = _smoke().count_syncs(name, "cpu", tmp_path)  # on the CPU nothing synchronises
    assert r["observes"] > 100 and r["max"] == 0 and r["ok"]


# ---------------------------------------------------------------- benchmarks on a GPU
def test_benchmarks_refuse_a_cpu_only_benchmark_under_device_cuda(capsys):
    import importlib.util

    spec = importlib.util.spec_from_file_location("bench_run", ROOT / "benchmarks" / "run.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    assert module.main(["--only", "strategy_cost", "--device", "cuda"]) == 2
    assert "strategy_cost measure(s) the CPU only" in capsys.readouterr().err


def test_gpu_memory_check_fails_when_torch_sees_a_gpu_and_faiss_does_not(monkeypatch, tmp_path):
    import importlib.util
    import json
    import sys

    import faiss

    sys.path.insert(0, str(ROOT / "benchmarks"))
    spec = importlib.util.spec_from_file_location("gpu_memory_check", ROOT / "benchmarks" / "gpu_memory_check.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    _gpus(monkeypatch, 1)
    monkeypatch.setattr(faiss, "get_num_gpus", lambda: 0)
    monkeypatch.setattr(module, "environment", lambda: {})
    assert module.main(["--out", str(tmp_path / "r.json")]) == 1
    assert json.loads((tmp_path / "r.json").read_text())["status"].startswith("FAILED")


# ---------------------------------------------------------------- amp (bf16 autocast)
class _AmpSpy(torch.nn.Module):
    """A linear model that records, per forward, the autocast state and its output dtype, and
    per backward (a tensor hook) whether autocast was on."""

    def __init__(self, n_inputs: int, n_classes: int) -> None:
        super().__init__()
        self.fc = torch.nn.Linear(n_inputs, n_classes)
        self.forwards: list[tuple[bool, torch.dtype]] = []
        self.backwards: list[bool] = []

    def forward(self, x):
        out = self.fc(x.flatten(1))
        self.forwards.append((torch.is_autocast_enabled("cpu"), out.dtype))
        if out.requires_grad:
            out.register_hook(lambda g: self.backwards.append(torch.is_autocast_enabled("cpu")))
        return out


def _amp_run(tmp_path, amp):
    import numpy as np

    from continual import streams
    from continual.runner import Runner
    from continual.strategies.naive import Naive

    stream = streams.class_incremental("digits", n_tasks=5, batch_size=10, seed=0)
    model = _AmpSpy(int(np.prod(stream.input_shape)), stream.n_classes)
    runner = Runner(stream, Naive(model, lr=0.05), out_dir=str(tmp_path / str(amp)), amp=amp)
    return runner, runner.run(), model


def test_amp_bf16_runs_each_training_forward_in_bf16_and_backward_and_eval_in_fp32(tmp_path):
    runner, summary, model = _amp_run(tmp_path, "bf16")
    training = [f for f in model.forwards if f[0]]
    assert training and all(dtype == torch.bfloat16 for _, dtype in training)
    assert len(training) == summary["steps"]  # one autocast forward per step; the rest is eval
    assert all(dtype == torch.float32 for on, dtype in model.forwards if not on)
    assert model.backwards == [False] * len(training)  # guarded_step: autocast off in backward
    assert all(p.dtype == torch.float32 for p in model.parameters())  # master weights stay fp32
    assert runner.fingerprint()["amp"] == "bfloat16"
    assert summary["acc"] > 0.1  # learned something in bf16


def test_amp_off_leaves_everything_fp32_and_the_fingerprint_as_before(tmp_path):
    runner, _, model = _amp_run(tmp_path, False)
    assert model.forwards and all(not on and dtype == torch.float32 for on, dtype in model.forwards)
    assert "amp" not in runner.fingerprint()  # fp32 checkpoints written before amp existed resume


@pytest.mark.parametrize("bad, hint", [("fp16", "gradient scaler"), ("yes", "amp must be one of")])
def test_amp_refuses_what_it_cannot_do(bad, hint):
    from continual.runner import amp_dtype

    with pytest.raises(ConfigError, match=hint):
        amp_dtype(bad)
    assert amp_dtype("false") is None and amp_dtype(False) is None
    assert amp_dtype("BF16") is torch.bfloat16
