"""The rows quantization sees: calibration samples, gate rows and (optionally) their targets.

From the user's named arrays (`strato quantize REF --data FILE.npz [--targets FILE.npy]`): one
array per model input, same number of rows; with 20 rows or more the rows are split at random
into disjoint calibration and gate halves, so an artifact is never judged on the rows it was
calibrated on. From a built-in dataset (a run trained by `strato train`): calibration on the
training split, the gate on the test split with its labels, calibration of the cascade on the
validation split.
"""

from __future__ import annotations

import zipfile
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
from strato import ConfigError

from strato_training.measure import Feeds, rows_of, take_rows

if TYPE_CHECKING:
    from collections.abc import Mapping, Sequence

__all__ = ["SPLIT_FROM", "QuantizeData", "load_arrays"]

SPLIT_FROM = 20  # below this many rows, calibration and gate share them (said in `note`)


@dataclass(frozen=True)
class QuantizeData:
    """`calibration` and `gate`: named arrays per input; `targets`: of the gate rows (class
    indices or true values of the first output); `val`/`val_targets`: what the cascade
    calibration fits on (None when there are no targets)."""

    calibration: Feeds
    gate: Feeds
    targets: np.ndarray[Any, Any] | None = None
    val: Feeds | None = None
    val_targets: np.ndarray[Any, Any] | None = None
    source: str = "arrays"
    note: str = ""

    @classmethod
    def from_arrays(
        cls,
        inputs: Mapping[str, np.ndarray[Any, Any]],
        targets: np.ndarray[Any, Any] | None = None,
        *,
        gate_rows: int = 512,
        seed: int = 0,
        source: str = "arrays",
    ) -> QuantizeData:
        """Split the user's rows into calibration and gate rows (disjoint from 20 rows up)."""
        feeds = {name: np.asarray(array) for name, array in inputs.items()}
        total = rows_of(feeds)
        if targets is not None and len(targets) != total:
            raise ConfigError(f"targets have {len(targets)} rows, the inputs {total}")
        if total < SPLIT_FROM:
            gate_pick = calibration_pick = np.arange(total)
            note = f"only {total} rows: calibration and gate share them"
        else:
            order = np.random.default_rng(seed).permutation(total)
            half = min(total // 2, gate_rows)
            gate_pick, calibration_pick = np.sort(order[:half]), np.sort(order[half:])
            note = f"{len(calibration_pick)} calibration rows, {half} gate rows (disjoint)"
        gate_targets = None if targets is None else np.asarray(targets)[gate_pick]
        gate = take_rows(feeds, gate_pick)
        return cls(
            calibration=take_rows(feeds, calibration_pick),
            gate=gate,
            targets=gate_targets,
            val=gate if gate_targets is not None else None,
            val_targets=gate_targets,
            source=source,
            note=note,
        )

    @classmethod
    def from_dataset(cls, dataset: Any, input_name: str) -> QuantizeData:
        """A built-in dataset (`strato_training.data.load_dataset`): train / test / val."""
        return cls(
            calibration={input_name: dataset.train.x},
            gate={input_name: dataset.test.x},
            targets=np.asarray(dataset.test.y),
            val={input_name: dataset.val.x},
            val_targets=np.asarray(dataset.val.y),
            source="dataset",
            note="calibration on the training split, gate on the test split",
        )

    @classmethod
    def load(
        cls,
        data: str | Path,
        targets: str | Path | None = None,
        *,
        input_names: Sequence[str] = (),
        seed: int = 0,
    ) -> QuantizeData:
        """`--data FILE.npz` (+ `--targets FILE.npy`): one named array per model input. A
        one-input model takes a file with one array whatever its name."""
        arrays = load_arrays(data)
        if len(input_names) == 1 and len(arrays) == 1:
            arrays = {input_names[0]: next(iter(arrays.values()))}
        missing = [n for n in input_names if n not in arrays]
        unknown = sorted(n for n in arrays if input_names and n not in input_names)
        if missing or unknown:
            raise ConfigError(
                f"{data} has arrays {sorted(arrays)}; the model's inputs are {list(input_names)}"
                + (f" (missing {missing})" if missing else "")
                + (
                    f" (not inputs: {unknown}; true values go in --targets FILE.npy)"
                    if unknown
                    else ""
                )
            )
        if input_names:
            arrays = {name: arrays[name] for name in input_names}
        found = None if targets is None else _load_targets(targets)
        return cls.from_arrays(arrays, found, seed=seed, source=str(data))


def load_arrays(path: str | Path) -> dict[str, np.ndarray[Any, Any]]:
    """The named arrays of an `.npz` file; `ConfigError` when it is missing or not an npz."""
    file = Path(path)
    if not file.is_file():
        raise ConfigError(f"no data file {file}")
    try:
        with np.load(file, allow_pickle=False) as loaded:
            if not hasattr(loaded, "files"):
                raise ConfigError(f"{file} is not an .npz of named arrays (one per input)")
            arrays = {name: np.asarray(loaded[name]) for name in loaded.files}
    except (ValueError, OSError, zipfile.BadZipFile) as exc:
        raise ConfigError(f"{file} is not a readable .npz file: {exc}") from exc
    if not arrays:
        raise ConfigError(f"{file} holds no arrays")
    return arrays


def _load_targets(path: str | Path) -> np.ndarray[Any, Any]:
    file = Path(path)
    if not file.is_file():
        raise ConfigError(f"no targets file {file}")
    try:
        loaded = np.load(file, allow_pickle=False)
    except (ValueError, OSError) as exc:
        raise ConfigError(f"{file} is not a readable .npy file: {exc}") from exc
    if not isinstance(loaded, np.ndarray):
        loaded.close()
        raise ConfigError(f"{file}: targets must be one array (.npy), not an archive")
    return loaded
