"""Tensor signatures and the Open Inference Protocol datatype names."""

from __future__ import annotations

import math
import warnings
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import numpy as np

from ._errors import InvalidInput

if TYPE_CHECKING:
    from collections.abc import Mapping


# The finiteness pass below may overflow on huge finite values; it then falls back to the exact
# check, so numpy's overflow warning from that one line is noise to the caller.
warnings.filterwarnings(
    "ignore", "overflow encountered in dot", RuntimeWarning, module=r"strato\._tensors"
)

_SIGNATURES = 64  # (shape, dtype) signatures remembered per input

__all__ = ["DATATYPES", "TensorSpec", "datatype_of", "dtype_of", "validate_inputs"]

# OIP v2 datatype name -> numpy dtype. BYTES is not served by strato's numeric models.
DATATYPES: dict[str, np.dtype[Any]] = {
    "BOOL": np.dtype(np.bool_),
    "UINT8": np.dtype(np.uint8),
    "UINT16": np.dtype(np.uint16),
    "UINT32": np.dtype(np.uint32),
    "UINT64": np.dtype(np.uint64),
    "INT8": np.dtype(np.int8),
    "INT16": np.dtype(np.int16),
    "INT32": np.dtype(np.int32),
    "INT64": np.dtype(np.int64),
    "FP16": np.dtype(np.float16),
    "FP32": np.dtype(np.float32),
    "FP64": np.dtype(np.float64),
}
_NAMES: dict[np.dtype[Any], str] = {v: k for k, v in DATATYPES.items()}


def dtype_of(datatype: str) -> np.dtype[Any]:
    """numpy dtype for an OIP datatype name; `InvalidInput` for an unknown one."""
    try:
        return DATATYPES[datatype]
    except (KeyError, TypeError):
        known = ", ".join(DATATYPES)
        raise InvalidInput(f"unknown datatype {datatype!r}; expected one of {known}") from None


def datatype_of(dtype: np.dtype[Any]) -> str:
    """OIP datatype name for a numpy dtype."""
    try:
        return _NAMES[np.dtype(dtype)]
    except KeyError:
        raise InvalidInput(f"dtype {dtype} has no Open Inference Protocol datatype") from None


@dataclass(frozen=True, slots=True)
class TensorSpec:
    """One input or output of a model: name, OIP datatype, shape with -1 for dynamic axes."""

    name: str
    datatype: str
    shape: tuple[int, ...]
    # (shape, dtype) signatures already accepted; not part of the value (equality, hash, repr).
    _accepted: set[tuple[tuple[int, ...], np.dtype[Any]]] = field(
        default_factory=set, init=False, repr=False, compare=False, hash=False
    )
    _floating: bool = field(default=False, init=False, repr=False, compare=False, hash=False)
    _wide: bool = field(default=False, init=False, repr=False, compare=False, hash=False)

    def __post_init__(self) -> None:
        dtype = dtype_of(self.datatype)
        object.__setattr__(self, "shape", tuple(int(d) for d in self.shape))
        object.__setattr__(self, "_floating", dtype.kind == "f")
        object.__setattr__(self, "_wide", dtype.kind == "f" and dtype.itemsize >= 4)

    @property
    def dtype(self) -> np.dtype[Any]:
        """The numpy dtype of this OIP datatype."""
        return DATATYPES[self.datatype]

    def to_dict(self) -> dict[str, Any]:
        """`{"name", "datatype", "shape"}`, as OIP metadata and the manifest write it."""
        return {"name": self.name, "datatype": self.datatype, "shape": list(self.shape)}

    @classmethod
    def from_dict(cls, raw: Mapping[str, Any]) -> TensorSpec:
        """The spec `to_dict` wrote (manifest or OIP metadata form)."""
        return cls(str(raw["name"]), str(raw["datatype"]), tuple(raw["shape"]))

    def check(self, array: np.ndarray[Any, Any]) -> None:
        """Raise `InvalidInput` unless `array` fits this spec (dtype exactly, shape per axis, no
        NaN/Inf).

        The dtype and shape verdict depends on (shape, dtype) alone, so it is worked out once
        per signature and remembered; the values are checked on every call.
        """
        accepted = self._accepted
        signature = (array.shape, array.dtype)
        if signature not in accepted:
            self._check_signature(array)
            if len(accepted) >= _SIGNATURES:  # dynamic shapes: keep the memory bounded
                accepted.clear()
            accepted.add(signature)
        if self._floating:
            # One BLAS dot product (x·x) is the cheapest full pass: NaN/Inf propagate through
            # it, and only a finite overflow of the sum needs the element-wise look. float16
            # squares overflow from 256 up, so it takes the element-wise look directly.
            if self._wide:
                flat = array.ravel()
                if math.isfinite(flat.dot(flat)) or np.isfinite(array).all():
                    return
            elif np.isfinite(array).all():
                return
            raise InvalidInput(f"input {self.name!r} contains NaN or Inf")

    def _check_signature(self, array: np.ndarray[Any, Any]) -> None:
        if array.dtype != DATATYPES[self.datatype]:
            raise InvalidInput(
                f"input {self.name!r}: datatype {datatype_name(array.dtype)} "
                f"but the model expects {self.datatype}"
            )
        shape = array.shape
        expected = self.shape
        mismatch = len(shape) != len(expected) or any(
            e not in (s, -1) for e, s in zip(expected, shape, strict=False)
        )
        if mismatch:
            raise InvalidInput(
                f"input {self.name!r}: shape {list(shape)} but the model expects "
                f"{list(expected)} (-1 is any size)"
            )
        if 0 in shape:
            raise InvalidInput(f"input {self.name!r}: shape {list(shape)} has an empty axis")


def datatype_name(dtype: np.dtype[Any]) -> str:
    return _NAMES.get(np.dtype(dtype), str(dtype))


def validate_inputs(
    specs: Mapping[str, TensorSpec], inputs: Mapping[str, np.ndarray[Any, Any]]
) -> None:
    """Check names, datatypes and shapes of `inputs` against the model's signature."""
    if inputs.keys() != specs.keys():
        missing = sorted(specs.keys() - inputs.keys())
        unknown = sorted(inputs.keys() - specs.keys())
        parts = []
        if missing:
            parts.append(f"missing input(s) {missing}")
        if unknown:
            parts.append(f"unknown input(s) {unknown}")
        raise InvalidInput("; ".join(parts) + f"; the model takes {sorted(specs)}")
    for name, array in inputs.items():
        specs[name].check(array)
