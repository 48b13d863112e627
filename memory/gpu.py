"""Where a vector store runs: device names, FAISS's GPU resources and GPU copies of an index.

Split from ``continual.memory.vector_store`` (issue 21): everything here is about placing a
store's search on a device; the store itself never touches ``faiss.Standard*`` directly. Tests
replace ``faiss_gpu_count``, ``make_gpu_mirror``, ``make_gpu_index`` and ``new_gpu_resources``
to run the GPU code path on a machine without a GPU.
"""

from __future__ import annotations

from typing import Any

import faiss
import numpy as np
import torch

from continual.memory.indexes import TorchMirror
from continual.types import ConfigError

DEVICES = ("auto", "cpu", "cuda", "cuda:N")
#: the most neighbours FAISS's GPU k-selection returns (faiss/gpu/utils/DeviceDefs.cuh)
GPU_MAX_K = 2048


def parse_device(device: str) -> tuple[str, int | None]:
    """('auto' | 'cpu' | 'cuda', GPU index or None) of a device name; 'cuda:N' gives N."""
    name, _, index = str(device).partition(":")
    if name == "cuda" and index.isdigit():
        return "cuda", int(index)
    if index or name not in ("auto", "cpu", "cuda"):
        raise ConfigError(f"unknown device {device!r}; use one of {DEVICES}")
    return name, None


def resolve_device(device: str, num_gpus: int, kind: str = "flat") -> str:
    """'cpu' or 'cuda' for a requested ``device`` given how many GPUs FAISS sees
    (the GPU index of 'cuda:N' is read by ``parse_device``)."""
    device, _ = parse_device(device)
    if device == "cpu":
        return "cpu"
    if kind == "hnsw":
        if device == "cuda":
            raise ConfigError(
                "kind='hnsw' cannot run on the GPU (FAISS has no GPU HNSW); "
                "use device='cpu' or 'auto', or kind='flat'/'ivf' on the GPU"
            )
        return "cpu"
    if num_gpus > 0:
        return "cuda"
    if device == "cuda":
        raise ConfigError(
            "device='cuda' but FAISS sees no GPU (faiss.get_num_gpus() == 0); install "
            "faiss-gpu on a CUDA machine, or use device='auto' to fall back to the CPU"
        )
    return "cpu"


def faiss_gpu_count() -> int:
    return faiss.get_num_gpus()


def make_gpu_mirror(dim: int, metric: int, device_index: int) -> TorchMirror:
    """A mirror on GPU ``device_index`` searched by faiss.knn_gpu (bfKnn), on torch's
    current stream."""
    import faiss.contrib.torch_utils  # noqa: F401  (lets faiss.knn_gpu take torch tensors)

    if not torch.cuda.is_available():
        raise ConfigError(
            "FAISS sees a GPU but torch does not (torch.cuda.is_available() is False); "
            "install a CUDA build of torch or use device='cpu'"
        )
    resources = shared_gpu_resources()

    def knn(q: torch.Tensor, base: torch.Tensor, k: int) -> tuple[torch.Tensor, torch.Tensor]:
        return faiss.knn_gpu(resources, q, base, k, metric=metric, device=device_index)

    return TorchMirror(dim, torch.device("cuda", device_index), knn)


def make_gpu_index(index: Any, resources: Any, device_index: int) -> Any:
    """A copy of a CPU IVF index on GPU ``device_index`` with the same nprobe."""
    gpu = faiss.index_cpu_to_gpu(resources, device_index, index)
    gpu.nprobe = index.nprobe
    return gpu


def new_gpu_resources() -> Any:
    return faiss.StandardGpuResources()


_GPU_RESOURCES: Any = None


def shared_gpu_resources() -> Any:
    """The process's one FAISS ``StandardGpuResources`` (each reserves up to ~1.5 GiB of
    scratch memory outside torch's allocator, so every GPU store of the process shares it;
    it serves any GPU)."""
    global _GPU_RESOURCES
    if _GPU_RESOURCES is None:
        _GPU_RESOURCES = new_gpu_resources()
    return _GPU_RESOURCES


def on_device(index: np.ndarray, device: torch.device) -> torch.Tensor:
    """A host index array as a tensor on ``device``, copied without blocking."""
    return torch.from_numpy(index).to(device, non_blocking=True)


def saved_device(name: str) -> torch.device:
    """The device a saved tensor was on, when this process has it; else the CPU (a store
    saved on GPU 3 loads on a machine with fewer GPUs, or none)."""
    device = torch.device(name)
    if device.type != "cuda" or not torch.cuda.is_available():
        return torch.device("cpu")
    return device if (device.index or 0) < torch.cuda.device_count() else torch.device("cpu")
