"""`Edge`: Open Inference Protocol v2 to the device daemon over lean keep-alive HTTP/1.1.

`Edge` and `AsyncEdge` speak through `strato._http11` (raw sockets, TCP or a Unix domain
socket), not a general-purpose HTTP client: on a device the client library was two thirds
of an edge call. `OipHttp` (httpx) remains for the Lambda HTTP API, which adds TLS to a
remote front, proxies and a SigV4 signature. Failures are translated at one boundary per
client (`translating`, `translating_wire`, `error_for_status`) into strato's error tree, so
the router sees only `TransportError` (go elsewhere) or `InferenceError` (never re-route).
"""

from __future__ import annotations

import time
from contextlib import contextmanager
from typing import TYPE_CHECKING, Any

from strato._codec import HEADER_LENGTH, header_length_from
from strato._errors import Timeout, Unavailable
from strato._http11 import Endpoint, Http11Pool, ProtocolError

from ._oip import (
    PRECISION_HEADER,
    VERSION_HEADER,
    Signer,
    error_for_status,
    infer_path,
    message_of,
    metadata_from,
    metadata_path,
    request_parts,
    response_from,
)
from ._oip_cache import RequestHeads, ResponsePlans
from .base import AsyncTransport, Transport

if TYPE_CHECKING:
    from collections.abc import Iterator

    import httpx

    from strato._http11 import Http11Response
    from strato._http11_async import AsyncHttp11Pool
    from strato._inference import InferRequest, InferResponse
    from strato._shm import ShmSession

__all__ = [
    "PRECISION_HEADER",
    "VERSION_HEADER",
    "AsyncEdge",
    "Edge",
    "OipHttp",
    "Signer",
    "error_for_status",
    "metadata_from",
    "raise_for_status",
    "response_from",
    "translating",
    "translating_wire",
]


@contextmanager
def translating(backend: str, timeout: float | None) -> Iterator[None]:
    """httpx's failures as strato's: timeouts → `Timeout`, anything on the wire → `Unavailable`."""
    import httpx

    try:
        yield
    except httpx.TimeoutException as exc:
        raise Timeout(f"{backend}: no answer within {timeout}s ({exc!r})", backend=backend) from exc
    except httpx.HTTPError as exc:
        raise Unavailable(f"{backend}: {exc!r}", backend=backend) from exc


@contextmanager
def translating_wire(backend: str, timeout: float | None) -> Iterator[None]:
    """Socket failures as strato's: timeouts → `Timeout`, refused/reset/garbage → `Unavailable`."""
    try:
        yield
    except TimeoutError as exc:  # socket.timeout and asyncio's timeouts are TimeoutError
        raise Timeout(f"{backend}: no answer within {timeout}s ({exc!r})", backend=backend) from exc
    except (OSError, ProtocolError) as exc:
        raise Unavailable(f"{backend}: {exc!r}", backend=backend) from exc


def raise_for_status(response: httpx.Response, backend: str) -> None:
    if response.status_code >= 300:
        raise error_for_status(response.status_code, message_of(response.content), backend)


class OipHttp(Transport):
    """OIP v2 over httpx with keep-alive: the Lambda HTTP API (TLS, proxies, SigV4)."""

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
        import httpx

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
        parts, _, header_length = request_parts(request, self.binary)
        body = b"".join(parts)
        headers = {"content-type": "application/json"}
        if header_length is not None:
            headers = {
                "content-type": "application/octet-stream",
                HEADER_LENGTH: str(header_length),
            }
        path = infer_path(request.model, request.version)
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
        response = self._send("GET", metadata_path(model, version), b"", {}, self.timeout)
        raise_for_status(response, self.name)
        return metadata_from(response.content, self.name)

    def close(self) -> None:
        self._client.close()

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self.url!r}, name={self.name!r}, tier={self.tier!r})"


class _EdgeWire:
    """What `Edge` and `AsyncEdge` share: the endpoint and the request heads, built once."""

    name = "edge"
    tier = "edge"
    payload_limit = 8 * 1024 * 1024

    def _setup(
        self, url: str, token: str | None, binary: bool, timeout: float, name: str | None,
        tier: str | None,
    ) -> None:  # fmt: skip
        self.url = url.rstrip("/")
        self.endpoint = Endpoint.parse(self.url)
        self.binary = binary
        self.timeout = timeout
        self.name = name or self.name
        self.tier = tier or self.tier
        auth = f"authorization: Bearer {token}\r\n" if token else ""
        self._common = f"host: {self.endpoint.authority}\r\n{auth}"
        self._heads: dict[tuple[str, str | None], bytes] = {}
        self._requests = RequestHeads(self._post_head)
        self._responses = ResponsePlans()

    def _post_head(self, request: InferRequest) -> bytes:
        """`POST …/infer` up to its per-call headers; one string format per call after the first."""
        key = (request.model, request.version)
        head = self._heads.get(key)
        if head is None:
            path = self.endpoint.prefix + infer_path(*key)
            head = self._heads[key] = f"POST {path} HTTP/1.1\r\n{self._common}".encode("latin-1")
        return head

    def _infer_parts(self, request: InferRequest) -> list[bytes | memoryview]:
        if self.binary:
            return self._requests.parts(request)
        parts, size, _ = request_parts(request, False)
        tail = f"content-type: application/json\r\ncontent-length: {size}\r\n\r\n"
        return [self._post_head(request) + tail.encode("latin-1"), *parts]

    def _get_parts(self, path: str) -> list[bytes | memoryview]:
        return [f"GET {self.endpoint.prefix}{path} HTTP/1.1\r\n{self._common}\r\n".encode()]

    def _answer(self, response: Http11Response, request: InferRequest) -> InferResponse:
        if response.status >= 300:
            raise error_for_status(response.status, message_of(response.body), self.name)
        headers = response.headers
        return self._responses.decode(
            response.body, header_length_from(headers), request, self.name, headers
        )

    def _metadata(self, response: Http11Response) -> dict[str, Any]:
        if response.status >= 300:
            raise error_for_status(response.status, message_of(response.body), self.name)
        metadata = metadata_from(response.body, self.name)
        # The daemon says its body limit (`--max-body-bytes`): the client splits rows to fit
        # it instead of sending what would be refused with a 413.
        limit = (metadata.get("parameters") or {}).get("max_body_bytes")
        if isinstance(limit, int) and not isinstance(limit, bool) and limit > 0:
            self.payload_limit = min(limit, type(self).payload_limit)
        return metadata

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self.url!r}, name={self.name!r}, tier={self.tier!r})"


def _nbytes(request: InferRequest) -> int:
    return sum(array.nbytes for array in request.inputs.values())


class Edge(_EdgeWire, Transport):
    """The device daemon (`strato edge serve`), binary tensors by default.

    `url` is `http://host:port` or `unix:///run/strato.sock` (`strato edge serve --uds`).
    `shared_memory=True` moves tensors through Triton's system shared-memory extension when
    the daemon is on this machine and offers it (`--allow-shm`); otherwise it changes nothing.
    Requests whose inputs total under `shm_min_bytes` still go as binary tensors: below ~64 KiB
    the extra JSON of the shared-memory form costs more than sending the bytes.

    >>> client = Client(edge=Edge("http://127.0.0.1:8000", token="..."), cloud=Lambda("strato-infer"))
    """

    def __init__(
        self,
        url: str,
        *,
        token: str | None = None,
        binary: bool = True,
        timeout: float = 10.0,
        name: str | None = None,
        tier: str | None = None,
        max_connections: int = 32,
        shared_memory: bool = False,
        shm_min_bytes: int = 64 * 1024,
    ) -> None:
        self._setup(url, token, binary, timeout, name, tier)
        self._pool = Http11Pool(self.endpoint, max_idle=max_connections)
        self._shm: ShmSession | None = None
        self._shm_wanted = shared_memory and self.endpoint.is_local
        self._shm_min_bytes = shm_min_bytes

    def _exchange(self, parts: list[bytes | memoryview], timeout: float) -> Http11Response:
        try:  # `translating_wire`, inlined: a generator context manager per call costs ~1 µs
            return self._pool.request(parts, time.monotonic() + timeout)
        except TimeoutError as exc:
            raise Timeout(
                f"{self.name}: no answer within {timeout}s ({exc!r})", backend=self.name
            ) from exc
        except (OSError, ProtocolError) as exc:
            raise Unavailable(f"{self.name}: {exc!r}", backend=self.name) from exc

    def infer(self, request: InferRequest, *, timeout: float | None = None) -> InferResponse:
        """Send one OIP request over a pooled keep-alive connection and return the decoded answer."""
        timeout = timeout or self.timeout
        if self._shm_wanted and _nbytes(request) >= self._shm_min_bytes:
            shm = self._shm if self._shm is not None else self._start_shm()
            if shm is not None:
                return shm.infer(request, timeout)
        return self._answer(self._exchange(self._infer_parts(request), timeout), request)

    def _start_shm(self) -> ShmSession | None:
        from strato._shm import ShmSession

        self._shm = ShmSession.start(self)
        if self._shm is None:
            self._shm_wanted = False  # the daemon does not offer it to us: binary from now on
        return self._shm

    @property
    def uses_shared_memory(self) -> bool:
        """Do calls go through shared memory (known after the first call)?"""
        return self._shm is not None

    def raw(self, method: str, path: str, body: bytes = b"", timeout: float | None = None) -> Any:
        """One request to `path` on the daemon: (status, lower-cased headers, body)."""
        timeout = timeout or self.timeout
        head = f"{method} {self.endpoint.prefix}{path} HTTP/1.1\r\n{self._common}"
        if body or method == "POST":
            head += f"content-type: application/json\r\ncontent-length: {len(body)}\r\n"
        response = self._exchange([f"{head}\r\n".encode(), body], timeout)
        return response.status, response.headers, response.body

    def metadata(self, model: str, *, version: str | None = None) -> dict[str, Any]:
        """The model's OIP metadata from the daemon (`GET /v2/models/{model}[/versions/{v}]`)."""
        response = self._exchange(self._get_parts(metadata_path(model, version)), self.timeout)
        return self._metadata(response)

    def close(self) -> None:
        """Close the pooled connections (and any shared-memory regions this transport registered)."""
        if self._shm is not None:
            self._shm.close()
            self._shm = None
        self._pool.close()


class AsyncEdge(_EdgeWire, AsyncTransport):
    """The async twin of `Edge` (asyncio streams, TCP or `unix:///path`)."""

    def __init__(
        self,
        url: str,
        *,
        token: str | None = None,
        binary: bool = True,
        timeout: float = 10.0,
        name: str | None = None,
        tier: str | None = None,
        max_connections: int = 64,
    ) -> None:
        from strato._http11_async import AsyncHttp11Pool

        self._setup(url, token, binary, timeout, name, tier)
        self._pool: AsyncHttp11Pool = AsyncHttp11Pool(self.endpoint, max_idle=max_connections)

    async def _exchange(self, parts: list[bytes | memoryview], timeout: float) -> Http11Response:
        with translating_wire(self.name, timeout):
            return await self._pool.request(parts, timeout)

    async def infer(self, request: InferRequest, *, timeout: float | None = None) -> InferResponse:
        """Send one OIP request to the daemon and return its answer (errors mapped as for `Edge`)."""
        timeout = timeout or self.timeout
        return self._answer(await self._exchange(self._infer_parts(request), timeout), request)

    async def metadata(self, model: str, *, version: str | None = None) -> dict[str, Any]:
        """The model's OIP metadata from the daemon (`GET /v2/models/{model}[/versions/{v}]`)."""
        parts = self._get_parts(metadata_path(model, version))
        return self._metadata(await self._exchange(parts, self.timeout))

    async def aclose(self) -> None:
        """Close the pooled connections."""
        await self._pool.aclose()
