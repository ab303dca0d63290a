"""What every OIP-over-HTTP transport shares: the request's bytes, the status → error mapping,
and the response decode. No HTTP client here: `Edge` sends over `strato._http11`, the Lambda
HTTP API over httpx.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any, cast
from urllib.parse import quote

import numpy as np

from strato._codec import decode_response, dumps, encode_request, loads
from strato._errors import (
    ConfigError,
    InvalidInput,
    ModelNotFound,
    StratoError,
    Throttled,
    Timeout,
    Unavailable,
)
from strato._inference import InferRequest, InferResponse
from strato._tensors import datatype_of

__all__ = [
    "PRECISION_HEADER",
    "VERSION_HEADER",
    "Signer",
    "error_for_status",
    "infer_path",
    "message_of",
    "metadata_from",
    "metadata_path",
    "request_header",
    "request_parts",
    "response_from",
    "tensor_views",
]

# Byte orders that are little-endian on the wire as they are ("=" only on a little-endian host).
_LITTLE = ("<", "|", "=") if np.little_endian else ("<", "|")
VERSION_HEADER = "X-Strato-Model-Version"
PRECISION_HEADER = "X-Strato-Precision"
# Signs one request: (method, url, headers, body) -> headers to send (SigV4 for the HTTP API).
Signer = Callable[[str, str, dict[str, str], bytes], dict[str, str]]


def error_for_status(status: int, message: str, backend: str) -> StratoError:
    """The strato error for an HTTP (or envelope) status that is not a success."""
    text = f"{backend} answered {status}: {message}"
    if status in (400, 413, 422):
        return InvalidInput(text)
    if status == 404:
        return ModelNotFound(text)
    if status == 429:
        return Throttled(text, backend=backend)
    if status in (408, 504):
        return Timeout(text, backend=backend)
    if status in (401, 403):
        return ConfigError(f"{text} (check the token or credentials)")
    if status >= 500:
        return Unavailable(text, backend=backend)
    return InvalidInput(text)


def _as_bytes(content: bytes | bytearray | str) -> bytes:
    # The HTTP/1.1 client reads bodies into a bytearray (one buffer, filled in place): orjson,
    # json and numpy read it exactly like bytes, so it is passed on as it is, not copied.
    return cast("bytes", content)


def message_of(content: bytes | bytearray) -> str:
    """The `error` of an error body, or its first 200 characters."""
    try:
        body = loads(_as_bytes(content))
    except InvalidInput:
        return bytes(content[:200]).decode("utf-8", "replace")
    if isinstance(body, dict):
        return str(body.get("error") or body.get("message") or body)
    return str(body)


def response_from(
    content: bytes | bytearray,
    header_length: int | None,
    request: InferRequest,
    served_by: str,
    headers: Mapping[str, str] | None = None,
) -> InferResponse:
    """Decode an OIP response body; a body the codec refuses is the backend's fault.

    `headers` may be lower-cased (strato's HTTP/1.1 client) or case-insensitive (httpx).
    """
    try:
        decoded = decode_response(_as_bytes(content), header_length=header_length)
    except InvalidInput as exc:
        raise Unavailable(
            f"{served_by} sent a malformed response: {exc}", backend=served_by
        ) from exc
    version = decoded.model_version
    precision = decoded.parameters.get("precision")
    if headers is not None:
        version = headers.get(VERSION_HEADER.lower()) or version
        precision = headers.get(PRECISION_HEADER.lower()) or precision
    return InferResponse(
        decoded.outputs,
        decoded.model_name or request.model,
        version,
        decoded.id,
        served_by,
        precision,
        decoded.parameters,
    )


def infer_path(model: str, version: str | None) -> str:
    model = quote(model, safe="@:+")
    if version is None:
        return f"/v2/models/{model}/infer"
    return f"/v2/models/{model}/versions/{quote(version, safe='')}/infer"


def metadata_path(model: str, version: str | None) -> str:
    path = f"/v2/models/{quote(model, safe='@:+')}"
    return path + (f"/versions/{quote(version, safe='')}" if version else "")


def metadata_from(body: bytes | bytearray | str, backend: str) -> dict[str, Any]:
    """OIP model metadata from a response body; a tier answering anything else is broken."""
    metadata = loads(_as_bytes(body))
    if not isinstance(metadata, dict):
        raise Unavailable(f"{backend}: model metadata is not a JSON object", backend=backend)
    return metadata


def request_header(request: InferRequest, binary_outputs: bool) -> dict[str, Any]:
    """The JSON header of an infer request, without its `inputs` (as `encode_request` writes it)."""
    header: dict[str, Any] = {}
    if request.id is not None:
        header["id"] = request.id
    params = dict(request.parameters) if request.parameters else {}
    if binary_outputs and not request.outputs:
        params["binary_data_output"] = True
    if params:
        header["parameters"] = params
    if request.outputs:
        header["outputs"] = [
            {"name": name, "parameters": {"binary_data": binary_outputs}}
            for name in request.outputs
        ]
    return header


def tensor_views(inputs: Mapping[str, np.ndarray[Any, Any]]) -> list[memoryview]:
    """Each tensor's little-endian C-order bytes as a view (a copy only when not laid out so)."""
    views = []
    for array in inputs.values():
        if array.flags.c_contiguous and array.dtype.byteorder in _LITTLE and array.size:
            views.append(memoryview(array).cast("B"))  # type: ignore[arg-type]
            continue
        wire = np.ascontiguousarray(array, dtype=array.dtype.newbyteorder("<"))
        views.append(wire.reshape(-1).view(np.uint8).data)
    return views


def request_parts(
    request: InferRequest, binary: bool
) -> tuple[list[bytes | memoryview], int, int | None]:
    """The body of `POST …/infer` as buffers to send as they are: (parts, length, header length).

    Binary tensors go out as views of the caller's arrays (no `tobytes`, no join): the
    socket's `sendmsg` gathers them. JSON bodies are the codec's.
    """
    if not binary:
        body, _ = encode_request(
            request.inputs,
            binary=False,
            outputs=request.outputs,
            binary_outputs=False,
            id=request.id,
            parameters=request.parameters or None,
        )
        return [body], len(body), None
    header = request_header(request, binary_outputs=True)
    entries: list[dict[str, Any]] = []
    parts: list[bytes | memoryview] = [b""]
    size = 0
    for name, wire in zip(request.inputs, tensor_views(request.inputs), strict=True):
        array = request.inputs[name]
        entries.append(
            {
                "name": name,
                "datatype": datatype_of(array.dtype.newbyteorder("<")),
                "shape": list(array.shape),
                "parameters": {"binary_data_size": wire.nbytes},
            }
        )
        parts.append(wire)
        size += wire.nbytes
    header["inputs"] = entries
    encoded = dumps(header)
    parts[0] = encoded
    return parts, size + len(encoded), len(encoded)
