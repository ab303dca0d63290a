"""TensorSpec.check: dtype, shape and NaN/Inf, including the cheap finiteness pass's edge cases."""

from __future__ import annotations

import numpy as np
import pytest
from strato import InvalidInput, TensorSpec


@pytest.mark.parametrize("bad", [np.nan, np.inf, -np.inf])
@pytest.mark.parametrize("datatype", ["FP16", "FP32", "FP64"])
def test_non_finite_values_are_refused(bad, datatype):
    spec = TensorSpec("x", datatype, (-1, 3))
    array = np.ones((2, 3), spec.dtype)
    array[1, 2] = bad
    with pytest.raises(InvalidInput, match="NaN or Inf"):
        spec.check(array)


def test_large_finite_values_pass_even_when_the_fast_pass_overflows():
    TensorSpec("x", "FP32", (-1, 3)).check(np.full((2, 3), 3e19, np.float32))
    TensorSpec("x", "FP16", (-1,)).check(np.array([300.0, 60000.0], np.float16))


def test_non_contiguous_inputs_are_checked():
    array = np.ones((2, 6), np.float32)[:, ::2]
    array[0, 0] = np.nan
    with pytest.raises(InvalidInput, match="NaN"):
        TensorSpec("x", "FP32", (-1, 3)).check(array)


@pytest.mark.parametrize(
    ("array", "match"),
    [
        (np.ones((2, 4), np.float32), "shape"),
        (np.ones((2, 3, 1), np.float32), "shape"),
        (np.ones((0, 3), np.float32), "empty axis"),
        (np.ones((2, 3), np.int64), "datatype INT64"),
    ],
)
def test_shape_and_dtype(array, match):
    with pytest.raises(InvalidInput, match=match):
        TensorSpec("x", "FP32", (-1, 3)).check(array)


def test_integer_inputs_skip_the_finiteness_pass():
    TensorSpec("ids", "INT64", (-1,)).check(np.array([1, 2, 3]))


def test_signature_verdicts_are_remembered_but_values_checked_every_call():
    spec = TensorSpec("x", "FP32", (-1, 3))
    good = np.ones((2, 3), np.float32)
    spec.check(good)
    spec.check(good)  # the (shape, dtype) verdict is remembered ...
    with pytest.raises(InvalidInput, match="NaN or Inf"):  # ... the values never are
        spec.check(np.array([[1.0, np.inf, 0.0], [0.0, 0.0, 0.0]], np.float32))
    for _ in range(2):  # a refused signature is refused every time, never remembered
        with pytest.raises(InvalidInput, match="shape"):
            spec.check(np.ones((2, 4), np.float32))
        with pytest.raises(InvalidInput, match="datatype"):
            spec.check(np.ones((2, 3), np.float64))
    for rows in range(1, 200):  # dynamic batch sizes: the memory stays bounded
        spec.check(np.ones((rows, 3), np.float32))
    assert len(spec._accepted) <= 64
    assert spec == TensorSpec("x", "FP32", (-1, 3))  # the memory is not part of the value
    strided = np.ones((4, 6), np.float32)[:, ::2]
    strided[1, 1] = np.nan
    with pytest.raises(InvalidInput, match="NaN"):
        spec.check(strided)  # a non-contiguous view is checked too
