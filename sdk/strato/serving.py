"""The serving path every strato server shares: decode a request, run it, encode the answer.

The edge daemon (`strato edge serve`, also in SageMaker mode), the Lambda handler and its HTTP
API all call these functions, so one request gets one answer and one error whichever tier
serves it::

    from strato import serving

    request = serving.decode(body, headers)             # OIP JSON, binary extension, SageMaker
    outputs = serving.run(engine, request)              # or your own batcher
    answer = serving.encode(request, outputs, model_name="digits-mlp", model_version="3")
    answer.body, answer.headers()                       # what goes on the wire

    except Exception as exc:
        status, document = serving.error_answer(exc)    # 4xx/5xx and {"error": "..."}

Four request forms are understood: OIP JSON; Triton's binary tensor extension (JSON header
length in `Inference-Header-Content-Length`); SageMaker's `json-header-size=N` Content-Type
parameter; the direct-invoke envelope that carries either inside a Lambda payload
(`decode_envelope`, `Answer.envelope`, `error_envelope`).

`status_of` is the one mapping of strato's error tree to HTTP statuses; messages sent to a
client never carry a traceback or an absolute path (`public_message`).
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from strato._codec import (
    HEADER_LENGTH,
    SAGEMAKER_BINARY,
    DecodedRequest,
    check_shape,
    decode_request,
    dumps,
    encode_response,
    header_length_from,
    loads,
)
from strato._engines.base import Engine, model_metadata
from strato._envelope import ENVELOPE_VERSION, is_envelope, pack, unpack
from strato._errors import (
    BundleError,
    ConfigError,
    EngineError,
    InferenceError,
    InvalidInput,
    ModelNotFound,
    PayloadTooLarge,
    StratoError,
    Throttled,
    Timeout,
    TransportError,
    Unauthorized,
)
from strato._registry import ModelRef
from strato._tensors import validate_inputs

if TYPE_CHECKING:
    from collections.abc import Mapping

    import numpy as np

__all__ = [
    "ENVELOPE_VERSION",
    "HEADER_LENGTH",
    "SAGEMAKER_BINARY",
    "Answer",
    "DecodedRequest",
    "Engine",
    "EnvelopeRequest",
    "check_model_name",
    "check_shape",
    "decode",
    "decode_envelope",
    "dumps",
    "encode",
    "error_answer",
    "error_envelope",
    "header_length_from",
    "infer",
    "is_envelope",
    "loads",
    "model_metadata",
    "public_message",
    "run",
    "status_of",
    "validate_inputs",
]

Tensors = dict[str, "np.ndarray[Any, Any]"]

# --- requests -----------------------------------------------------------------------------


def decode(
    body: bytes, headers: Mapping[str, str] | None = None, *, header_length: int | None = None
) -> DecodedRequest:
    """An OIP request from its body and HTTP headers (JSON, binary extension or SageMaker form).

    `header_length`, when given, wins over the headers (the envelope carries it separately).
    Every malformed body is an `InvalidInput`.
    """
    if header_length is None and headers is not None:
        header_length = header_length_from(headers)
    return decode_request(body, header_length=header_length)


@dataclass(frozen=True, slots=True)
class EnvelopeRequest:
    """A direct-invoke envelope's request: which model, and the OIP body it carries."""

    model: str
    version: str | None
    body: bytes
    header_length: int | None
    id: str | None = None


def decode_envelope(event: Mapping[str, Any]) -> EnvelopeRequest:
    """The request inside a direct-invoke envelope; `InvalidInput` when it is malformed."""
    if not is_envelope(event):
        raise InvalidInput(f'not a strato envelope (needs "strato": {ENVELOPE_VERSION})')
    model, version = event.get("model"), event.get("version")
    if not isinstance(model, str) or not model:
        raise InvalidInput("envelope has no 'model'")
    if version is not None and not isinstance(version, str):
        raise InvalidInput("envelope 'version' must be a string or null")
    body, header_length = unpack(dict(event))
    request_id = event.get("id")
    return EnvelopeRequest(
        model, version or None, body, header_length, None if request_id is None else str(request_id)
    )


def check_model_name(name: str, version: str | None = None) -> None:
    """Refuse (`ModelNotFound`) a model name or version no registry can hold, e.g. ``..``:
    a server checks names from the URL before they reach the disk."""
    ModelRef.parse(name if not version else f"{name}:{version}")


# --- running and answering ----------------------------------------------------------------


def run(engine: Engine, request: DecodedRequest) -> Tensors:
    """Run a decoded request on an engine (which validates it against the model's signature)."""
    return engine.infer(request.inputs)


@dataclass(frozen=True, slots=True)
class Answer:
    """An encoded OIP response: the bytes to send and how to label them."""

    body: bytes
    header_length: int | None
    model_name: str
    model_version: str

    def media_type(self, *, sagemaker: bool = False) -> str:
        """Content-Type: JSON, Triton binary, or SageMaker's binary+json with the header size."""
        if self.header_length is None:
            return "application/json"
        if sagemaker:
            return f"{SAGEMAKER_BINARY};json-header-size={self.header_length}"
        return "application/octet-stream"

    def headers(self, *, sagemaker: bool = False) -> dict[str, str]:
        """Content-Type and, for a binary answer over OIP, `Inference-Header-Content-Length`."""
        headers = {"content-type": self.media_type(sagemaker=sagemaker)}
        if self.header_length is not None and not sagemaker:
            headers[HEADER_LENGTH] = str(self.header_length)
        return headers

    def envelope(self, **fields: Any) -> dict[str, Any]:
        """This answer as a direct-invoke envelope (status 200 plus `fields`)."""
        return pack(
            self.body,
            self.header_length,
            status=200,
            model_name=self.model_name,
            model_version=self.model_version,
            **fields,
        )


def encode(
    request: DecodedRequest,
    outputs: Mapping[str, np.ndarray[Any, Any]],
    *,
    model_name: str,
    model_version: str,
    parameters: Mapping[str, Any] | None = None,
) -> Answer:
    """The answer to `request`: the outputs it asked for, binary where it asked."""
    chosen, binary = request.select(outputs)
    body, header_length = encode_response(
        chosen,
        model_name=model_name,
        model_version=model_version,
        id=request.id,
        binary=binary,
        parameters=parameters,
    )
    return Answer(body, header_length, model_name, model_version)


def infer(
    engine: Engine,
    body: bytes,
    headers: Mapping[str, str] | None = None,
    *,
    header_length: int | None = None,
    model_name: str,
    model_version: str,
    parameters: Mapping[str, Any] | None = None,
) -> Answer:
    """`decode`, `run` and `encode` in one call, for servers without a batcher."""
    request = decode(body, headers, header_length=header_length)
    outputs = run(engine, request)
    return encode(
        request, outputs, model_name=model_name, model_version=model_version, parameters=parameters
    )


# --- errors -------------------------------------------------------------------------------

# Most specific first: the first class an error is an instance of decides its status.
_STATUSES: tuple[tuple[type[BaseException], int], ...] = (
    (Unauthorized, 401),
    (PayloadTooLarge, 413),
    (ModelNotFound, 404),
    (InferenceError, 400),  # InvalidInput and any other fault of the request
    (Throttled, 429),
    (Timeout, 504),
    (TransportError, 503),  # Unavailable, ModelUnavailable
    (EngineError, 503),
    (BundleError, 503),
    (ConfigError, 500),
)

# An absolute filesystem path (two components or more): shown by its last component only.
_ABSOLUTE_PATH = re.compile(r"(?<![\w.:/])/(?:[^\s/'\"<>]+/)+([^\s/'\"<>,;)]*)")


def status_of(exc: BaseException) -> int:
    """The HTTP status for an exception: the one mapping of strato's error tree.

    401 Unauthorized · 413 PayloadTooLarge · 404 ModelNotFound · 400 any other InferenceError
    (InvalidInput) · 429 Throttled · 504 Timeout (and a bare TimeoutError) · 503 TransportError,
    EngineError, BundleError · 500 ConfigError and anything else.
    """
    for kind, status in _STATUSES:
        if isinstance(exc, kind):
            return status
    if isinstance(exc, TimeoutError):
        return 504
    return 500


def public_message(exc: BaseException) -> str:
    """What a client is told about `exc`: strato's own message without absolute paths, or, for
    an exception outside strato's tree (a bug), only its type."""
    if not isinstance(exc, StratoError):
        if isinstance(exc, TimeoutError):
            return "the request ran past its deadline"
        return f"internal error: {type(exc).__name__}"
    message = _ABSOLUTE_PATH.sub(lambda m: f".../{m.group(1)}", str(exc))
    if isinstance(exc, BundleError):
        return f"the model cannot be loaded: {message}"
    if isinstance(exc, EngineError):
        return f"the engine failed: {message}"
    return message


def error_answer(
    exc: BaseException, *, request_id: str | None = None
) -> tuple[int, dict[str, str]]:
    """The status and `{"error": ...}` document for `exc`; a 500 names `request_id` if given."""
    status = status_of(exc)
    message = public_message(exc)
    if status == 500 and request_id:
        message = f"{message} (request id {request_id})"
    return status, {"error": message}


def error_envelope(status: int, message: str) -> dict[str, Any]:
    """A direct-invoke envelope carrying an error."""
    return {"strato": ENVELOPE_VERSION, "status": status, "error": message}
