"""Datasets for training: scikit-learn's digits, MNIST IDX files, `.npz` arrays, image folders.

Every loader returns the same `Dataset`: float32 samples and int64 labels, split into
train / validation / test. Images are (N, C, H, W) in [0, 1] (grayscale 28x28 unless
`image_size` / `channels` say otherwise); tabular rows (N, F) are kept exactly as given
(never rescaled or clipped). Specs::

    digits              scikit-learn's embedded 8x8 digits, resized to 28x28 (no download)
    mnist:DIR           IDX files (train-images-idx3-ubyte, ... optionally .gz) in DIR
    npz:PATH            a .npz with `y` (N,) and `x` (N, F) rows, (N, H, W) or (N, C, H, W) images
    folder:DIR          one subfolder per class, images read with Pillow (RGB when channels=3)
"""

from __future__ import annotations

import gzip
import struct
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from strato import DatasetError

__all__ = [
    "Dataset",
    "DatasetError",
    "Split",
    "load_dataset",
    "resize_images",
    "stratified_split",
]

IMAGE_SIDE = 28
_IMAGE_SUFFIXES = {".png", ".jpg", ".jpeg", ".bmp", ".gif", ".pgm", ".tif", ".tiff", ".webp"}


@dataclass(frozen=True)
class Split:
    """One split: `x` float32 (N, ...) samples, `y` int64 (N,) class indices."""

    x: np.ndarray[Any, Any]
    y: np.ndarray[Any, Any]

    def __post_init__(self) -> None:
        if self.x.dtype != np.float32 or self.y.dtype != np.int64:
            raise DatasetError(
                f"a split needs float32 images and int64 labels, got {self.x.dtype} and "
                f"{self.y.dtype}"
            )
        if len(self.x) != len(self.y):
            raise DatasetError(f"{len(self.x)} images but {len(self.y)} labels")

    def __len__(self) -> int:
        return len(self.y)


@dataclass(frozen=True)
class Dataset:
    """A named dataset with its three splits and the class labels (index → label text)."""

    name: str
    train: Split
    val: Split
    test: Split
    labels: tuple[str, ...]

    @property
    def input_shape(self) -> tuple[int, ...]:
        """Per-sample shape, e.g. (1, 28, 28)."""
        return tuple(int(d) for d in self.train.x.shape[1:])

    @property
    def num_classes(self) -> int:
        """How many classes the labels name."""
        return len(self.labels)

    def summary(self) -> dict[str, Any]:
        """Name, split sizes and shapes, as the CLI and the manifest report them."""
        return {
            "name": self.name,
            "train": len(self.train),
            "val": len(self.val),
            "test": len(self.test),
            "input_shape": list(self.input_shape),
            "labels": list(self.labels),
        }


def resize_images(images: np.ndarray[Any, Any], side: int = IMAGE_SIDE) -> np.ndarray[Any, Any]:
    """Bilinear resize of (N, H, W) images to (N, side, side), as two matrix products."""
    _, height, width = images.shape
    rows = _interpolation_matrix(height, side)
    cols = _interpolation_matrix(width, side)
    resized = np.einsum("ih,nhw,jw->nij", rows, images.astype(np.float32), cols)
    return np.asarray(resized, dtype=np.float32)


def _interpolation_matrix(source: int, target: int) -> np.ndarray[Any, Any]:
    # Align pixel centres (like PIL/OpenCV): target pixel i samples source (i + .5) * s/t - .5.
    matrix = np.zeros((target, source), np.float32)
    positions = (np.arange(target) + 0.5) * source / target - 0.5
    positions = np.clip(positions, 0, source - 1)
    low = np.floor(positions).astype(int)
    high = np.minimum(low + 1, source - 1)
    weight = positions - low
    matrix[np.arange(target), low] += 1 - weight
    matrix[np.arange(target), high] += weight
    return matrix


def stratified_split(
    y: np.ndarray[Any, Any], *, seed: int, val_fraction: float, test_fraction: float
) -> tuple[np.ndarray[Any, Any], np.ndarray[Any, Any], np.ndarray[Any, Any]]:
    """Indices of train / val / test, each class spread in proportion, reproducible by seed."""
    if not (0 < test_fraction < 1 and 0 < val_fraction < 1 and val_fraction + test_fraction < 1):
        raise DatasetError(
            f"val_fraction {val_fraction} and test_fraction {test_fraction} must each be in "
            "(0, 1) and sum to less than 1"
        )
    from sklearn.model_selection import train_test_split

    indices = np.arange(len(y))
    try:
        rest, test = train_test_split(
            indices, test_size=test_fraction, random_state=seed, stratify=y
        )
        train, val = train_test_split(
            rest,
            test_size=val_fraction / (1 - test_fraction),
            random_state=seed,
            stratify=y[rest],
        )
    except ValueError as exc:
        raise DatasetError(f"cannot split {len(y)} samples by class: {exc}") from exc
    return np.sort(train), np.sort(val), np.sort(test)


def load_dataset(
    spec: str,
    *,
    seed: int = 0,
    val_fraction: float = 0.15,
    test_fraction: float = 0.2,
    image_size: int | None = None,
    channels: int | None = None,
) -> Dataset:
    """Load `spec` (see the module docstring) and split it; `DatasetError` says what was expected.

    `image_size` (side in pixels) and `channels` (1 grayscale, 3 RGB) shape image datasets;
    unset, images become 1x28x28 as the reference models expect. Tabular data ignores both.
    """
    if image_size is not None and not 4 <= image_size <= 4096:
        raise DatasetError(f"image_size must be between 4 and 4096, got {image_size}")
    if channels not in (None, 1, 3):
        raise DatasetError(f"channels must be 1 (grayscale) or 3 (RGB), got {channels}")
    shape = _ImageShape(image_size or IMAGE_SIDE, channels or 1)
    kind, _, location = spec.partition(":")
    if kind == "digits" and not location:
        name, images, targets, labels = "digits", *_digits()
    elif kind == "mnist" and location:
        name, images, targets, labels = f"mnist:{location}", *_mnist(Path(location))
    elif kind == "npz" and location:
        name, images, targets, labels = f"npz:{location}", *_npz(Path(location))
    elif kind == "folder" and location:
        name, images, targets, labels = f"folder:{location}", *_folder(Path(location), shape)
    else:
        raise DatasetError(
            f"unknown dataset spec {spec!r}; expected 'digits', 'mnist:DIR', 'npz:PATH' "
            "or 'folder:DIR'"
        )
    x = _as_features(images) if images.ndim == 2 else _as_images(images, shape)
    y = targets.astype(np.int64)
    train, val, test = stratified_split(
        y, seed=seed, val_fraction=val_fraction, test_fraction=test_fraction
    )
    return Dataset(
        name=name,
        train=Split(x[train], y[train]),
        val=Split(x[val], y[val]),
        test=Split(x[test], y[test]),
        labels=labels,
    )


@dataclass(frozen=True)
class _ImageShape:
    side: int
    channels: int


def _as_features(rows: np.ndarray[Any, Any]) -> np.ndarray[Any, Any]:
    """Tabular (N, F) rows as float32, values untouched (negatives stay negative)."""
    if not np.issubdtype(rows.dtype, np.number) or np.issubdtype(rows.dtype, np.complexfloating):
        raise DatasetError(f"tabular x must be numeric, got {rows.dtype}")
    x = rows.astype(np.float32)
    if not np.isfinite(x).all():
        raise DatasetError("tabular x contains NaN or Inf")
    return x


def _as_images(images: np.ndarray[Any, Any], shape: _ImageShape) -> np.ndarray[Any, Any]:
    """(N, H, W) or (N, C, H, W) → float32 (N, channels, side, side); integer pixels / 255,
    float pixels above 1 scaled so the brightest is 1 (nothing is clipped)."""
    if images.ndim == 3:
        images = images[:, None]
    if images.ndim != 4:
        raise DatasetError(
            f"x shaped {images.shape}: expected (N, F) rows, (N, H, W) or (N, C, H, W) images"
        )
    if images.shape[1] not in (1, 3):
        raise DatasetError(
            f"images shaped {images.shape}: expected 1 or 3 channels on axis 1 (N, C, H, W)"
        )
    if np.issubdtype(images.dtype, np.integer):
        images = images.astype(np.float32) / 255.0
    images = images.astype(np.float32)
    peak = float(np.abs(images).max()) if images.size else 1.0
    if peak > 1.0:  # float pixels in some other range: scale the brightest to 1
        images = images / peak
    if images.shape[1] != shape.channels:
        images = (
            images.mean(axis=1, keepdims=True)
            if shape.channels == 1
            else np.repeat(images, shape.channels, axis=1)
        )
    if images.shape[2:] != (shape.side, shape.side):
        n, c, h, w = images.shape
        images = resize_images(images.reshape(n * c, h, w), shape.side).reshape(
            n, c, shape.side, shape.side
        )
    return np.ascontiguousarray(images, np.float32)


def _digits() -> tuple[np.ndarray[Any, Any], np.ndarray[Any, Any], tuple[str, ...]]:
    from sklearn.datasets import load_digits

    digits = load_digits()
    images = np.asarray(digits.images, np.float32) / 16.0
    return images, np.asarray(digits.target), tuple(str(i) for i in range(10))


def _labels_for(targets: np.ndarray[Any, Any]) -> tuple[str, ...]:
    if targets.size == 0 or targets.min() < 0:
        raise DatasetError("labels must be non-negative class indices and not empty")
    return tuple(str(i) for i in range(int(targets.max()) + 1))


def _read_idx(path: Path) -> np.ndarray[Any, Any]:
    opener = gzip.open if path.suffix == ".gz" else open
    with opener(path, "rb") as stream:
        raw = stream.read()
    if len(raw) < 4 or raw[0] != 0 or raw[1] != 0 or raw[2] != 0x08:
        raise DatasetError(f"{path} is not an IDX file of unsigned bytes (magic 0x0000 08 nn)")
    ndim = raw[3]
    header = 4 + 4 * ndim
    shape = struct.unpack(f">{ndim}I", raw[4:header])
    expected = int(np.prod(shape))
    if len(raw) - header != expected:
        raise DatasetError(
            f"{path}: header says shape {shape} ({expected} bytes) but holds {len(raw) - header}"
        )
    return np.frombuffer(raw, np.uint8, offset=header).reshape(shape)


def _find_idx(directory: Path, stem: str) -> Path | None:
    dotted = stem.replace("-idx", ".idx")
    for candidate in (stem, f"{stem}.gz", dotted, f"{dotted}.gz"):
        if (directory / candidate).is_file():
            return directory / candidate
    return None


def _mnist(
    directory: Path,
) -> tuple[np.ndarray[Any, Any], np.ndarray[Any, Any], tuple[str, ...]]:
    if not directory.is_dir():
        raise DatasetError(f"mnist dataset folder {directory} does not exist")
    images: list[np.ndarray[Any, Any]] = []
    targets: list[np.ndarray[Any, Any]] = []
    for prefix in ("train", "t10k"):
        image_file = _find_idx(directory, f"{prefix}-images-idx3-ubyte")
        label_file = _find_idx(directory, f"{prefix}-labels-idx1-ubyte")
        if image_file is None or label_file is None:
            continue
        x, y = _read_idx(image_file), _read_idx(label_file)
        if x.ndim != 3 or y.ndim != 1 or len(x) != len(y):
            raise DatasetError(
                f"{image_file.name} / {label_file.name}: expected (N, H, W) images and (N,) "
                f"labels, got {x.shape} and {y.shape}"
            )
        images.append(x)
        targets.append(y)
    if not images:
        raise DatasetError(
            f"{directory} holds no MNIST IDX files; expected train-images-idx3-ubyte and "
            "train-labels-idx1-ubyte (optionally .gz, plus t10k-*)"
        )
    target = np.concatenate(targets)
    return np.concatenate(images), target, _labels_for(target)


def _npz(path: Path) -> tuple[np.ndarray[Any, Any], np.ndarray[Any, Any], tuple[str, ...]]:
    if not path.is_file():
        raise DatasetError(f"npz dataset file {path} does not exist")
    try:
        with np.load(path, allow_pickle=False) as archive:
            if "x" not in archive.files or "y" not in archive.files:
                raise DatasetError(
                    f"{path} has arrays {archive.files}; expected 'x' (rows or images) and "
                    "'y' (labels)"
                )
            x, y = archive["x"], archive["y"]
    except (OSError, ValueError) as exc:
        raise DatasetError(f"{path} is not a readable .npz archive: {exc}") from exc
    if y.ndim != 1 or len(x) != len(y) or not np.issubdtype(y.dtype, np.integer):
        raise DatasetError(
            f"{path}: expected integer labels 'y' shaped (N,) matching 'x', got {y.dtype} "
            f"{y.shape} for x {x.shape}"
        )
    return x, y, _labels_for(y)


def _folder(
    directory: Path, shape: _ImageShape
) -> tuple[np.ndarray[Any, Any], np.ndarray[Any, Any], tuple[str, ...]]:
    if not directory.is_dir():
        raise DatasetError(f"image folder {directory} does not exist")
    classes = sorted(p.name for p in directory.iterdir() if p.is_dir())
    if len(classes) < 2:
        raise DatasetError(
            f"{directory} has {len(classes)} class subfolders; expected one subfolder per "
            "class (at least two) holding images"
        )
    from PIL import Image, UnidentifiedImageError

    images: list[np.ndarray[Any, Any]] = []
    targets: list[int] = []
    for index, label in enumerate(classes):
        for file in sorted((directory / label).iterdir()):
            if file.suffix.lower() not in _IMAGE_SUFFIXES:
                continue
            try:
                with Image.open(file) as image:
                    pixels = image.convert("RGB" if shape.channels == 3 else "L").resize(
                        (shape.side, shape.side), Image.Resampling.BILINEAR
                    )
                    array = np.asarray(pixels, np.float32) / 255.0
                    images.append(array.transpose(2, 0, 1) if array.ndim == 3 else array[None])
            except (OSError, UnidentifiedImageError) as exc:
                raise DatasetError(f"{file} is not a readable image: {exc}") from exc
            targets.append(index)
    if not images:
        raise DatasetError(f"{directory}: no images found in its class subfolders")
    return np.stack(images), np.asarray(targets, np.int64), tuple(classes)
