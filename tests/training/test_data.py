"""Datasets: digits, MNIST IDX, .npz, image folders; clear errors for missing or wrong input."""

from __future__ import annotations

import gzip
import struct
from pathlib import Path

import numpy as np
import pytest
from strato import ConfigError
from strato_training.data import Dataset, DatasetError, load_dataset, resize_images


def write_idx(path: Path, array: np.ndarray, *, compress: bool = False) -> None:
    header = bytes([0, 0, 0x08, array.ndim]) + struct.pack(f">{array.ndim}I", *array.shape)
    body = header + array.astype(np.uint8).tobytes()
    if compress:
        with gzip.open(path, "wb") as stream:
            stream.write(body)
    else:
        path.write_bytes(body)


def tiny_images(count: int, classes: int, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    y = np.arange(count) % classes
    x = rng.integers(0, 60, (count, 28, 28)).astype(np.uint8)
    for index, label in enumerate(y):
        x[index, 2 * label : 2 * label + 4, :] = 255  # a class-specific bright band
    return x, y.astype(np.uint8)


def test_digits_is_mnist_shaped_and_stratified(digits: Dataset) -> None:
    assert digits.input_shape == (1, 28, 28)
    assert digits.labels == tuple(str(i) for i in range(10))
    total = len(digits.train) + len(digits.val) + len(digits.test)
    assert total == 1797
    assert len(digits.test) == pytest.approx(0.2 * total, abs=1)
    for split in (digits.train, digits.val, digits.test):
        assert split.x.dtype == np.float32 and split.y.dtype == np.int64
        assert split.x.min() >= 0.0 and split.x.max() <= 1.0
        # stratified: every class present in every split in similar proportion
        counts = np.bincount(split.y, minlength=10) / len(split)
        assert np.all(np.abs(counts - 0.1) < 0.03)


def test_split_is_reproducible_by_seed(digits: Dataset) -> None:
    again = load_dataset("digits", seed=0)
    other = load_dataset("digits", seed=1)
    np.testing.assert_array_equal(again.test.x, digits.test.x)
    assert not np.array_equal(other.test.y, digits.test.y)


def test_resize_keeps_a_constant_image_constant() -> None:
    image = np.full((2, 8, 8), 0.5, np.float32)
    resized = resize_images(image)
    assert resized.shape == (2, 28, 28)
    np.testing.assert_allclose(resized, 0.5, atol=1e-6)


@pytest.mark.parametrize("compress", [False, True])
def test_mnist_idx_files(tmp_path: Path, compress: bool) -> None:
    x, y = tiny_images(60, 3)
    suffix = ".gz" if compress else ""
    write_idx(tmp_path / f"train-images-idx3-ubyte{suffix}", x[:40], compress=compress)
    write_idx(tmp_path / f"train-labels-idx1-ubyte{suffix}", y[:40], compress=compress)
    write_idx(tmp_path / f"t10k-images-idx3-ubyte{suffix}", x[40:], compress=compress)
    write_idx(tmp_path / f"t10k-labels-idx1-ubyte{suffix}", y[40:], compress=compress)
    dataset = load_dataset(f"mnist:{tmp_path}", val_fraction=0.2, test_fraction=0.2)
    assert dataset.labels == ("0", "1", "2")
    assert len(dataset.train) + len(dataset.val) + len(dataset.test) == 60
    assert dataset.train.x.shape[1:] == (1, 28, 28)
    assert dataset.train.x.max() == pytest.approx(1.0)


def test_npz_arrays_of_another_size_are_resized(tmp_path: Path) -> None:
    rng = np.random.default_rng(0)
    path = tmp_path / "data.npz"
    np.savez(path, x=rng.integers(0, 255, (50, 16, 16)).astype(np.uint8), y=np.arange(50) % 5)
    dataset = load_dataset(f"npz:{path}", val_fraction=0.2, test_fraction=0.2)
    assert dataset.input_shape == (1, 28, 28)
    assert dataset.labels == ("0", "1", "2", "3", "4")


def test_image_folder_one_subfolder_per_class(tmp_path: Path) -> None:
    from PIL import Image

    x, y = tiny_images(30, 3)
    for index, (image, label) in enumerate(zip(x, y, strict=True)):
        folder = tmp_path / ["cat", "dog", "eel"][label]
        folder.mkdir(exist_ok=True)
        Image.fromarray(image).resize((32, 32)).save(folder / f"{index}.png")
    (tmp_path / "cat" / "notes.txt").write_text("not an image; skipped")
    dataset = load_dataset(f"folder:{tmp_path}", val_fraction=0.2, test_fraction=0.2)
    assert dataset.labels == ("cat", "dog", "eel")
    assert len(dataset.train) + len(dataset.val) + len(dataset.test) == 30


@pytest.mark.parametrize(
    ("spec", "expected"),
    [
        ("mnist:/no/such/folder", "does not exist"),
        ("npz:/no/such/file.npz", "does not exist"),
        ("folder:/no/such/folder", "does not exist"),
        ("imagenet", "expected 'digits', 'mnist:DIR', 'npz:PATH' or 'folder:DIR'"),
        ("mnist:", "expected 'digits'"),
    ],
)
def test_missing_or_unknown_dataset(spec: str, expected: str) -> None:
    with pytest.raises(DatasetError, match=expected):
        load_dataset(spec)


def test_wrong_formats_say_what_was_expected(tmp_path: Path) -> None:
    (tmp_path / "empty").mkdir()
    with pytest.raises(DatasetError, match="train-images-idx3-ubyte"):
        load_dataset(f"mnist:{tmp_path / 'empty'}")
    bad_idx = tmp_path / "bad"
    bad_idx.mkdir()
    (bad_idx / "train-images-idx3-ubyte").write_bytes(b"PK\x03\x04 not idx")
    (bad_idx / "train-labels-idx1-ubyte").write_bytes(b"PK\x03\x04 not idx")
    with pytest.raises(DatasetError, match="not an IDX file"):
        load_dataset(f"mnist:{bad_idx}")
    keys = tmp_path / "keys.npz"
    np.savez(keys, images=np.zeros((4, 28, 28)), labels=np.zeros(4))
    with pytest.raises(DatasetError, match=r"expected 'x' .*and 'y'"):
        load_dataset(f"npz:{keys}")
    garbage = tmp_path / "garbage.npz"
    garbage.write_text("not a zip")
    with pytest.raises(DatasetError, match=r"not a readable \.npz"):
        load_dataset(f"npz:{garbage}")
    one_class = tmp_path / "one"
    (one_class / "only").mkdir(parents=True)
    with pytest.raises(DatasetError, match="one subfolder per class"):
        load_dataset(f"folder:{one_class}")


def test_dataset_error_is_a_config_error() -> None:
    assert issubclass(DatasetError, ConfigError)
    with pytest.raises(ConfigError, match="sum to less than 1"):
        load_dataset("digits", val_fraction=0.5, test_fraction=0.6)
