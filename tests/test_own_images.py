"""A user's own images (stream.dataset=folder|npz|hf_disk with stream.dataset_root): every image
stream generator reads them, labels become 0..C-1 in a documented order (recorded in the dataset's
metadata), the shaping options work, and bad data is refused with a ConfigError before training."""

import doctest
import importlib.util
import json
import sys
import types
from pathlib import Path

import numpy as np
import pytest
import torch
from _cli import run_continual

from continual.streams import class_incremental, domain_incremental
from continual.streams import image_sources as sources
from continual.streams.datasets import from_arrays
from continual.streams.image_sources import load_image_source, shape_images
from continual.types import ConfigError

HAS_DATASETS = importlib.util.find_spec("datasets") is not None
SHADES = {"zebra": 10, "ant": 90, "moth": 170, "cat": 250}  # each class's pixel value: labels are readable


def save_png(path: Path, shade: int, size=(8, 8), mode: str = "L") -> None:
    """A PNG of ``size`` (H, W) whose every pixel is ``shade``."""
    from PIL import Image

    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(np.full((*size, 3) if mode == "RGB" else size, shade, dtype=np.uint8), mode).save(path)


def make_folder(root: Path, shades: dict[str, int] = SHADES, per_class: int = 8, size=(8, 8),
                mode: str = "L") -> Path:
    """Class folders of PNGs; every pixel of class c's images is shades[c]."""
    for name, shade in shades.items():
        for i in range(per_class):
            save_png(root / name / f"{i}.png", shade, size, mode)
    return root


def make_npz(path: Path, labels=(10, 3, 7, 5), per_class: int = 8, **extra) -> Path:
    """x (N, 8, 8) uint8 whose pixels are 20 * the label, y the labels."""
    y = np.repeat(np.array(labels), per_class)
    x = np.repeat((20 * y).astype(np.uint8)[:, None, None], 8, 1).repeat(8, 2)
    np.savez(path, **{"x": x, "y": y, **extra})
    return path


# ---------------------------------------------------------------------------- labels
def test_folder_labels_are_the_sorted_class_names(tmp_path):
    d = load_image_source("folder", make_folder(tmp_path / "pets"), seed=0)
    assert d.metadata["classes"] == ["ant", "cat", "moth", "zebra"]
    for label, name in enumerate(d.metadata["classes"]):
        assert torch.all(d.x_train[d.y_train == label] == SHADES[name] / 255)
        assert torch.all(d.x_test[d.y_test == label] == SHADES[name] / 255)


def test_npz_labels_are_the_sorted_unique_labels(tmp_path):
    d = load_image_source("npz", make_npz(tmp_path / "toy.npz"), seed=0)
    assert d.metadata["classes"] == [3, 5, 7, 10] and d.n_classes == 4
    # label i is original label classes[i]: its pixels are 20 * that label
    for label, original in enumerate(d.metadata["classes"]):
        assert torch.allclose(d.x_train[d.y_train == label], torch.tensor(20 * original / 255))


def test_the_dataset_is_named_after_its_file_or_folder(tmp_path):
    assert load_image_source("npz", make_npz(tmp_path / "my data.npz"), seed=0).name == "my_data"
    assert class_incremental("folder", dataset_root=str(make_folder(tmp_path / "pets")), n_tasks=2).name == "split_pets"


# ---------------------------------------------------------------------------- splits
def test_a_held_out_test_split_takes_test_fraction_of_each_class_by_the_seed(tmp_path):
    root = make_folder(tmp_path / "pets")
    d = load_image_source("folder", root, seed=0, test_fraction=0.25)
    assert torch.bincount(d.y_test).tolist() == [2, 2, 2, 2] and torch.bincount(d.y_train).tolist() == [6] * 4


def test_the_held_out_images_depend_on_the_seed_alone(tmp_path):
    x = np.arange(32, dtype=np.float32)[:, None, None] * np.ones((1, 8, 8), np.float32)  # image i: pixels i
    np.savez(tmp_path / "toy.npz", x=x, y=np.arange(32) % 4)
    held = [set(load_image_source("npz", tmp_path / "toy.npz", seed=s, test_fraction=0.5).x_test[:, 0, 0, 0].tolist())
            for s in (0, 0, 1)]
    assert held[0] == held[1] != held[2] and len(held[0]) == 16


def test_train_and_test_folders_are_used_as_given(tmp_path):
    make_folder(tmp_path / "pets" / "train", per_class=5)
    make_folder(tmp_path / "pets" / "test", {"ant": 90, "cat": 250}, per_class=2)
    d = load_image_source("folder", tmp_path / "pets", seed=0)
    assert d.x_train.shape[0] == 20 and torch.bincount(d.y_test, minlength=4).tolist() == [2, 2, 0, 0]
    assert torch.all(d.x_test[d.y_test == 1] == 250 / 255)  # cat is label 1 in both splits


def test_npz_x_test_and_y_test_are_the_test_split(tmp_path):
    path = make_npz(tmp_path / "toy.npz", x_test=np.zeros((3, 8, 8), np.uint8), y_test=np.array([3, 10, 10]))
    d = load_image_source("npz", path, seed=0)
    assert d.x_train.shape == (32, 1, 8, 8) and d.y_test.tolist() == [0, 3, 3]


# ---------------------------------------------------------------------------- pixels and shaping
def test_channels_last_uint8_images_become_contiguous_float32_in_0_1(tmp_path):
    x = np.full((8, 5, 6, 3), 255, np.uint8)
    np.savez(tmp_path / "rgb.npz", x=x, y=np.arange(8) % 2)
    d = load_image_source("npz", tmp_path / "rgb.npz", seed=0)
    assert d.x_train.shape[1:] == (3, 5, 6) and d.x_train.dtype == torch.float32
    assert d.x_train.is_contiguous() and d.x_train.max() == 1.0


def test_image_size_and_color_when_reading_a_folder(tmp_path):
    make_folder(tmp_path / "pets", {"ant": 90}, size=(8, 8), mode="RGB")
    make_folder(tmp_path / "pets", {"cat": 250}, size=(6, 10), mode="L")
    d = load_image_source("folder", tmp_path / "pets", seed=0, image_size=[4, 5], color="gray")
    assert d.input_shape == (1, 4, 5)
    assert load_image_source("folder", tmp_path / "pets", seed=0, image_size=4, color="rgb").input_shape == (3, 4, 4)


def test_a_folder_of_gray_and_colour_images_reads_as_rgb_and_of_gray_ones_as_gray(tmp_path):
    make_folder(tmp_path / "pets", {"ant": 90, "cat": 250}, per_class=3, mode="L")
    assert load_image_source("folder", tmp_path / "pets", seed=0).input_shape == (1, 8, 8)
    save_png(tmp_path / "pets" / "cat" / "colour.png", 250, mode="RGB")
    assert load_image_source("folder", tmp_path / "pets", seed=0).input_shape == (3, 8, 8)


def test_shape_images_resizes_converts_and_normalises_on_the_training_split():
    g = torch.Generator().manual_seed(0)
    d = from_arrays(torch.rand(20, 3, 8, 8, generator=g), torch.arange(20) % 2,
                    torch.rand(6, 3, 8, 8, generator=g), torch.arange(6) % 2)
    shaped = shape_images(d, image_size=[4, 4], color="gray", normalize=True)
    assert shaped.input_shape == (1, 4, 4)
    assert shaped.x_train.mean().abs() < 1e-5 and (shaped.x_train.std() - 1).abs() < 1e-4
    assert shaped.metadata["mean"] and shaped.metadata["std"]
    given = shape_images(d, normalize=True, mean=0.5, std=[0.25, 0.25, 0.25])
    assert torch.allclose(given.x_test, (d.x_test - 0.5) / 0.25)
    assert shape_images(d) is d


def test_the_generators_take_the_image_options(tmp_path):
    root = str(make_folder(tmp_path / "pets"))
    split = class_incremental("folder", dataset_root=root, n_tasks=2, image_size=6, normalize=True)
    assert [t.classes for t in split.tasks] == [[0, 1], [2, 3]] and split.input_shape == (1, 6, 6)
    rotated = domain_incremental("folder", dataset_root=root, n_tasks=2, kind="rotated", color="rgb")
    assert rotated.n_classes == 4 and rotated.input_shape == (3, 8, 8)


def test_the_stream_configs_take_the_image_options(tmp_path):
    from hydra import compose, initialize_config_module

    from continual.config import instantiate_checked, register_configs

    path = make_npz(tmp_path / "toy.npz")
    register_configs()
    with initialize_config_module(config_module="continual.conf", version_base="1.3"):
        for name in ("split_mnist", "permuted_mnist", "rotated_mnist", "blurry_split_mnist", "split_cifar10",
                     "taskfree_split_fashion_mnist", "task_split_mnist"):
            cfg = compose(config_name="config", overrides=[
                f"stream={name}", "stream.dataset=npz", f"stream.dataset_root={path}", "stream.n_tasks=2",
                "stream.image_size=[10,10]", "stream.normalize=true", "stream.test_fraction=0.25"])
            stream = instantiate_checked(cfg.stream, "stream", seed=0)
            assert stream.n_tasks == 2 and stream.n_classes == 4 and stream.input_shape == (1, 10, 10), name


def test_the_module_examples_run():
    assert doctest.testmod(sources).failed == 0


# ---------------------------------------------------------------------------- refusals
def test_a_missing_path_is_refused(tmp_path):
    with pytest.raises(ConfigError, match=r"stream.dataset_root=.*nowhere does not exist; stream.dataset=npz expects"):
        load_image_source("npz", tmp_path / "nowhere", seed=0)
    with pytest.raises(ConfigError, match=r"give stream.dataset_root=<path>"):
        class_incremental("folder", n_tasks=2)


def test_a_folder_with_one_class_is_refused(tmp_path):
    with pytest.raises(ConfigError, match=r"has 1 class .*needs at least 2"):
        load_image_source("folder", make_folder(tmp_path / "pets", {"ant": 90}), seed=0)


def test_hidden_folders_are_not_classes_and_an_empty_class_folder_is_refused(tmp_path):
    root = make_folder(tmp_path / "pets", {"ant": 90, "cat": 250})
    save_png(root / ".ipynb_checkpoints" / "0.png", 0)
    save_png(root / "ant" / "._0.png", 0)
    d = load_image_source("folder", root, seed=0)
    assert d.metadata["classes"] == ["ant", "cat"] and d.x_train.shape[0] + d.x_test.shape[0] == 16
    (root / "emu").mkdir()
    with pytest.raises(ConfigError, match=r"the class folder .*emu holds no images \(.jpg"):
        load_image_source("folder", root, seed=0)


def test_images_of_mixed_sizes_without_image_size_are_refused(tmp_path):
    make_folder(tmp_path / "pets", {"ant": 90}, size=(8, 8))
    make_folder(tmp_path / "pets", {"cat": 250}, size=(6, 10))
    with pytest.raises(ConfigError, match=r"different sizes: 6x10 \(8 images, e.g. cat/0.png\), 8x8 .*"
                                          r"set stream.image_size=\[H,W\]"):
        load_image_source("folder", tmp_path / "pets", seed=0)


def test_an_npz_without_x_or_y_is_refused(tmp_path):
    np.savez(tmp_path / "bad.npz", images=np.zeros((4, 8, 8)), y=np.arange(4))
    with pytest.raises(ConfigError, match=r"has no array 'x' \(it has \['images', 'y'\]\); save the images as x"):
        load_image_source("npz", tmp_path / "bad.npz", seed=0)


def test_mismatched_lengths_are_refused(tmp_path):
    np.savez(tmp_path / "bad.npz", x=np.zeros((4, 8, 8)), y=np.arange(3))
    with pytest.raises(ConfigError, match="x has 4 items but y has 3 labels"):
        load_image_source("npz", tmp_path / "bad.npz", seed=0)


def test_labels_that_are_not_integers_are_refused(tmp_path):
    np.savez(tmp_path / "bad.npz", x=np.zeros((4, 8, 8)), y=np.array([0.5, 1, 0, 1]))
    with pytest.raises(ConfigError, match="y holds float64 values, not integer labels"):
        load_image_source("npz", tmp_path / "bad.npz", seed=0)


def test_pickled_arrays_are_refused(tmp_path):
    np.savez(tmp_path / "bad.npz", x=np.array([{"a": 1}] * 4, dtype=object), y=np.arange(4))
    with pytest.raises(ConfigError, match="save plain numeric arrays"):
        load_image_source("npz", tmp_path / "bad.npz", seed=0)


def test_bad_image_options_are_refused(tmp_path):
    path = make_npz(tmp_path / "toy.npz")
    with pytest.raises(ConfigError, match=r"stream.image_size=\[0, 4\]: give an int"):
        load_image_source("npz", path, seed=0, image_size=[0, 4])
    with pytest.raises(ConfigError, match="choose gray, rgb or null"):
        load_image_source("npz", path, seed=0, color="sepia")
    with pytest.raises(ConfigError, match="read only with stream.normalize=true"):
        class_incremental("npz", dataset_root=str(path), n_tasks=2, mean=0.5)
    with pytest.raises(ConfigError, match="test_fraction .* in \\(0, 1\\)"):
        load_image_source("npz", path, seed=0, test_fraction=1.0)


def test_hf_disk_without_datasets_names_the_install(tmp_path, monkeypatch):
    monkeypatch.setitem(sys.modules, "datasets", None)  # import datasets raises ImportError
    with pytest.raises(ConfigError, match="pip install datasets"):
        load_image_source("hf_disk", tmp_path, seed=0)


# ---------------------------------------------------------------------------- hf_disk, on a stand-in
class _Column:
    def __init__(self, dtype: str, names=None) -> None:
        self.dtype, self.names = dtype, names

    def __repr__(self) -> str:
        return f"Value('{self.dtype}')"


class _FakeSplit:
    """What load_hf_disk reads of a datasets.Dataset: column names, features, columns."""

    def __init__(self, columns: dict, features: dict) -> None:
        self.columns, self.features, self.column_names = columns, features, list(columns)

    def __getitem__(self, column: str):
        return self.columns[column]


def _fake_datasets(monkeypatch, loaded) -> None:
    module = types.ModuleType("datasets")
    module.DatasetDict = dict
    module.load_from_disk = lambda path: loaded
    monkeypatch.setitem(sys.modules, "datasets", module)


def test_hf_disk_class_label_names_are_recorded_in_label_order(tmp_path, monkeypatch):
    from PIL import Image

    names = ["zero", "one", "two"]
    labels = [2, 0, 2, 0] * 3
    images = [Image.fromarray(np.full((5, 5), 40 * v, np.uint8)) for v in labels]
    split = _FakeSplit({"img": images, "kind": labels}, {"kind": _Column("int64", names), "img": None})
    _fake_datasets(monkeypatch, {"train": split})
    d = load_image_source("hf_disk", tmp_path, seed=0, image_column="img", label_column="kind")
    assert d.metadata["classes"] == ["zero", "two"] and d.input_shape == (1, 5, 5)
    assert torch.all(d.x_train[d.y_train == 1] == 80 / 255)


def test_hf_disk_refuses_a_label_column_that_is_not_integer(tmp_path, monkeypatch):
    split = _FakeSplit({"image": [np.zeros((4, 4))] * 4, "label": ["a", "b", "a", "b"]},
                       {"label": _Column("string")})
    _fake_datasets(monkeypatch, split)
    with pytest.raises(ConfigError, match=r"label column 'label' holds Value\('string'\), not integer labels"):
        load_image_source("hf_disk", tmp_path, seed=0)
    with pytest.raises(ConfigError, match=r"no column 'picture' \(columns: \['image', 'label'\]\); .*image_column"):
        load_image_source("hf_disk", tmp_path, seed=0, image_column="picture")


# ---------------------------------------------------------------------------- through the CLI
def _hf_dataset(root: Path) -> Path:
    import datasets
    from PIL import Image

    labels = [c for c in range(4) for _ in range(8)]
    data = {"image": [Image.fromarray(np.full((8, 8), 60 * c, np.uint8)) for c in labels], "label": labels}
    features = datasets.Features({"image": datasets.Image(), "label": datasets.ClassLabel(names=list("abcd"))})
    datasets.Dataset.from_dict(data, features=features).save_to_disk(str(root))
    return root


SOURCES = {
    "folder": lambda tmp: make_folder(tmp / "pets"),
    "npz": lambda tmp: make_npz(tmp / "toy.npz"),
    "hf_disk": _hf_dataset,
}


@pytest.mark.slow
@pytest.mark.parametrize("stream", ["split_mnist", "permuted_mnist"])
@pytest.mark.parametrize("source", list(SOURCES))
def test_own_images_run_through_the_cli(source, stream, tmp_path):
    if source == "hf_disk" and not HAS_DATASETS:
        pytest.skip("Hugging Face datasets is not installed here (pip install datasets)")
    from continual.models import build_model

    root = SOURCES[source](tmp_path / "data" if source == "hf_disk" else tmp_path)
    r = run_continual(f"stream={stream}", f"stream.dataset={source}", f"stream.dataset_root={root}",
                      "stream.n_tasks=2", "model=mlp", "strategy=naive", "log.console=false",
                      f"hydra.run.dir={tmp_path}/run", cwd=tmp_path)
    assert r.returncode == 0, r.stderr[-3000:]
    rows = (tmp_path / "run" / "scores.csv").read_text().splitlines()
    assert rows[0].split(",") == ["step", "samples_seen", "kind", "task_0", "task_1"]
    assert [row.split(",")[2] for row in rows[1:]] == ["init", "task_end", "task_end"]
    summary = json.loads((tmp_path / "run" / "summary.json").read_text())
    assert summary["n_tasks"] == 2 and summary["stream"].startswith(stream.split("_")[0] + "_")
    four_classes = sum(p.numel() for p in build_model("mlp", (1, 8, 8), 4).parameters())
    assert summary["params"] == four_classes  # the head has one output per class: 4
