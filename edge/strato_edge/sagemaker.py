"""The SageMaker hosting contract for `POST /invocations`: honour `Content-Type` and `Accept`.

Requests: Open Inference Protocol JSON (`application/json`), the binary tensor extension
(`application/octet-stream` with `Inference-Header-Content-Length`, or SageMaker's
`application/vnd.sagemaker-triton.binary+json;json-header-size=N`), and, for models with one
input, `application/x-npy` (one array) and `text/csv` (one row per line). Anything else is 415.
Answers: as the request asked by default; `Accept: application/json` forces OIP JSON,
`application/x-npy` / `text/csv` send the model's first output (or the only requested one) as
an array; an `Accept` none of these match is 406.
"""

from __future__ import annotations

import dataclasses
import io
from typing import TYPE_CHECKING, Any

import numpy as np
from strato import InvalidInput, serving

if TYPE_CHECKING:
    from collections.abc import Mapping

    from strato_edge.device_store import ServedModel

__all__ = [
    "CSV",
    "NPY",
    "NotAcceptable",
    "UnsupportedMediaType",
    "accepted",
    "decode_invocation",
    "encode_array",
]

NPY = "application/x-npy"
CSV = "text/csv"
JSON = "application/json"
_OIP = (JSON, "application/octet-stream", serving.SAGEMAKER_BINARY, "")
_ANSWERS = (JSON, NPY, CSV)


class UnsupportedMediaType(InvalidInput):
    """A request body in a format the server cannot read (HTTP 415)."""

    status_code = 415


class NotAcceptable(InvalidInput):
    """An `Accept` header no answer format matches (HTTP 406)."""

    status_code = 406


def _media(value: str) -> str:
    return value.split(";", 1)[0].strip().lower()


def _one_input(served: ServedModel, media: str) -> dict[str, Any]:
    inputs = served.metadata["inputs"]
    if len(inputs) != 1:
        names = [spec["name"] for spec in inputs]
        raise InvalidInput(
            f"{media} carries one tensor; {served.name} takes {len(inputs)}: {names}"
        )
    spec: dict[str, Any] = inputs[0]
    return spec


def _fit(array: np.ndarray[Any, Any], spec: dict[str, Any], media: str) -> np.ndarray[Any, Any]:
    """Rows of `array` reshaped to the input's per-row shape and cast to its datatype."""
    dims = [d if isinstance(d, int) and d > 0 else -1 for d in spec["shape"][1:]]
    rows = array.shape[0] if array.ndim else 1
    per_row = int(np.prod([d for d in dims if d > 0], dtype=np.int64)) if dims else 1
    if array.ndim == 2 and media == CSV and -1 not in dims and array.shape[1] == per_row:
        array = array.reshape(rows, *dims)
    dtype = np.dtype(serving_dtype(spec["datatype"]))
    if array.dtype != dtype:
        if array.dtype.kind == "f" and dtype.kind in "iub" and not np.all(array == np.round(array)):
            raise InvalidInput(f"{media}: {spec['name']} is {spec['datatype']}, got fractions")
        array = array.astype(dtype)
    return array


def serving_dtype(datatype: str) -> Any:
    """The numpy dtype of an OIP datatype name."""
    names = {
        "BOOL": np.bool_, "UINT8": np.uint8, "UINT16": np.uint16, "UINT32": np.uint32,
        "UINT64": np.uint64, "INT8": np.int8, "INT16": np.int16, "INT32": np.int32,
        "INT64": np.int64, "FP16": np.float16, "FP32": np.float32, "FP64": np.float64,
    }  # fmt: skip
    found = names.get(datatype)
    if found is None:
        raise InvalidInput(f"datatype {datatype!r} cannot come from npy or csv")
    return found


def _from_npy(body: bytes) -> np.ndarray[Any, Any]:
    try:
        array = np.load(io.BytesIO(body), allow_pickle=False)
    except (ValueError, OSError, EOFError) as exc:
        raise InvalidInput(f"{NPY} body is not a .npy array: {exc}") from None
    if not isinstance(array, np.ndarray):
        raise InvalidInput(f"{NPY} body holds an archive, not one array")
    return array


def _from_csv(body: bytes) -> np.ndarray[Any, Any]:
    try:
        text = body.decode("utf-8")
        rows = [
            [float(cell) for cell in line.split(",")] for line in text.splitlines() if line.strip()
        ]
    except (UnicodeDecodeError, ValueError) as exc:
        raise InvalidInput(f"{CSV} body must hold numbers, one row per line: {exc}") from None
    if not rows or len({len(r) for r in rows}) != 1:
        raise InvalidInput(f"{CSV} body must hold rows of equal length")
    return np.asarray(rows, dtype=np.float64)


def decode_invocation(
    body: bytes, headers: Mapping[str, str], served: ServedModel
) -> serving.DecodedRequest:
    """The request an `/invocations` body carries, read by its `Content-Type`."""
    media = _media(headers.get("content-type", ""))
    if media in _OIP:
        return serving.decode(body, headers)
    if media in (NPY, CSV):
        spec = _one_input(served, media)
        array = _from_npy(body) if media == NPY else _from_csv(body)
        return serving.DecodedRequest(inputs={spec["name"]: _fit(array, spec, media)})
    raise UnsupportedMediaType(
        f"Content-Type {media!r} is not served; send {JSON}, the binary tensor extension, "
        f"{NPY} or {CSV} (one-input models)"
    )


def accepted(headers: Mapping[str, str]) -> str | None:
    """The answer format `Accept` asks for: one of JSON/NPY/CSV, or None for "as requested"."""
    raw = headers.get("accept", "")
    if not raw:
        return None
    for part in raw.split(","):
        media = _media(part)
        if media in ("*/*", "application/*", ""):
            return None
        if media in _ANSWERS:
            return media
    raise NotAcceptable(f"Accept {raw!r}: this server answers {', '.join(_ANSWERS)}")


def as_json(request: serving.DecodedRequest) -> serving.DecodedRequest:
    """The same request, answered in OIP JSON (no binary outputs)."""
    outputs = None if request.outputs is None else dict.fromkeys(request.outputs, False)
    return dataclasses.replace(request, outputs=outputs, binary_default=False)


def encode_array(
    request: serving.DecodedRequest, outputs: Mapping[str, np.ndarray[Any, Any]], media: str
) -> bytes:
    """The first (or only requested) output as `.npy` bytes or CSV rows."""
    chosen, _ = request.select(outputs)
    array = np.asarray(next(iter(chosen.values())))
    if media == NPY:
        buffer = io.BytesIO()
        np.save(buffer, array, allow_pickle=False)
        return buffer.getvalue()
    rows = array.reshape(array.shape[0], -1) if array.ndim > 1 else array.reshape(-1, 1)
    return "".join(",".join(repr(v.item()) for v in row) + "\n" for row in rows).encode()
