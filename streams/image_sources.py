"""A user's own images as a ``Dataset``: a folder of class folders, an ``.npz``, or a dataset saved
with Hugging Face ``datasets`` (``save_to_disk``); and the options that shape any image dataset
(size, colour, normalisation), so every stream generator takes them unchanged.

Labels are remapped to 0..C-1 in a fixed order: the sorted class-folder names (``folder``), the
sorted unique labels (``npz``, ``hf_disk``). ``Dataset.metadata["classes"][i]`` is what label ``i``
was in the files (a folder name, or the original label; an ``hf_disk`` ``ClassLabel`` column gives
its names), and the loader logs the mapping (the run's ``continual.log``).

Without a test split of its own (``train/`` and ``test/`` folders, ``x_test``/``y_test`` arrays, a
``test`` split), ``test_fraction`` of each class is held out for testing, drawn with the seed.
Pixels: 8- and 16-bit images are scaled to [0, 1]; float arrays are kept as they are.

Examples:
    >>> import numpy as np, tempfile, os
    >>> path = os.path.join(tempfile.mkdtemp(), "toy.npz")
    >>> x = np.zeros((8, 4, 4), dtype=np.uint8)
    >>> np.savez(path, x=x, y=np.array([7, 3] * 4))
    >>> d = load_image_source("npz", path, seed=0, test_fraction=0.25)
    >>> d.metadata["classes"], d.n_classes, tuple(d.x_train.shape), tuple(d.x_test.shape)
    ([3, 7], 2, (6, 1, 4, 4), (2, 1, 4, 4))
"""

from __future__ import annotations

import logging
import re
import zipfile
from collections.abc import Iterable, Iterator
from contextlib import nullcontext
from dataclasses import replace
from pathlib import Path
from typing import Any

import numpy as np
import torch

from continual.streams.datasets import IMAGE_SOURCES, Dataset, from_arrays
from continual.types import ConfigError

log = logging.getLogger(__name__)

IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png", ".ppm", ".bmp", ".pgm", ".tif", ".tiff", ".webp")  # ImageFolder's
GRAY_MODES = ("1", "L", "LA", "I", "I;16", "I;16B", "I;16L", "F")  # PIL modes read as one channel
LUMA = (0.299, 0.587, 0.114)  # ITU-R 601-2, as PIL's convert("L")


# ---------------------------------------------------------------------------- the sources
def load_image_source(
    source: str, root: str | Path | None, *, seed: int = 0, test_fraction: float = 0.2,
    image_size: int | list[int] | None = None, color: str | None = None,
    image_column: str = "image", label_column: str = "label",
) -> Dataset:
    """Read ``source`` (``folder``, ``npz`` or ``hf_disk``) at ``root``; see the module docstring."""
    if source not in IMAGE_SOURCES:
        raise ConfigError(f"unknown image source {source!r}; choose one of {list(IMAGE_SOURCES)}")
    if root is None:
        raise ConfigError(f"stream.dataset={source} reads your own images: give stream.dataset_root=<path> "
                          f"({_WHAT[source]})")
    path = Path(root).expanduser()
    if not path.exists():
        raise ConfigError(f"stream.dataset_root={root} does not exist; stream.dataset={source} "
                          f"expects {_WHAT[source]}")
    if not 0.0 < test_fraction < 1.0:
        raise ConfigError(f"test_fraction is the share of each class held out for testing, in (0, 1), "
                          f"got {test_fraction}; use e.g. 0.2")
    size, color = image_size_hw(image_size), _color(color)
    if source == "folder":
        d = load_folder(path, seed=seed, test_fraction=test_fraction, image_size=size, color=color)
    elif source == "npz":
        d = load_npz(path, seed=seed, test_fraction=test_fraction)
    else:
        d = load_hf_disk(path, seed=seed, test_fraction=test_fraction, image_size=size, color=color,
                         image_column=image_column, label_column=label_column)
    log.info("%s %s: %d classes; labels 0..%d are %s", source, path, d.n_classes, d.n_classes - 1,
             d.metadata["classes"])
    return d


_WHAT = {
    "folder": "a folder with one sub-folder of images per class (optionally inside train/ and test/)",
    "npz": "an .npz file with arrays x and y (optionally x_test and y_test)",
    "hf_disk": "a folder written by Hugging Face datasets' save_to_disk, with image and label columns",
}


def load_folder(root: str | Path, *, seed: int, test_fraction: float, image_size: tuple[int, int] | None = None,
                color: str | None = None) -> Dataset:
    """Class sub-folders of images (torchvision's ``ImageFolder`` layout), or ``train/`` and
    ``test/`` folders that each hold them; labels: the sorted class names."""
    root = Path(root)
    if not root.is_dir():
        raise ConfigError(f"stream.dataset=folder expects a folder, but {root} is a file; "
                          f"for an .npz use stream.dataset=npz")
    split = (root / "train").is_dir() and (root / "test").is_dir()
    classes, train = _image_files(root / "train" if split else root)
    _refuse_one_class(root, classes, "class folders")
    if split:
        test_classes, test = _image_files(root / "test")
        unknown = sorted(set(test_classes) - set(classes))
        if unknown:
            raise ConfigError(f"{root / 'test'} has classes {unknown} that {root / 'train'} does not; "
                              "every test class needs training images")
        label_of = {c: i for i, c in enumerate(classes)}
        test = [(p, label_of[test_classes[label]]) for p, label in test]
    files = train + (test if split else [])
    pixels = _pil_pixels(((str(p.relative_to(root)), p) for p, _ in files), image_size, color)
    labels = np.array([label for _, label in files], dtype=np.int64)
    if split:
        n = len(train)
        parts = (pixels[:n], labels[:n], pixels[n:], labels[n:])
    else:
        parts = _hold_out(pixels, labels, test_fraction, seed, root)
    return _dataset(root, "folder", parts, classes)


def load_npz(root: str | Path, *, seed: int, test_fraction: float) -> Dataset:
    """An ``.npz`` with ``x`` (N, H, W), (N, H, W, C), (N, C, H, W) or vectors (N, D), labels ``y``
    (N,), and optionally ``x_test`` and ``y_test``; read with ``allow_pickle=False``."""
    root = Path(root)
    if root.is_dir():
        raise ConfigError(f"stream.dataset=npz expects an .npz file, but {root} is a folder; "
                          "for class folders use stream.dataset=folder")
    try:
        with np.load(root, allow_pickle=False) as z:
            arrays = {k: z[k] for k in z.files}
    except ValueError as e:  # object arrays need pickle, which we refuse
        raise ConfigError(f"{root}: {e}; save plain numeric arrays (np.savez(path, x=..., y=...))") from None
    except (OSError, zipfile.BadZipFile) as e:
        raise ConfigError(f"{root} is not a readable .npz file ({e}); write one with np.savez(path, x=..., y=...)"
                          ) from None
    missing = [k for k in ("x", "y") if k not in arrays]
    if missing:
        raise ConfigError(f"{root} has no array {' or '.join(map(repr, missing))} (it has {sorted(arrays)}); "
                          "save the images as x and their labels as y: np.savez(path, x=..., y=...)")
    if ("x_test" in arrays) != ("y_test" in arrays):
        raise ConfigError(f"{root} has only one of x_test and y_test; give both, or neither (then "
                          f"test_fraction of each class is held out)")
    for xk, yk in (("x", "y"), ("x_test", "y_test")):
        if xk in arrays and len(arrays[xk]) != len(arrays[yk]):
            raise ConfigError(f"{root}: {xk} has {len(arrays[xk])} items but {yk} has {len(arrays[yk])} labels; "
                              "give one label per image")
    x = _pixels_from_array(arrays["x"], f"{root}: x")
    if "x_test" in arrays:
        x_test = _pixels_from_array(arrays["x_test"], f"{root}: x_test")
        y, y_test = (_integer_labels(arrays[k], f"{root}: {k}") for k in ("y", "y_test"))
        classes, (y, y_test) = _remap(root, y, y_test)
        parts = (x, y, x_test, y_test)
    else:
        classes, (y,) = _remap(root, _integer_labels(arrays["y"], f"{root}: y"))
        parts = _hold_out(x, y, test_fraction, seed, root)
    return _dataset(root, "npz", parts, classes)


def load_hf_disk(root: str | Path, *, seed: int, test_fraction: float, image_size: tuple[int, int] | None = None,
                 color: str | None = None, image_column: str = "image", label_column: str = "label") -> Dataset:
    """A ``datasets.Dataset`` or ``DatasetDict`` (its ``train`` and, if there, ``test`` splits) saved
    with ``save_to_disk``; images in ``image_column`` (PIL images or arrays), integer labels (a
    ``ClassLabel`` or an integer ``Value``) in ``label_column``."""
    root = Path(root)
    try:
        import datasets
    except ImportError:
        raise ConfigError("stream.dataset=hf_disk reads a dataset saved with Hugging Face datasets, which is "
                          "not installed: pip install datasets") from None
    try:
        loaded = datasets.load_from_disk(str(root))
    except (FileNotFoundError, ValueError) as e:
        raise ConfigError(f"{root} is not a dataset saved with datasets' save_to_disk ({e})") from None
    if isinstance(loaded, datasets.DatasetDict):
        if "train" not in loaded:
            raise ConfigError(f"{root} holds the splits {sorted(loaded)} but no 'train' split; "
                              "save the training data as the 'train' split")
        train, test = loaded["train"], loaded["test"] if "test" in loaded else None
    else:
        train, test = loaded, None
    for column, option in ((image_column, "image_column"), (label_column, "label_column")):
        for part in (train, test):
            if part is not None and column not in part.column_names:
                raise ConfigError(f"{root} has no column {column!r} (columns: {part.column_names}); "
                                  f"name yours with stream.{option}=<column>")
    parts = [_hf_split(root, part, image_column, label_column, image_size, color)
             for part in (train, test) if part is not None]
    feature = train.features[label_column]
    names = getattr(feature, "names", None)  # a ClassLabel column names its labels
    if test is None:
        classes, (y,) = _remap(root, parts[0][1])
        split = _hold_out(parts[0][0], y, test_fraction, seed, root)
    else:
        (x, y), (x_test, y_test) = parts
        if x.shape[1:] != x_test.shape[1:]:
            x, x_test = _same_channels(x, x_test)
        classes, (y, y_test) = _remap(root, y, y_test)
        split = (x, y, x_test, y_test)
    return _dataset(root, "hf_disk", split, [names[c] for c in classes] if names else classes)


def _hf_split(root: Path, part: Any, image_column: str, label_column: str,
              image_size: tuple[int, int] | None, color: str | None) -> tuple[np.ndarray, np.ndarray]:
    dtype = str(getattr(part.features[label_column], "dtype", ""))
    if not re.fullmatch(r"u?int\d+", dtype):
        raise ConfigError(f"{root}: label column {label_column!r} holds {part.features[label_column]}, not "
                          "integer labels; encode it first (dataset.class_encode_column"
                          f"({label_column!r})) or name another with stream.label_column=<column>")
    labels = np.asarray(list(part[label_column]), dtype=np.int64)
    images = list(part[image_column])  # datasets >= 4 hands back a lazy Column
    if images and hasattr(images[0], "getbands"):  # PIL images: the datasets Image feature
        return _pil_pixels(((f"row {i}", im) for i, im in enumerate(images)), image_size, color), labels
    try:
        array = np.asarray(images)
    except ValueError:
        raise ConfigError(f"{root}: column {image_column!r} holds arrays of different shapes; save them at one "
                          "size, or as images (datasets.Image) and set stream.image_size") from None
    return _pixels_from_array(array, f"{root}: column {image_column!r}"), labels


# ---------------------------------------------------------------------------- files and pixels
def _image_files(folder: Path) -> tuple[list[str], list[tuple[Path, int]]]:
    """The sorted class names and (file, label) of every image below them, sorted by path: the
    layout of torchvision's ``ImageFolder`` (read without importing torchvision, which takes seconds);
    hidden files and folders (``.ipynb_checkpoints``, ``._x.png``) are left out."""
    classes = sorted(e.name for e in folder.iterdir() if e.is_dir() and not e.name.startswith("."))
    if not classes:
        raise ConfigError(f"{folder} has no class folders; put each class's images in a sub-folder named "
                          f"after the class ({folder}/<class>/<image>.png)")
    found = []
    for label, name in enumerate(classes):
        files = sorted(p for p in (folder / name).rglob("*") if p.suffix.lower() in IMAGE_EXTENSIONS
                       and p.is_file() and not any(part.startswith(".") for part in p.relative_to(folder).parts))
        if not files:
            raise ConfigError(f"the class folder {folder / name} holds no images ({', '.join(IMAGE_EXTENSIONS)}); "
                              "add some, or remove the folder")
        found += [(p, label) for p in files]
    return classes, found


def _pil_pixels(images: Iterable[tuple[str, Any]], image_size: tuple[int, int] | None,
                color: str | None) -> np.ndarray:
    """(N, C, H, W) uint8 pixels of PIL images or image paths, given as (name, image) pairs:
    converted to ``color`` (as stored: gray when every image is), resized to ``image_size``."""
    from PIL import Image

    arrays, names = [], []
    for name, image in images:
        with Image.open(image) if isinstance(image, Path) else nullcontext(image) as im:
            mode = {"gray": "L", "rgb": "RGB"}.get(color or "", "L" if im.mode in GRAY_MODES else "RGB")
            im = im.convert(mode)
            if image_size is not None and im.size != image_size[::-1]:
                im = im.resize(image_size[::-1], Image.Resampling.BILINEAR)
            a = np.asarray(im, dtype=np.uint8)
        arrays.append(a[None] if a.ndim == 2 else a.transpose(2, 0, 1))
        names.append(name)
    sizes: dict[tuple[int, int], list[str]] = {}
    for a, name in zip(arrays, names):
        sizes.setdefault(a.shape[1:], []).append(name)
    if len(sizes) > 1:
        found = ", ".join(f"{h}x{w} ({len(n)} images, e.g. {n[0]})" for (h, w), n in sorted(sizes.items()))
        raise ConfigError(f"the images have different sizes: {found}; set stream.image_size=[H,W] (or an "
                          "int for squares) to resize them all")
    if len({a.shape[0] for a in arrays}) > 1:  # gray and colour images mixed: all as RGB
        arrays = [np.repeat(a, 3, axis=0) if a.shape[0] == 1 else a for a in arrays]
    return np.stack(arrays)


def _pixels_from_array(x: np.ndarray, where: str) -> np.ndarray:
    """Images as (N, C, H, W) (or vectors (N, D)), C-contiguous; 8- and 16-bit pixels scaled to [0, 1]."""
    if not (np.issubdtype(x.dtype, np.number) or x.dtype == bool):
        raise ConfigError(f"{where} holds {x.dtype} values, not pixels; save numeric arrays")
    if x.ndim == 3:
        x = x[:, None]
    elif x.ndim == 4 and x.shape[1] not in (1, 3, 4):
        if x.shape[3] not in (1, 3, 4):
            raise ConfigError(f"{where} has shape {x.shape}: expected (N, H, W), (N, H, W, C) or (N, C, H, W) "
                              "with C 1, 3 or 4 channels")
        x = x.transpose(0, 3, 1, 2)  # channels last, as PIL and most image tools store them
    elif x.ndim not in (2, 4):
        raise ConfigError(f"{where} has shape {x.shape}: expected images (N, H, W), (N, H, W, C), "
                          "(N, C, H, W) or vectors (N, D)")
    if x.dtype in (np.uint8, np.uint16):
        return np.ascontiguousarray(x)  # scaled with the rest in _dataset
    return np.ascontiguousarray(x, dtype=np.float32)


def _as_float(x: np.ndarray) -> np.ndarray:
    """float32 pixels; uint8 and uint16 scaled to [0, 1] (as the built-in datasets are)."""
    if x.dtype in (np.uint8, np.uint16):
        return x.astype(np.float32) / np.float32(np.iinfo(x.dtype).max)
    return x


def _same_channels(*xs: np.ndarray) -> list[np.ndarray]:
    """Gray and colour splits read as stored: the gray one repeated to three channels."""
    if all(x.ndim == 4 for x in xs) and {x.shape[1] for x in xs} == {1, 3}:
        return [np.repeat(x, 3, axis=1) if x.shape[1] == 1 else x for x in xs]
    return list(xs)


# ---------------------------------------------------------------------------- labels and splits
def _integer_labels(y: np.ndarray, where: str) -> np.ndarray:
    y = y.reshape(-1) if y.ndim == 2 and y.shape[1] == 1 else y
    if y.ndim != 1:
        raise ConfigError(f"{where} has shape {y.shape}; expected one label per image (N,)")
    whole = np.issubdtype(y.dtype, np.integer) or (
        np.issubdtype(y.dtype, np.floating) and np.isfinite(y).all() and np.array_equal(y, np.round(y)))
    if not whole:
        raise ConfigError(f"{where} holds {y.dtype} values, not integer labels; give integer class ids "
                          "(e.g. np.unique(names, return_inverse=True)[1])")
    return y.astype(np.int64)


def _remap(root: Path, y: np.ndarray, *others: np.ndarray) -> tuple[list[int], list[np.ndarray]]:
    """The sorted unique training labels, and every label array as indices 0..C-1 into them."""
    classes = np.unique(y)
    _refuse_one_class(root, classes.tolist(), "labels")
    for other in others:
        unknown = np.setdiff1d(other, classes)
        if unknown.size:
            raise ConfigError(f"{root}: the test labels {unknown.tolist()[:10]} never occur in training; "
                              "every test class needs training images")
    return classes.tolist(), [np.searchsorted(classes, a) for a in (y, *others)]


def _refuse_one_class(root: Path, classes: list, what: str) -> None:
    if len(classes) < 2:
        raise ConfigError(f"{root} has {len(classes)} class ({what}: {classes}); a classification stream needs "
                          "at least 2 (for folders: one sub-folder of images per class)")


def _hold_out(x: np.ndarray, y: np.ndarray, test_fraction: float, seed: int,
              root: Path) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Hold ``test_fraction`` of each class out (at least one image, never all), drawn with ``seed``."""
    rng = np.random.default_rng(seed)
    test = np.zeros(len(y), dtype=bool)
    for c in np.unique(y):
        idx = np.flatnonzero(y == c)
        if idx.size < 2:
            raise ConfigError(f"{root}: class {c} has {idx.size} image; holding out a test split needs at least "
                              "2 per class (add images, or give a test split of your own)")
        rng.shuffle(idx)
        test[idx[: min(idx.size - 1, max(1, round(idx.size * test_fraction)))]] = True
    return x[~test], y[~test], x[test], y[test]


def _dataset(root: Path, source: str, parts: tuple[np.ndarray, ...], classes: list) -> Dataset:
    x_train, y_train, x_test, y_test = parts
    name = re.sub(r"[^A-Za-z0-9_-]+", "_", root.name.removesuffix(".npz")).strip("_") or source
    # as tensors, so that from_arrays copies them into torch's own 64-byte aligned memory (numpy's
    # is 16-byte aligned: a pool every batch is gathered from should be the built-in datasets' twin)
    x_train, x_test = (torch.from_numpy(_as_float(x)) for x in (x_train, x_test))
    d = from_arrays(x_train, torch.from_numpy(y_train), x_test, torch.from_numpy(y_test), name=name,
                    n_classes=len(classes))
    d.metadata = {"source": source, "root": str(root), "classes": classes}
    return d


# ---------------------------------------------------------------------------- shaping any image dataset
def image_size_hw(image_size: int | list[int] | tuple[int, ...] | None) -> tuple[int, int] | None:
    """``image_size`` (an int for squares, or [H, W]) as (H, W)."""
    if image_size is None:
        return None
    hw = [image_size] * 2 if isinstance(image_size, int) and not isinstance(image_size, bool) else image_size
    if not isinstance(hw, (list, tuple)) or len(hw) != 2 or not all(
            isinstance(v, int) and not isinstance(v, bool) and v > 0 for v in hw):
        raise ConfigError(f"stream.image_size={image_size!r}: give an int (square images) or [H,W] of positive "
                          "ints, e.g. stream.image_size=[32,32]")
    return int(hw[0]), int(hw[1])


def _color(color: str | None) -> str | None:
    if color not in (None, "gray", "rgb"):
        raise ConfigError(f"stream.color={color!r}: choose gray, rgb or null (as stored)")
    return color


def shape_images(d: Dataset, image_size: int | list[int] | None = None, color: str | None = None,
                 normalize: bool = False, mean: float | list[float] | None = None,
                 std: float | list[float] | None = None) -> Dataset:
    """``d`` with images (N, C, H, W) resized to ``image_size``, converted to ``color`` (``gray``:
    one channel, luma; ``rgb``: three) and, with ``normalize``, standardised per channel by
    ``mean``/``std`` (null: computed on the training split; recorded in ``metadata``). Returns
    ``d`` itself when there is nothing to do."""
    size, color = image_size_hw(image_size), _color(color)
    if not normalize and (mean is not None or std is not None):
        raise ConfigError("stream.mean and stream.std are read only with stream.normalize=true; set it, or "
                          "leave them null")
    if size is None and color is None and not normalize:
        return d
    if (size is not None or color is not None) and d.x_train.ndim != 4:
        raise ConfigError(f"dataset {d.name} has vector inputs of shape {d.input_shape}; image_size and color "
                          "apply to images (N, C, H, W) only")
    xs = [_reshape(x, size, color) for x in (d.x_train, d.x_test)]
    metadata = dict(d.metadata)
    if normalize:
        m, s = _moments(xs[0], mean, std)
        view = (1, -1) + (1,) * (xs[0].ndim - 2)
        xs = [((x - m.view(view)) / s.view(view)).contiguous() for x in xs]
        metadata.update(mean=m.tolist(), std=s.tolist())
    return replace(d, x_train=xs[0], x_test=xs[1], metadata=metadata)


def _reshape(x: torch.Tensor, size: tuple[int, int] | None, color: str | None) -> torch.Tensor:
    channels = x.shape[1]
    if color == "gray" and channels != 1:  # 2 channels: gray and alpha; 3 or 4: RGB(A)
        x = x[:, :1] if channels == 2 else (x[:, :3] * torch.tensor(LUMA).view(1, 3, 1, 1)).sum(1, keepdim=True)
    elif color == "rgb" and channels != 3:
        x = x[:, :1].expand(-1, 3, -1, -1) if channels < 3 else x[:, :3]
    if size is not None and tuple(x.shape[2:]) != size:
        x = torch.cat([torch.nn.functional.interpolate(chunk, size=size, mode="bilinear", antialias=True,
                                                       align_corners=False) for chunk in _chunks(x)])
    return x.contiguous()


def _chunks(x: torch.Tensor, n: int = 1024) -> Iterator[torch.Tensor]:
    return (x[i:i + n] for i in range(0, x.shape[0], n))


def _moments(x: torch.Tensor, mean: float | list[float] | None,
             std: float | list[float] | None) -> tuple[torch.Tensor, torch.Tensor]:
    """Per-channel (or per-feature for vectors) mean and std: given, else of the training split ``x``."""
    dims = [0, *range(2, x.ndim)]
    given = {"mean": mean, "std": std}
    out = []
    for key, value in given.items():
        if value is None:
            v = x.double().mean(dims) if key == "mean" else x.double().std(dims)
            v = v.float()
        else:
            v = torch.tensor([value] if isinstance(value, (int, float)) else list(value), dtype=torch.float32)
            if v.numel() not in (1, x.shape[1]):
                raise ConfigError(f"stream.{key} has {v.numel()} values but the images have {x.shape[1]} "
                                  f"channels; give 1 or {x.shape[1]}")
            v = v.expand(x.shape[1]).clone()
        out.append(v)
    m, s = out
    if (s <= 0).any():
        if std is not None:
            raise ConfigError(f"stream.std must be positive, got {std}")
        s = torch.where(s > 0, s, torch.ones_like(s))  # a constant channel: centred, not scaled
    return m, s
