"""The direct-invoke envelope: an OIP request inside a Lambda `Invoke` payload.

API Gateway carries OIP over HTTP; a direct `lambda.invoke` (the SDK's Lambda transport) carries
the same bytes base64-encoded in a small JSON envelope, so binary tensors survive JSON:

request   {"strato": 1, "model": "digits-mlp", "version": null | "3",
           "body": "<base64 OIP body>", "header_length": null | 1234}
response  {"strato": 1, "status": 200, "body": "<base64 OIP body>", "header_length": null | 56}
error     {"strato": 1, "status": 400 | 404 | 413 | 500, "error": "what went wrong"}

`status` follows HTTP: the transport maps 400 → InvalidInput, 404 → ModelNotFound,
429 → Throttled, 5xx → Unavailable.
"""

from __future__ import annotations

import base64
from typing import Any

from strato._errors import InvalidInput

__all__ = ["ENVELOPE_VERSION", "is_envelope", "pack", "unpack"]

ENVELOPE_VERSION = 1


def is_envelope(event: Any) -> bool:
    """Whether a Lambda event is strato's direct-invoke envelope (and of this version)."""
    return isinstance(event, dict) and event.get("strato") == ENVELOPE_VERSION


def pack(body: bytes, header_length: int | None, **fields: Any) -> dict[str, Any]:
    """An envelope carrying `body`; `fields` are model/version (requests) or status (responses)."""
    return {
        "strato": ENVELOPE_VERSION,
        **fields,
        "body": base64.b64encode(body).decode("ascii"),
        "header_length": header_length,
    }


def unpack(envelope: dict[str, Any]) -> tuple[bytes, int | None]:
    """The OIP body bytes and JSON header length of an envelope; `InvalidInput` if malformed."""
    raw = envelope.get("body")
    if not isinstance(raw, str):
        raise InvalidInput("envelope has no base64 'body'")
    try:
        body = base64.b64decode(raw, validate=True)
    except ValueError as exc:
        raise InvalidInput(f"envelope body is not base64: {exc}") from None
    header_length = envelope.get("header_length")
    if header_length is not None and (
        not isinstance(header_length, int) or isinstance(header_length, bool) or header_length < 0
    ):
        raise InvalidInput("envelope header_length must be a non-negative integer or null")
    return body, header_length
