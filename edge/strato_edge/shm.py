"""Triton's system shared-memory extension for the edge daemon (`strato edge serve --allow-shm`).

A client on the same machine puts a tensor in a POSIX shared-memory object (`/dev/shm/<key>`),
registers a region of it (`POST /v2/systemsharedmemory/region/{name}/register` with `key`,
`offset`, `byte_size`), then names the region in a tensor's parameters
(`shared_memory_region`, `shared_memory_offset`, `shared_memory_byte_size`) instead of sending
its bytes; requested outputs can be written into a region the same way. tritonclient's
`tritonclient.utils.shared_memory` works unchanged against it.

Safety: off unless `--allow-shm`; only clients on this machine (a loopback peer or the Unix
socket) may register or use regions; a key names one file directly under /dev/shm (no path,
no link); every use is bounds-checked against the registered region *and* against the object's
current size (a client that shrinks the object after registering would otherwise make the
server read past its end and die of SIGBUS).
"""

from __future__ import annotations

import contextlib
import mmap
import os
import re
import stat
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import numpy as np
from strato import InvalidInput, TensorSpec, serving

if TYPE_CHECKING:
    from collections.abc import Mapping

__all__ = ["EXTENSION", "ShmOutput", "ShmRegion", "SystemSharedMemory", "uses_shared_memory"]

EXTENSION = "system_shared_memory"
SHM_DIR = "/dev/shm"
_KEY = re.compile(r"^/?([A-Za-z0-9_][A-Za-z0-9_.\-]{0,254})$")
_MARKER = b"shared_memory_region"
# The protocol's datatypes (strato serves no BYTES); numpy dtypes through strato's TensorSpec.
_DATATYPES: tuple[str, ...] = ("BOOL", "UINT8", "UINT16", "UINT32", "UINT64", "INT8", "INT16")
_DATATYPES += ("INT32", "INT64", "FP16", "FP32", "FP64")
_NAMES = {TensorSpec("t", name, ()).dtype: name for name in _DATATYPES}


def uses_shared_memory(body: bytes, header_length: int | None) -> bool:
    """Does this request's JSON header mention a region? (A substring search, ~0.1 µs.)"""
    header = body if header_length is None else memoryview(body)[:header_length]
    return _MARKER in header


@dataclass(slots=True)
class ShmRegion:
    """One registered region: `byte_size` bytes at `offset` in the object `key`."""

    name: str
    key: str
    offset: int
    byte_size: int
    fd: int
    mapping: mmap.mmap

    def status(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "key": self.key,
            "offset": self.offset,
            "byte_size": self.byte_size,
        }

    def view(self, offset: int, size: int, tensor: str) -> memoryview:
        """`size` bytes at `offset` in the region, checked now (the object may have shrunk)."""
        if offset < 0 or size < 0 or offset + size > self.byte_size:
            raise InvalidInput(
                f"tensor {tensor!r}: {size} bytes at offset {offset} do not fit shared memory "
                f"region {self.name!r} of {self.byte_size} bytes"
            )
        if os.fstat(self.fd).st_size < self.offset + self.byte_size:
            raise InvalidInput(f"shared memory region {self.name!r}: its object shrank")
        start = self.offset + offset
        return memoryview(self.mapping)[start : start + size]

    def close(self) -> None:
        os.close(self.fd)
        # A request still reading the region holds a view: the mapping then closes with it.
        with contextlib.suppress(BufferError):
            self.mapping.close()


@dataclass(frozen=True, slots=True)
class ShmOutput:
    """Where a requested output goes: `byte_size` bytes at `offset` in `region`."""

    region: ShmRegion
    offset: int
    byte_size: int


def _integer(value: Any, what: str) -> int:
    if not isinstance(value, int) or isinstance(value, bool) or value < 0:
        raise InvalidInput(f"{what} must be a non-negative integer, got {value!r}")
    return value


class SystemSharedMemory:
    """The regions registered with one daemon, and the request/response side of the extension."""

    def __init__(self) -> None:
        self.regions: dict[str, ShmRegion] = {}

    # --- the control endpoints ---------------------------------------------------------------
    def register(self, name: str, body: bytes) -> None:
        request = serving.loads(body) if body else None
        if not isinstance(request, dict):
            raise InvalidInput('register needs {"key": ..., "offset": ..., "byte_size": ...}')
        key, offset = request.get("key"), _integer(request.get("offset", 0), "offset")
        byte_size = _integer(request.get("byte_size"), "byte_size")
        if name in self.regions:
            raise InvalidInput(f"shared memory region {name!r} is already registered")
        match = _KEY.match(key) if isinstance(key, str) else None
        if match is None or match.group(1) in (".", ".."):
            raise InvalidInput(f"shared memory key {key!r} must name an object in {SHM_DIR}")
        path = os.path.join(SHM_DIR, match.group(1))
        try:
            fd = os.open(path, os.O_RDWR | os.O_NOFOLLOW | os.O_CLOEXEC)
        except OSError as exc:
            raise InvalidInput(f"cannot open shared memory key {key!r}: {exc.strerror}") from None
        try:
            info = os.fstat(fd)
            if not stat.S_ISREG(info.st_mode):
                raise InvalidInput(f"shared memory key {key!r} is not a memory object")
            if byte_size == 0 or offset + byte_size > info.st_size:
                raise InvalidInput(
                    f"shared memory key {key!r} holds {info.st_size} bytes; a region of "
                    f"{byte_size} at offset {offset} does not fit"
                )
            mapping = mmap.mmap(fd, offset + byte_size, mmap.MAP_SHARED)
        except BaseException:
            os.close(fd)
            raise
        self.regions[name] = ShmRegion(name, str(key), offset, byte_size, fd, mapping)

    def unregister(self, name: str | None = None) -> None:
        """One region, or every region (`name` None); unknown names are an error, like Triton."""
        names = list(self.regions) if name is None else [name]
        if name is not None and name not in self.regions:
            raise InvalidInput(f"no shared memory region named {name!r}")
        for each in names:
            self.regions.pop(each).close()

    def status(self, name: str | None = None) -> list[dict[str, Any]]:
        if name is None:
            return [region.status() for region in self.regions.values()]
        return [self._region(name).status()]

    def close(self) -> None:
        self.unregister()

    def _region(self, name: Any) -> ShmRegion:
        region = self.regions.get(name) if isinstance(name, str) else None
        if region is None:
            raise InvalidInput(f"no shared memory region named {name!r} is registered")
        return region

    # --- requests and responses -------------------------------------------------------------
    def _place(self, params: Mapping[str, Any], tensor: str) -> tuple[ShmRegion, int, int]:
        if "shared_memory_byte_size" not in params:
            raise InvalidInput(f"tensor {tensor!r}: shared_memory_region needs a byte size")
        region = self._region(params["shared_memory_region"])
        offset = _integer(params.get("shared_memory_offset", 0), "shared_memory_offset")
        size = _integer(params["shared_memory_byte_size"], "shared_memory_byte_size")
        return region, offset, size

    def _input(self, raw: Mapping[str, Any], params: Mapping[str, Any]) -> np.ndarray[Any, Any]:
        name = str(raw.get("name"))
        if "data" in raw or "binary_data_size" in params:
            raise InvalidInput(f"input {name!r}: shared memory and data are exclusive")
        shape = raw.get("shape")
        if not isinstance(shape, list) or not all(type(d) is int and d >= 0 for d in shape):
            raise InvalidInput(f"input {name!r}: shape must be a list of non-negative integers")
        dtype = TensorSpec(name, str(raw.get("datatype")), tuple(shape)).dtype
        region, offset, size = self._place(params, name)
        needed = int(np.prod(shape, dtype=np.int64)) * dtype.itemsize
        if size != needed:
            raise InvalidInput(
                f"input {name!r}: shared_memory_byte_size {size} but shape {shape} "
                f"{raw.get('datatype')} is {needed} bytes"
            )
        view = region.view(offset, size, name)
        return np.frombuffer(view, dtype=dtype.newbyteorder("<")).reshape(shape)

    def decode(
        self, body: bytes, header_length: int | None
    ) -> tuple[serving.DecodedRequest, dict[str, ShmOutput]]:
        """A request whose tensors may live in regions: inputs are views of the region (no
        copy), and the outputs to write into regions after the run."""
        header = serving.loads(
            body if header_length is None else memoryview(body)[:header_length].tobytes()
        )
        if not isinstance(header, dict) or not isinstance(header.get("inputs"), list):
            raise InvalidInput("the request needs a non-empty 'inputs' list")
        shm_inputs: dict[str, np.ndarray[Any, Any]] = {}
        rest = []
        for raw in header["inputs"]:
            params = raw.get("parameters") if isinstance(raw, dict) else None
            if isinstance(params, dict) and "shared_memory_region" in params:
                shm_inputs[str(raw.get("name"))] = self._input(raw, params)
            else:
                rest.append(raw)
        shm_outputs: dict[str, ShmOutput] = {}
        for raw in header.get("outputs") or []:
            params = raw.get("parameters") if isinstance(raw, dict) else None
            if isinstance(params, dict) and "shared_memory_region" in params:
                name = str(raw.get("name"))
                shm_outputs[name] = ShmOutput(*self._place(params, name))
                params.pop("shared_memory_region")
                params["binary_data"] = False
        decoded = self._decode_rest(header, rest, body, header_length)
        if set(shm_inputs) & set(decoded.inputs):
            raise InvalidInput(f"input(s) {sorted(set(shm_inputs) & set(decoded.inputs))} twice")
        decoded.inputs.update(shm_inputs)
        return decoded, shm_outputs

    @staticmethod
    def _decode_rest(
        header: dict[str, Any], rest: list[Any], body: bytes, header_length: int | None
    ) -> serving.DecodedRequest:
        """The request without its shared-memory inputs, through the ordinary codec."""
        probe = {**header, "inputs": rest or [_PLACEHOLDER]}
        encoded = serving.dumps(probe)
        binary = b"" if header_length is None else body[header_length:]
        decoded = serving.decode(encoded + binary, header_length=len(encoded) if binary else None)
        if not rest:
            decoded.inputs.clear()
        return decoded

    def encode(
        self,
        request: serving.DecodedRequest,
        outputs: Mapping[str, np.ndarray[Any, Any]],
        shm_outputs: Mapping[str, ShmOutput],
        *,
        model_name: str,
        model_version: str,
    ) -> serving.Answer:
        """Write the region-bound outputs, encode the rest; their entries carry no data."""
        entries = []
        for name, place in shm_outputs.items():
            array = outputs.get(name)
            if array is None:
                raise InvalidInput(f"unknown output {name!r}; the model has {sorted(outputs)}")
            wire = np.ascontiguousarray(array, dtype=array.dtype.newbyteorder("<"))
            if wire.nbytes > place.byte_size:
                raise InvalidInput(
                    f"output {name!r} is {wire.nbytes} bytes; shared_memory_byte_size is "
                    f"{place.byte_size}"
                )
            place.region.view(place.offset, wire.nbytes, name)[:] = (
                wire.reshape(-1).view(np.uint8).data
            )
            parameters: dict[str, Any] = {
                "shared_memory_region": place.region.name,
                "shared_memory_byte_size": wire.nbytes,
            }
            if place.offset:
                parameters["shared_memory_offset"] = place.offset
            entries.append(
                {
                    "name": name,
                    "datatype": _NAMES[wire.dtype],
                    "shape": list(wire.shape),
                    "parameters": parameters,
                }
            )
        if request.outputs is not None:
            for name in shm_outputs:
                request.outputs.pop(name, None)
        answer = serving.encode(
            request, outputs, model_name=model_name, model_version=model_version
        )
        if not entries:
            return answer
        return _spliced(answer, entries)


_PLACEHOLDER = {"name": "\0shm", "datatype": "UINT8", "shape": [0], "data": []}


def _spliced(answer: serving.Answer, entries: list[dict[str, Any]]) -> serving.Answer:
    """`answer` with the shared-memory outputs' entries added to its JSON header."""
    length = answer.header_length
    head = answer.body if length is None else answer.body[:length]
    header = serving.loads(head)
    header["outputs"] = [*header.get("outputs", []), *entries]
    encoded = serving.dumps(header)
    if length is None:
        return serving.Answer(encoded, None, answer.model_name, answer.model_version)
    return serving.Answer(
        encoded + answer.body[length:], len(encoded), answer.model_name, answer.model_version
    )
