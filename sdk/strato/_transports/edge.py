"""`Edge`: Open Inference Protocol v2 over HTTP (httpx, keep-alive) to the device daemon.

The same OIP-over-HTTP code serves the Lambda HTTP API (`Lambda(http_url=...)`), which adds a
SigV4 signature. httpx errors and HTTP statuses are translated at one boundary (`translating`,
`raise_for_status`) into strato's error tree, so the router sees only `TransportError` (go
elsewhere) or `InferenceError` (the request is wrong; never re-route).
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any

import httpx

from strato._codec import HEADER_LENGTH, decode_response, encode_request, header_length_from, loads
from strato._errors import (
    ConfigError,
    InvalidInput,
    ModelNotFound,
    StratoError,
    Throttled,
    Timeout,
    Unavailable,
)
from strato._messages import InferRequest, InferResponse

from .base import AsyncTransport, Transport

__all__ = [
    "AsyncEdge",
    "Edge",
    "OipHttp",
    "error_for_status",
    "raise_for_status",
    "response_from",
    "translating",
]

VERSION_HEADER = "X-Strato-Model-Version"
PRECISION_HEADER = "X-Strato-Precision"
# Signs one request: (method, url, headers, body) -> headers to send (SigV4 for the HTTP API).
Signer = Callable[[str, str, dict[str, str], bytes], dict[str, str]]


@contextmanager
def translating(backend: str, timeout: float | None) -> Iterator[None]:
    """httpx's failures as strato's: timeouts → `Timeout`, anything on the wire → `Unavailable`."""
    try:
        yield
    except httpx.TimeoutException as exc:
        raise Timeout(f"{backend}: no answer within {timeout}s ({exc!r})", backend=backend) from exc
    except httpx.HTTPError as exc:
        raise Unavailable(f"{backend}: {exc!r}", backend=backend) from exc


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


def _message(content: bytes) -> str:
    try:
        body = loads(content)
    except InvalidInput:
        return content[:200].decode("utf-8", "replace")
    if isinstance(body, dict):
        return str(body.get("error") or body.get("message") or body)
    return str(body)


def raise_for_status(response: httpx.Response, backend: str) -> None:
    if response.status_code >= 300:
        raise error_for_status(response.status_code, _message(response.content), backend)


def response_from(
    content: bytes,
    header_length: int | None,
    request: InferRequest,
    served_by: str,
    headers: httpx.Headers | None = None,
) -> InferResponse:
    """Decode an OIP response body; a body the codec refuses is the backend's fault."""
    try:
        decoded = decode_response(content, header_length=header_length)
    except InvalidInput as exc:
        raise Unavailable(
            f"{served_by} sent a malformed response: {exc}", backend=served_by
        ) from exc
    version = decoded.model_version
    precision = decoded.parameters.get("precision")
    if headers is not None:
        version = headers.get(VERSION_HEADER) or version
        precision = headers.get(PRECISION_HEADER) or precision
    return InferResponse(
        decoded.outputs,
        decoded.model_name or request.model,
        version,
        decoded.id,
        served_by,
        precision,
        decoded.parameters,
    )


def _infer_path(model: str, version: str | None) -> str:
    if version is None:
        return f"/v2/models/{model}/infer"
    return f"/v2/models/{model}/versions/{version}/infer"


def _body(request: InferRequest, binary: bool) -> tuple[bytes, dict[str, str]]:
    body, header_length = encode_request(
        request.inputs,
        binary=binary,
        outputs=request.outputs,
        binary_outputs=binary,
        id=request.id,
        parameters=request.parameters or None,
    )
    if header_length is None:
        return body, {"content-type": "application/json"}
    return body, {"content-type": "application/octet-stream", HEADER_LENGTH: str(header_length)}


def metadata_from(body: bytes | str, backend: str) -> dict[str, Any]:
    """OIP model metadata from a response body; a tier answering anything else is broken."""
    metadata = loads(body)
    if not isinstance(metadata, dict):
        raise Unavailable(f"{backend}: model metadata is not a JSON object", backend=backend)
    return metadata


class OipHttp(Transport):
    """OIP v2 over HTTP with keep-alive; `Edge` and the Lambda HTTP API are this with a name."""

    name = "oip-http"
    tier = "edge"
    payload_limit = 8 * 1024 * 1024

    def __init__(
        self,
        url: str,
        *,
        token: str | None = None,
        binary: bool = True,
        timeout: float = 10.0,
        name: str | None = None,
        tier: str | None = None,
        signer: Signer | None = None,
        client: httpx.Client | None = None,
        max_connections: int = 32,
    ) -> None:
        self.url = url.rstrip("/")
        self.binary = binary
        self.timeout = timeout
        self.name = name or self.name
        self.tier = tier or self.tier
        self._signer = signer
        headers = {"authorization": f"Bearer {token}"} if token else {}
        limits = httpx.Limits(
            max_connections=max_connections, max_keepalive_connections=max_connections
        )
        self._client = client or httpx.Client(
            base_url=self.url, headers=headers, timeout=timeout, limits=limits
        )
        self._paths: dict[tuple[str, str | None], str] = {}

    def _send(
        self, method: str, path: str, body: bytes, headers: dict[str, str], timeout: float
    ) -> httpx.Response:
        if self._signer is not None:
            headers = self._signer(method, self.url + path, headers, body)
        with translating(self.name, timeout):
            return self._client.request(
                method, path, content=body, headers=headers, timeout=timeout
            )

    def infer(self, request: InferRequest, *, timeout: float | None = None) -> InferResponse:
        key = (request.model, request.version)
        path = self._paths.get(key)
        if path is None:
            path = self._paths[key] = _infer_path(*key)
        body, headers = _body(request, self.binary)
        response = self._send("POST", path, body, headers, timeout or self.timeout)
        raise_for_status(response, self.name)
        return response_from(
            response.content,
            header_length_from(response.headers),
            request,
            self.name,
            response.headers,
        )

    def metadata(self, model: str, *, version: str | None = None) -> dict[str, Any]:
        path = f"/v2/models/{model}" + (f"/versions/{version}" if version else "")
        response = self._send("GET", path, b"", {}, self.timeout)
        raise_for_status(response, self.name)
        return metadata_from(response.content, self.name)

    def close(self) -> None:
        self._client.close()

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self.url!r}, name={self.name!r}, tier={self.tier!r})"


class Edge(OipHttp):
    """The device daemon (`strato edge serve`), binary tensors by default.

    >>> client = Client(edge=Edge("http://127.0.0.1:8000", token="..."), cloud=Lambda("strato-infer"))
    """

    name = "edge"
    tier = "edge"
    payload_limit = 8 * 1024 * 1024


class AsyncEdge(AsyncTransport):
    """The async twin of `Edge` (httpx.AsyncClient)."""

    name = "edge"
    tier = "edge"
    payload_limit = 8 * 1024 * 1024

    def __init__(
        self,
        url: str,
        *,
        token: str | None = None,
        binary: bool = True,
        timeout: float = 10.0,
        name: str | None = None,
        tier: str | None = None,
        client: httpx.AsyncClient | None = None,
        max_connections: int = 64,
    ) -> None:
        self.url = url.rstrip("/")
        self.binary = binary
        self.timeout = timeout
        self.name = name or self.name
        self.tier = tier or self.tier
        headers = {"authorization": f"Bearer {token}"} if token else {}
        limits = httpx.Limits(
            max_connections=max_connections, max_keepalive_connections=max_connections
        )
        self._client = client or httpx.AsyncClient(
            base_url=self.url, headers=headers, timeout=timeout, limits=limits
        )

    async def infer(self, request: InferRequest, *, timeout: float | None = None) -> InferResponse:
        body, headers = _body(request, self.binary)
        timeout = timeout or self.timeout
        with translating(self.name, timeout):
            response = await self._client.post(
                _infer_path(request.model, request.version),
                content=body,
                headers=headers,
                timeout=timeout,
            )
        raise_for_status(response, self.name)
        return response_from(
            response.content,
            header_length_from(response.headers),
            request,
            self.name,
            response.headers,
        )

    async def metadata(self, model: str, *, version: str | None = None) -> dict[str, Any]:
        path = f"/v2/models/{model}" + (f"/versions/{version}" if version else "")
        with translating(self.name, self.timeout):
            response = await self._client.get(path)
        raise_for_status(response, self.name)
        return metadata_from(response.content, self.name)

    async def aclose(self) -> None:
        await self._client.aclose()
