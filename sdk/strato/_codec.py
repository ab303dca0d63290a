"""Open Inference Protocol v2 (KServe v2) bodies: JSON and Triton's binary tensor extension.

One codec serves the edge server, the SageMaker container and the Lambda handler, and the SDK's
transports. Binary framing: the JSON header, then each binary tensor's raw little-endian bytes in
the order the header lists them; the header's length travels in `Inference-Header-Content-Length`
(or `json-header-size=N` in SageMaker's Content-Type). Every malformed body is an `InvalidInput`.
"""

from __future__ import annotations

import json
import math
import re
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import numpy as np

from ._errors import InvalidInput
from ._tensors import datatype_of, dtype_of

if TYPE_CHECKING:
    from collections.abc import Mapping

_orjson: Any
try:  # orjson parses a 784-float body ~10x faster than json; optional at import time
    import orjson as _orjson
except ImportError:  # pragma: no cover - orjson is a dependency, kept optional for slim images
    _orjson = None

__all__ = [
    "HEADER_LENGTH",
    "MAX_ELEMENTS",
    "SAGEMAKER_BINARY",
    "DecodedRequest",
    "DecodedResponse",
    "check_shape",
    "decode_request",
    "decode_response",
    "dumps",
    "encode_request",
    "encode_response",
    "header_length_from",
    "loads",
]

HEADER_LENGTH = "Inference-Header-Content-Length"
SAGEMAKER_BINARY = "application/vnd.sagemaker-triton.binary+json"
MAX_ELEMENTS = 1 << 26  # 64 Mi elements per tensor: bigger shapes are refused before allocating
MAX_RANK = 32  # numpy refuses more than 64 axes; no model takes more than a handful
_JSON_SIZE = re.compile(r"json-header-size\s*=\s*(\d+)")


def loads(body: bytes | str) -> Any:
    """Parse a JSON body (orjson when installed); malformed JSON is an `InvalidInput`."""
    try:
        if _orjson is not None:
            return _orjson.loads(body)
        return json.loads(body)
    except (ValueError, UnicodeDecodeError, TypeError) as exc:
        raise InvalidInput(f"malformed JSON body: {exc}") from None


def dumps(value: Any) -> bytes:
    """JSON bytes of `value` (numpy arrays and scalars included)."""
    if _orjson is not None:
        encoded: bytes = _orjson.dumps(value, option=_orjson.OPT_SERIALIZE_NUMPY)
        return encoded
    return json.dumps(value, default=_json_default).encode()


def _json_default(value: Any) -> Any:
    if isinstance(value, np.ndarray):
        return value.tolist()
    if isinstance(value, np.generic):
        return value.item()
    raise TypeError(f"{type(value).__name__} is not JSON serializable")


def header_length_from(headers: Mapping[str, str]) -> int | None:
    """The JSON header length from `Inference-Header-Content-Length` or SageMaker's Content-Type."""
    raw = headers.get(HEADER_LENGTH) or headers.get(HEADER_LENGTH.lower())
    if raw is None:
        content_type = headers.get("content-type") or headers.get("Content-Type") or ""
        match = _JSON_SIZE.search(content_type)
        raw = match.group(1) if match else None
    if raw is None:
        return None
    try:
        value = int(raw)
    except ValueError:
        raise InvalidInput(f"{HEADER_LENGTH} must be an integer, got {raw!r}") from None
    if value < 0:
        raise InvalidInput(f"{HEADER_LENGTH} must not be negative, got {value}")
    return value


@dataclass(slots=True)
class DecodedRequest:
    inputs: dict[str, np.ndarray[Any, Any]]
    id: str | None = None
    parameters: dict[str, Any] = field(default_factory=dict)
    # requested outputs: name -> wants binary; None means "all outputs"
    outputs: dict[str, bool] | None = None
    binary_default: bool = False

    def select(
        self, outputs: Mapping[str, np.ndarray[Any, Any]]
    ) -> tuple[dict[str, np.ndarray[Any, Any]], bool | set[str]]:
        """The outputs this request asked for, and which go binary (for `encode_response`)."""
        if self.outputs is None:
            return dict(outputs), self.binary_default
        unknown = sorted(set(self.outputs) - set(outputs))
        if unknown:
            raise InvalidInput(f"unknown output(s) {unknown}; the model has {sorted(outputs)}")
        chosen = {name: outputs[name] for name in self.outputs}
        return chosen, {name for name, wants in self.outputs.items() if wants}


@dataclass(slots=True)
class DecodedResponse:
    outputs: dict[str, np.ndarray[Any, Any]]
    model_name: str = ""
    model_version: str = ""
    id: str | None = None
    parameters: dict[str, Any] = field(default_factory=dict)


def _split(body: bytes, header_length: int | None) -> tuple[Any, memoryview]:
    if header_length is None:
        return loads(body), memoryview(b"")
    if header_length > len(body):
        raise InvalidInput(
            f"{HEADER_LENGTH} is {header_length} but the body has only {len(body)} bytes"
        )
    view = memoryview(body)
    return loads(view[:header_length].tobytes()), view[header_length:]


def check_shape(raw: Any, name: str) -> tuple[int, ...]:
    """A tensor's shape from the wire, or `InvalidInput`: integers, none negative, at most
    `MAX_RANK` axes and `MAX_ELEMENTS` elements (axes after an empty one counted too)."""
    return _shape(list(raw) if isinstance(raw, tuple) else raw, name)


def _shape(raw: Any, name: str) -> tuple[int, ...]:
    if not isinstance(raw, list) or not all(
        isinstance(d, int) and not isinstance(d, bool) for d in raw
    ):
        raise InvalidInput(f"tensor {name!r}: shape must be a list of integers, got {raw!r}")
    if len(raw) > MAX_RANK:
        raise InvalidInput(f"tensor {name!r}: {len(raw)} dimensions, more than {MAX_RANK}")
    if any(d < 0 for d in raw):
        raise InvalidInput(f"tensor {name!r}: shape {raw} has a negative dimension")
    # The axes past an empty one count too: [0, 2**63] holds no element but overflows numpy.
    if math.prod(d for d in raw if d) > MAX_ELEMENTS:
        raise InvalidInput(f"tensor {name!r}: shape {raw} exceeds {MAX_ELEMENTS} elements")
    return tuple(raw)


def _tensor(raw: Any, binary: memoryview, offset: int) -> tuple[str, np.ndarray[Any, Any], int]:
    """Decode one tensor entry (JSON `data` or a binary slice); returns the new binary offset."""
    if not isinstance(raw, dict):
        raise InvalidInput(f"each tensor must be a JSON object, got {type(raw).__name__}")
    name = raw.get("name")
    if not isinstance(name, str) or not name:
        raise InvalidInput("tensor without a 'name'")
    datatype = raw.get("datatype")
    if datatype == "BYTES":
        raise InvalidInput(f"tensor {name!r}: BYTES tensors are not supported by strato models")
    dtype = dtype_of(datatype) if isinstance(datatype, str) else dtype_of(repr(datatype))
    shape = _shape(raw.get("shape"), name)
    count = math.prod(shape)
    params = raw.get("parameters") or {}
    if not isinstance(params, dict):
        raise InvalidInput(f"tensor {name!r}: 'parameters' must be an object")
    size = params.get("binary_data_size")
    if size is not None:
        if not isinstance(size, int) or isinstance(size, bool) or size < 0:
            raise InvalidInput(f"tensor {name!r}: binary_data_size must be a non-negative integer")
        if size != count * dtype.itemsize:
            raise InvalidInput(
                f"tensor {name!r}: binary_data_size {size} != {count} elements x "
                f"{dtype.itemsize} bytes for shape {list(shape)} {datatype}"
            )
        if offset + size > len(binary):
            raise InvalidInput(
                f"tensor {name!r}: body ends {offset + size - len(binary)} bytes short of "
                f"its binary_data_size {size}"
            )
        array = np.frombuffer(binary[offset : offset + size], dtype=dtype.newbyteorder("<"))
        return name, array.reshape(shape), offset + size
    if "data" not in raw:
        raise InvalidInput(f"tensor {name!r} has neither 'data' nor binary_data_size")
    try:
        array = np.asarray(raw["data"], dtype=dtype)
    except (ValueError, TypeError, OverflowError) as exc:
        raise InvalidInput(f"tensor {name!r}: data is not {datatype}: {exc}") from None
    if array.size != count:
        raise InvalidInput(
            f"tensor {name!r}: shape {list(shape)} needs {count} values but data has {array.size}"
        )
    return name, array.reshape(shape), offset


def decode_request(body: bytes, *, header_length: int | None = None) -> DecodedRequest:
    header, binary = _split(body, header_length)
    if not isinstance(header, dict):
        raise InvalidInput("the request body must be a JSON object")
    raw_inputs = header.get("inputs")
    if not isinstance(raw_inputs, list) or not raw_inputs:
        raise InvalidInput("the request needs a non-empty 'inputs' list")
    inputs: dict[str, np.ndarray[Any, Any]] = {}
    offset = 0
    for raw in raw_inputs:
        name, array, offset = _tensor(raw, binary, offset)
        if name in inputs:
            raise InvalidInput(f"input {name!r} given twice")
        inputs[name] = array
    if offset != len(binary):
        raise InvalidInput(f"{len(binary) - offset} bytes of binary data follow the last tensor")
    parameters = header.get("parameters") or {}
    if not isinstance(parameters, dict):
        raise InvalidInput("'parameters' must be an object")
    binary_default = bool(parameters.get("binary_data_output", False))
    outputs = None
    raw_outputs = header.get("outputs")
    if raw_outputs is not None:
        if not isinstance(raw_outputs, list):
            raise InvalidInput("'outputs' must be a list")
        outputs = {}
        for raw in raw_outputs:
            if not isinstance(raw, dict) or not isinstance(raw.get("name"), str):
                raise InvalidInput("each requested output needs a 'name'")
            params = raw.get("parameters") or {}
            wants = params.get("binary_data", binary_default) if isinstance(params, dict) else None
            outputs[raw["name"]] = bool(wants)
    request_id = header.get("id")
    return DecodedRequest(
        inputs=inputs,
        id=str(request_id) if request_id is not None else None,
        parameters=parameters,
        outputs=outputs,
        binary_default=binary_default,
    )


def _entry(name: str, array: np.ndarray[Any, Any]) -> dict[str, Any]:
    return {"name": name, "datatype": datatype_of(array.dtype), "shape": list(array.shape)}


def _encode(
    header: dict[str, Any],
    key: str,
    tensors: Mapping[str, np.ndarray[Any, Any]],
    binary: bool | set[str] | frozenset[str],
) -> tuple[bytes, int | None]:
    entries, chunks = [], []
    for name, array in tensors.items():
        entry = _entry(name, array)
        if binary is True or (not isinstance(binary, bool) and name in binary):
            raw = np.ascontiguousarray(array, dtype=array.dtype.newbyteorder("<")).tobytes()
            entry["parameters"] = {"binary_data_size": len(raw)}
            chunks.append(raw)
        else:
            entry["data"] = array.ravel()
        entries.append(entry)
    header[key] = entries
    encoded = dumps(header)
    if not chunks:
        return encoded, None
    return b"".join([encoded, *chunks]), len(encoded)


def encode_request(
    inputs: Mapping[str, np.ndarray[Any, Any]],
    *,
    binary: bool = True,
    outputs: list[str] | tuple[str, ...] | None = None,
    binary_outputs: bool = True,
    id: str | None = None,
    parameters: Mapping[str, Any] | None = None,
) -> tuple[bytes, int | None]:
    """Body for `POST …/infer`; the int is the JSON header length when tensors are binary."""
    header: dict[str, Any] = {}
    if id is not None:
        header["id"] = id
    params = dict(parameters or {})
    if binary_outputs and not outputs:
        params["binary_data_output"] = True
    if params:
        header["parameters"] = params
    if outputs:
        header["outputs"] = [
            {"name": name, "parameters": {"binary_data": binary_outputs}} for name in outputs
        ]
    return _encode(header, "inputs", inputs, binary)


def encode_response(
    outputs: Mapping[str, np.ndarray[Any, Any]],
    *,
    model_name: str,
    model_version: str,
    id: str | None = None,
    binary: bool | set[str] | frozenset[str] = False,
    parameters: Mapping[str, Any] | None = None,
) -> tuple[bytes, int | None]:
    header: dict[str, Any] = {"model_name": model_name, "model_version": model_version}
    if id is not None:
        header["id"] = id
    if parameters:
        header["parameters"] = dict(parameters)
    return _encode(header, "outputs", outputs, binary)


def decode_response(body: bytes, *, header_length: int | None = None) -> DecodedResponse:
    """An OIP answer (JSON, or Triton binary with `header_length`); malformed is `InvalidInput`."""
    header, binary = _split(body, header_length)
    if not isinstance(header, dict) or not isinstance(header.get("outputs"), list):
        raise InvalidInput("the response body has no 'outputs' list")
    outputs: dict[str, np.ndarray[Any, Any]] = {}
    offset = 0
    for raw in header["outputs"]:
        name, array, offset = _tensor(raw, binary, offset)
        outputs[name] = array
    parameters = header.get("parameters") or {}
    if not isinstance(parameters, dict):
        raise InvalidInput("the response's 'parameters' must be an object")
    request_id = header.get("id")
    return DecodedResponse(
        outputs=outputs,
        model_name=str(header.get("model_name", "")),
        model_version=str(header.get("model_version", "")),
        id=str(request_id) if request_id is not None else None,
        parameters=dict(parameters),
    )
