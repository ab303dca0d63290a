"""Per-signature memory for `Edge`: request heads built once, response headers decoded once.

A device client sends the same model the same shapes call after call, and the daemon answers
with the same JSON header each time. So the HTTP head plus the JSON header of a request is
built once per (model, version, input names, dtypes, shapes), and a response's JSON header,
once validated by the codec, is kept as a plan (tensor names, dtypes, shapes, offsets) keyed
by its exact bytes: the next identical header only needs its tensors viewed. Requests with an
`id`, parameters or named outputs, and responses with an `id`, take the general path.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import numpy as np

from strato._codec import HEADER_LENGTH
from strato._inference import InferResponse

from ._oip import PRECISION_HEADER, VERSION_HEADER, request_parts, response_from, tensor_views

if TYPE_CHECKING:
    from collections.abc import Callable

    from strato._inference import InferRequest

__all__ = ["RequestHeads", "ResponsePlans"]

_LIMIT = 256  # signatures remembered; a client cycling through more just starts over
Signature = tuple[str, str | None, tuple[tuple[str, str, tuple[int, ...]], ...]]


class RequestHeads:
    """HTTP head + JSON header bytes per request signature (binary bodies only)."""

    def __init__(self, post_head: Callable[[InferRequest], bytes]) -> None:
        self._post_head = post_head
        self._heads: dict[Signature, bytes] = {}

    def parts(self, request: InferRequest) -> list[bytes | memoryview]:
        """The request as buffers: one prebuilt prefix, then each tensor's bytes."""
        if request.id is not None or request.parameters or request.outputs:
            return self._build(request)
        key: Signature = (
            request.model,
            request.version,
            tuple((name, a.dtype.str, a.shape) for name, a in request.inputs.items()),
        )
        prefix = self._heads.get(key)
        if prefix is None:
            parts = self._build(request)
            if len(self._heads) >= _LIMIT:
                self._heads.clear()
            self._heads[key] = bytes(parts[0]) + bytes(parts[1])
            return parts
        return [prefix, *tensor_views(request.inputs)]

    def _build(self, request: InferRequest) -> list[bytes | memoryview]:
        parts, size, header_length = request_parts(request, True)
        tail = (
            f"content-type: application/octet-stream\r\n"
            f"{HEADER_LENGTH}: {header_length}\r\ncontent-length: {size}\r\n\r\n"
        )
        return [self._post_head(request) + tail.encode("latin-1"), *parts]


@dataclass(frozen=True, slots=True)
class _Plan:
    model_name: str
    model_version: str
    precision: str | None
    parameters: dict[str, Any]
    tensors: tuple[tuple[str, np.dtype[Any], tuple[int, ...], int], ...]  # name, dtype, shape, n
    binary_bytes: int


class ResponsePlans:
    """Binary responses decoded through a plan per distinct JSON header."""

    def __init__(self) -> None:
        self._plans: dict[tuple[bytes, str | None, str | None], _Plan] = {}

    def decode(
        self,
        body: bytearray,
        header_length: int | None,
        request: InferRequest,
        served_by: str,
        headers: dict[str, str],
    ) -> InferResponse:
        if header_length is None or header_length > len(body):
            return response_from(body, header_length, request, served_by, headers)
        key = (
            bytes(body[:header_length]),
            headers.get(VERSION_HEADER.lower()),
            headers.get(PRECISION_HEADER.lower()),
        )
        plan = self._plans.get(key)
        if plan is None or plan.binary_bytes != len(body) - header_length:
            answer = response_from(body, header_length, request, served_by, headers)
            self._learn(key, answer, len(body) - header_length)
            return answer
        outputs, offset = {}, header_length
        for name, dtype, shape, count in plan.tensors:
            outputs[name] = np.frombuffer(body, dtype, count, offset).reshape(shape)
            offset += count * dtype.itemsize
        return InferResponse(
            outputs,
            plan.model_name,
            plan.model_version,
            None,
            served_by,
            plan.precision,
            dict(plan.parameters),
        )

    def _learn(
        self, key: tuple[bytes, str | None, str | None], answer: InferResponse, binary: int
    ) -> None:
        if answer.id is not None:
            return
        tensors = []
        for name, array in answer.outputs.items():
            if array.base is None:  # a JSON-coded output: not a view of the body, no plan
                return
            tensors.append((name, array.dtype, array.shape, array.size))
        if sum(n * dtype.itemsize for _, dtype, _, n in tensors) != binary:
            return
        if len(self._plans) >= _LIMIT:
            self._plans.clear()
        self._plans[key] = _Plan(
            answer.model_name,
            answer.model_version,
            answer.precision,
            dict(answer.parameters),
            tuple(tensors),
            binary,
        )
