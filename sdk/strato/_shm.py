"""`Edge(..., shared_memory=True)`: tensors through Triton's system shared-memory extension.

When the daemon runs on this machine and lists `system_shared_memory` in its server metadata
(`strato edge serve --allow-shm`), each request copies its inputs into a POSIX shared-memory
object registered with the daemon and names the region instead of sending the bytes; the
daemon reads them in place and writes the outputs into a second region. Only a small JSON
header crosses the socket. A slot (input and output region) is lent to one call at a time and
grows when a request needs more room; `close()` unregisters and unlinks them.

Outputs whose size cannot be known before the run (a dynamic axis other than the batch) come
back as binary tensors in the response, as without shared memory.
"""

from __future__ import annotations

import contextlib
import itertools
import mmap
import os
from collections import deque
from typing import TYPE_CHECKING, Any, Protocol

import numpy as np

from ._codec import dumps, header_length_from, loads
from ._errors import InvalidInput, StratoError, Unavailable
from ._tensors import datatype_of, dtype_of

if TYPE_CHECKING:
    from ._http11 import Http11Response
    from ._inference import InferRequest, InferResponse

__all__ = ["ShmPeer", "ShmSession", "ShmSlot"]


class ShmPeer(Protocol):
    """What a shared-memory session needs of the `Edge` transport that owns it (a protocol, so
    this module and the transport do not import each other)."""

    name: str

    def raw(self, method: str, path: str, body: bytes = b"", timeout: float | None = None) -> Any:
        """One request to the daemon: (status, headers, body)."""

    def metadata(self, model: str, *, version: str | None = None) -> dict[str, Any]:
        """The model's OIP metadata."""

    def _post_head(self, request: InferRequest) -> bytes: ...

    def _exchange(self, parts: list[bytes | memoryview], timeout: float) -> Http11Response: ...

    def _answer(self, response: Http11Response, request: InferRequest) -> InferResponse: ...


SHM_DIR = "/dev/shm"
_ALIGN = 64
_counter = itertools.count()


def _aligned(size: int) -> int:
    return (size + _ALIGN - 1) // _ALIGN * _ALIGN


class _Region:
    """One shared-memory object of ours, registered with the daemon under `name`."""

    def __init__(self, name: str, size: int) -> None:
        self.name = name
        self.size = size
        self.path = os.path.join(SHM_DIR, name)
        fd = os.open(self.path, os.O_RDWR | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC, 0o600)
        try:
            os.ftruncate(fd, size)
            self.mapping = mmap.mmap(fd, size, mmap.MAP_SHARED)
        finally:
            os.close(fd)
        self.buffer = np.frombuffer(self.mapping, dtype=np.uint8)

    def close(self) -> None:
        del self.buffer
        with contextlib.suppress(BufferError):  # a caller still holds a view: GC closes it
            self.mapping.close()
        with contextlib.suppress(FileNotFoundError):
            os.unlink(self.path)


class ShmSlot:
    """An input region and an output region, lent to one call at a time."""

    def __init__(self, session: ShmSession, input_bytes: int, output_bytes: int) -> None:
        base = f"strato-{os.getpid()}-{id(session):x}-{next(_counter)}"
        self.session = session
        self.inputs = _Region(f"{base}-in", max(_aligned(input_bytes), 4096))
        self.outputs = _Region(f"{base}-out", max(_aligned(output_bytes), 4096))
        try:
            for region in (self.inputs, self.outputs):
                session.register(region)
        except BaseException:
            self.close()
            raise

    def fits(self, input_bytes: int, output_bytes: int) -> bool:
        return input_bytes <= self.inputs.size and output_bytes <= self.outputs.size

    def close(self) -> None:
        for region in (self.inputs, self.outputs):
            with contextlib.suppress(StratoError):
                self.session.unregister(region)
            region.close()


class ShmSession:
    """The shared-memory side of one `Edge`: slots, model output specs, the request/answer."""

    def __init__(self, edge: ShmPeer) -> None:
        self.edge = edge
        self._slots: deque[ShmSlot] = deque()
        self._outputs: dict[tuple[str, str | None], list[dict[str, Any]]] = {}

    @classmethod
    def start(cls, edge: ShmPeer) -> ShmSession | None:
        """A session when the daemon offers the extension to us, else None (never raises)."""
        try:
            status, _, body = edge.raw("GET", "/v2")
            extensions = loads(body).get("extensions", []) if status == 200 else []
            if "system_shared_memory" not in extensions:
                return None
            session = cls(edge)
            session._slots.append(ShmSlot(session, 4096, 4096))  # proves we may register
        except (StratoError, OSError, AttributeError):
            return None
        return session

    def register(self, region: _Region) -> None:
        body = dumps({"key": f"/{region.name}", "offset": 0, "byte_size": region.size})
        path = f"/v2/systemsharedmemory/region/{region.name}/register"
        self._check(self.edge.raw("POST", path, body), "register")

    def unregister(self, region: _Region) -> None:
        path = f"/v2/systemsharedmemory/region/{region.name}/unregister"
        self._check(self.edge.raw("POST", path), "unregister")

    def _check(self, answer: tuple[int, dict[str, str], bytes], what: str) -> None:
        from ._transports._oip import error_for_status, message_of

        status, _, body = answer
        if status != 200:
            raise error_for_status(status, f"{what}: {message_of(body)}", self.edge.name)

    # --- one call --------------------------------------------------------------------------
    def _output_specs(self, request: InferRequest) -> list[dict[str, Any]]:
        key = (request.model, request.version)
        specs = self._outputs.get(key)
        if specs is None:
            metadata = self.edge.metadata(request.model, version=request.version)
            specs = self._outputs[key] = list(metadata.get("outputs", []))
        if request.outputs:
            wanted = set(request.outputs)
            return [spec for spec in specs if spec.get("name") in wanted]
        return specs

    @staticmethod
    def _output_bytes(spec: dict[str, Any], batch: int) -> int | None:
        shape = spec.get("shape", [])
        if any(d == -1 for d in shape[1:]) or not isinstance(spec.get("datatype"), str):
            return None  # a dynamic axis past the batch: the size is known only after the run
        dims = [batch if d == -1 else d for d in shape]
        return int(np.prod(dims, dtype=np.int64)) * dtype_of(spec["datatype"]).itemsize

    def _borrow(self, input_bytes: int, output_bytes: int) -> ShmSlot:
        while self._slots:
            slot = self._slots.pop()
            if slot.fits(input_bytes, output_bytes):
                return slot
            slot.close()
        return ShmSlot(self, input_bytes * 2, output_bytes * 2)

    def infer(self, request: InferRequest, timeout: float) -> InferResponse:
        arrays = {
            name: np.ascontiguousarray(a, dtype=a.dtype.newbyteorder("<"))
            for name, a in request.inputs.items()
        }
        batch = next(iter(arrays.values())).shape[0] if arrays else 1
        placed: list[tuple[dict[str, Any], int | None]] = [
            (spec, self._output_bytes(spec, batch)) for spec in self._output_specs(request)
        ]
        input_bytes = sum(_aligned(a.nbytes) for a in arrays.values())
        output_bytes = sum(_aligned(size) for _, size in placed if size is not None)
        slot = self._borrow(input_bytes, output_bytes)
        try:
            header = self._header(request, arrays, placed, slot)
            body = dumps(header)
            head = self.edge._post_head(request) + (
                f"content-type: application/json\r\ncontent-length: {len(body)}\r\n\r\n".encode()
            )
            response = self.edge._exchange([head, body], timeout)
            if response.status >= 300:
                return self.edge._answer(response, request)  # raises the mapped error
            return self._answer(response.body, response.headers, request, slot)
        finally:
            self._slots.append(slot)

    @staticmethod
    def _header(
        request: InferRequest,
        arrays: dict[str, np.ndarray[Any, Any]],
        placed: list[tuple[dict[str, Any], int | None]],
        slot: ShmSlot,
    ) -> dict[str, Any]:
        entries, offset = [], 0
        for name, array in arrays.items():
            slot.inputs.buffer[offset : offset + array.nbytes] = array.reshape(-1).view(np.uint8)
            entries.append(
                {
                    "name": name,
                    "datatype": datatype_of(array.dtype),
                    "shape": list(array.shape),
                    "parameters": {
                        "shared_memory_region": slot.inputs.name,
                        "shared_memory_offset": offset,
                        "shared_memory_byte_size": array.nbytes,
                    },
                }
            )
            offset += _aligned(array.nbytes)
        outputs, offset = [], 0
        for spec, size in placed:
            params: dict[str, Any] = {"binary_data": True}
            if size is not None:
                params = {
                    "shared_memory_region": slot.outputs.name,
                    "shared_memory_offset": offset,
                    "shared_memory_byte_size": size,
                }
                offset += _aligned(size)
            outputs.append({"name": spec["name"], "parameters": params})
        header: dict[str, Any] = {"inputs": entries, "outputs": outputs}
        if request.id is not None:
            header["id"] = request.id
        if request.parameters:
            header["parameters"] = dict(request.parameters)
        return header

    def _answer(
        self, body: bytearray, headers: dict[str, str], request: InferRequest, slot: ShmSlot
    ) -> InferResponse:
        from ._transports._oip import response_from

        length = header_length_from(headers)
        try:
            header = loads(bytes(body if length is None else body[:length]))
            shm_outputs, rest = self._split_outputs(header, slot)
        except (InvalidInput, KeyError, TypeError, ValueError) as exc:
            raise Unavailable(
                f"{self.edge.name} sent a malformed shared-memory response: {exc}",
                backend=self.edge.name,
            ) from exc
        header["outputs"] = rest
        encoded = dumps(header)
        binary = b"" if length is None else bytes(body[length:])
        answer = response_from(
            encoded + binary, len(encoded) if binary else None, request, self.edge.name, headers
        )
        answer.outputs.update(shm_outputs)
        return answer

    @staticmethod
    def _split_outputs(
        header: dict[str, Any], slot: ShmSlot
    ) -> tuple[dict[str, np.ndarray[Any, Any]], list[Any]]:
        shm_outputs: dict[str, np.ndarray[Any, Any]] = {}
        rest = []
        for raw in header.get("outputs", []):
            params = raw.get("parameters") or {}
            if params.get("shared_memory_region") != slot.outputs.name:
                rest.append(raw)
                continue
            dtype = dtype_of(raw["datatype"]).newbyteorder("<")
            offset = int(params.get("shared_memory_offset", 0))
            size = int(params["shared_memory_byte_size"])
            if offset + size > slot.outputs.size:
                raise ValueError(f"output {raw['name']!r} lies outside its region")
            view = slot.outputs.buffer[offset : offset + size]
            # Copied out: the slot serves the next call as soon as this one returns.
            shm_outputs[raw["name"]] = view.view(dtype).reshape(raw["shape"]).copy()
        return shm_outputs, rest

    def close(self) -> None:
        while self._slots:
            self._slots.pop().close()
