"""Payload limits: split a request's rows into requests that fit one transport, and merge the
answers back into one. Pure arithmetic on arrays; the routing core decides when."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import numpy as np

from strato._errors import InvalidInput, VersionMismatch
from strato._inference import InferRequest, InferResponse

if TYPE_CHECKING:
    from collections.abc import Mapping

__all__ = ["batch_rows", "merge_answers", "row_chunks", "split_rows"]


def batch_rows(inputs: Mapping[str, np.ndarray[Any, Any]]) -> int | None:
    """The rows (axis 0) every input shares, or None when they share no batch axis."""
    rows: int | None = None
    for array in inputs.values():
        if array.ndim == 0 or (rows is not None and array.shape[0] != rows):
            return None
        rows = array.shape[0]
    return rows


def row_chunks(
    inputs: Mapping[str, np.ndarray[Any, Any]], step: int
) -> list[dict[str, np.ndarray[Any, Any]]]:
    """`inputs` cut into consecutive slices of `step` rows (views, no copies)."""
    rows = batch_rows(inputs)
    if rows is None:
        raise InvalidInput(
            "inputs disagree on the batch axis (axis 0): "
            + ", ".join(f"{name} {list(a.shape)}" for name, a in inputs.items())
        )
    return [{name: a[i : i + step] for name, a in inputs.items()} for i in range(0, rows, step)]


def split_rows(
    request: InferRequest, budget: int, *, limit: int, backend: str
) -> list[InferRequest] | None:
    """None when `request`'s tensors fit `budget` bytes; else requests that each do.

    `limit` (the transport's own payload limit) and `backend` name what refused in the error a
    single row too large for it raises.
    """
    inputs = request.inputs
    total = 0
    for array in inputs.values():
        total += array.nbytes
    if total <= budget:
        return None
    rows = batch_rows(inputs)
    if rows is None:
        raise InvalidInput(
            f"the request's tensors ({total:,} bytes) are over {backend}'s payload limit "
            f"({limit:,} bytes) and its inputs share no batch axis to split on"
        )
    row_bytes = -(-total // rows)
    step = budget // row_bytes
    if step < 1:
        raise InvalidInput(
            f"one row of {request.model} is {row_bytes:,} bytes of tensors, over what fits "
            f"{backend}'s payload limit of {limit:,} bytes per request"
        )
    return [
        InferRequest(
            request.model, chunk, request.version, request.id, request.outputs, request.parameters
        )
        for chunk in row_chunks(inputs, step)
    ]


def merge_answers(answers: list[InferResponse]) -> InferResponse:
    """The answers to consecutive row chunks as one (outputs concatenated on axis 0)."""
    first = answers[0]
    versions = {a.model_version for a in answers}
    if len(versions) > 1:
        raise VersionMismatch(
            f"{first.served_by} answered the chunks of one request with versions "
            f"{sorted(versions)} (it changed version mid-request)",
            backend=first.served_by,
        )
    outputs = {name: np.concatenate([a.outputs[name] for a in answers]) for name in first.outputs}
    return InferResponse(
        outputs,
        first.model_name,
        first.model_version,
        first.id,
        first.served_by,
        first.precision,
        first.parameters,
    )
