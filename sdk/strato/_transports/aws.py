"""Cloud transports: `Lambda` — `LambdaInvoke` (boto3 `invoke` with strato's envelope) or
`LambdaHttpApi` (OIP over the function's HTTP API, optionally SigV4-signed) — and `SageMaker`.

`Lambda("fn", ...)` builds a `LambdaInvoke`, `Lambda(http_url=...)` a `LambdaHttpApi`: one public
constructor, two transports that never branch on which they are. Payload limits are AWS's:
6,291,456 bytes for a synchronous Lambda invoke or HTTP API event (the body base64-encoded
inside), 6 MB (real-time) or 4 MB (serverless) for a SageMaker invocation; the client splits rows
to fit and a request that still does not fit is refused before it is sent.
"""

from __future__ import annotations

import time
import uuid
from typing import TYPE_CHECKING, Any, ClassVar

from strato._codec import SAGEMAKER_BINARY, dumps, encode_request, header_length_from, loads
from strato._envelope import pack, unpack
from strato._errors import ConfigError, InvalidInput, StratoError, TransportError, Unavailable

from ._oip import error_for_status, metadata_from, response_from
from .aws_common import BotoClients, sigv4_signer, translating_aws
from .base import HEADER_ALLOWANCE, Transport

if TYPE_CHECKING:
    from strato._inference import InferRequest, InferResponse

__all__ = [
    "LAMBDA_PAYLOAD_LIMIT",
    "Lambda",
    "LambdaHttpApi",
    "LambdaInvoke",
    "SageMaker",
    "sigv4_signer",
    "translating_aws",
]

LAMBDA_PAYLOAD_LIMIT = 6 * 1024 * 1024  # 6,291,456 bytes: synchronous invoke, base64 included
SAGEMAKER_REALTIME_LIMIT = 6 * 1024 * 1024
SAGEMAKER_SERVERLESS_LIMIT = 4 * 1024 * 1024
ENVELOPE_ALLOWANCE = 1024  # the envelope's JSON around the base64 body
EVENT_ALLOWANCE = 16 * 1024  # an HTTP API event's JSON around the base64 body (headers, context)


def base64_budget(limit: int, allowance: int, inputs: int) -> int:
    """Raw tensor bytes whose base64-encoded body fits `limit` with `allowance` around it."""
    body = (limit - allowance) // 4 * 3
    return max(0, body - HEADER_ALLOWANCE - 256 * inputs)


def _too_large(backend: str, size: int, limit: int, what: str) -> InvalidInput:
    return InvalidInput(
        f"{backend}: the {what} would be {size:,} bytes, over the payload limit of {limit:,} "
        "bytes (split the rows: Client.predict does)"
    )


class Lambda(Transport):
    """The strato Lambda function: `Lambda("fn")` invokes it with boto3 (`LambdaInvoke`),
    `Lambda(http_url=...)` calls its HTTP API (`LambdaHttpApi`).

    >>> Lambda("strato-infer")                                        # boto3, default credentials
    >>> Lambda("strato-infer", endpoint_url="http://127.0.0.1:3001")  # the local emulator
    >>> Lambda(http_url="https://abc.execute-api.eu-west-1.amazonaws.com", sigv4=True)
    """

    name = "lambda"
    tier = "cloud"
    payload_limit = LAMBDA_PAYLOAD_LIMIT
    options: ClassVar[frozenset[str]] = frozenset()

    def __new__(
        cls, function_name: str | None = None, *, http_url: str | None = None, **options: Any
    ) -> Lambda:
        if cls is Lambda:
            if (function_name is None) == (http_url is None):
                raise ConfigError("Lambda needs exactly one of function_name or http_url")
            cls = LambdaInvoke if function_name is not None else LambdaHttpApi
        unknown = set(options) - cls.options
        if unknown:
            raise ConfigError(
                f"{cls.__name__} takes no {sorted(unknown)} (it takes {sorted(cls.options)})"
            )
        return object.__new__(cls)

    def __repr__(self) -> str:
        return f"{type(self).__name__}({getattr(self, 'target', '?')!r})"


class LambdaInvoke(Lambda):
    """`lambda.invoke` with strato's envelope (OIP bytes base64-encoded in JSON).

    Each call's time left bounds botocore's read timeout (a client per timeout bucket, built
    once); `client=` is used as given, with its own timeouts; `session=` builds the clients.
    """

    options: ClassVar[frozenset[str]] = frozenset(
        {"client", "session", "endpoint_url", "region", "qualifier", "timeout", "name"}
    )

    def __init__(
        self,
        function_name: str | None = None,
        *,
        client: Any = None,
        session: Any = None,
        endpoint_url: str | None = None,
        region: str | None = None,
        qualifier: str | None = None,
        timeout: float = 30.0,
        name: str | None = None,
    ) -> None:
        if not function_name:
            raise ConfigError("LambdaInvoke needs a function name")
        self.function_name = self.target = function_name
        self.timeout = timeout
        self.name = name or self.name
        self._qualifier = {"Qualifier": qualifier} if qualifier else {}
        self._clients = BotoClients(
            "lambda",
            client=client,
            session=session,
            region=region,
            endpoint_url=endpoint_url,
            timeout=timeout,
        )

    def max_tensor_bytes(self, inputs: int) -> int:
        """What fits the invoke payload once base64-encoded in the envelope."""
        return base64_budget(self.payload_limit, ENVELOPE_ALLOWANCE, inputs)

    def _invoke(self, payload: bytes, timeout: float) -> dict[str, Any]:
        if len(payload) > self.payload_limit:
            raise _too_large(self.name, len(payload), self.payload_limit, "invoke payload")
        with translating_aws(self.name, timeout):
            result = self._clients.for_timeout(timeout).invoke(
                FunctionName=self.function_name, Payload=payload, **self._qualifier
            )
            raw = result["Payload"].read()
        if result.get("FunctionError"):
            raise Unavailable(
                f"{self.name}: the function failed ({result['FunctionError']}): {raw[:300]!r}",
                backend=self.name,
            )
        try:
            answer = loads(raw)
        except InvalidInput as exc:
            raise Unavailable(
                f"{self.name}: the function answered non-JSON: {exc}", backend=self.name
            ) from exc
        if not isinstance(answer, dict):
            raise Unavailable(
                f"{self.name}: the function answered {type(answer).__name__}", backend=self.name
            )
        return answer

    def infer(self, request: InferRequest, *, timeout: float | None = None) -> InferResponse:
        """One invoke; `timeout` bounds botocore's read (the bucket at or under it)."""
        timeout = timeout or self.timeout
        body, header_length = encode_request(request.inputs, outputs=request.outputs, id=request.id)
        envelope = pack(body, header_length, model=request.model, version=request.version)
        answer = self._invoke(dumps(envelope), timeout)
        status = answer.get("status")
        if status != 200:
            raise error_for_status(int(status or 500), str(answer.get("error", answer)), self.name)
        try:
            body, header_length = unpack(answer)
        except InvalidInput as exc:
            raise Unavailable(f"{self.name}: malformed envelope: {exc}", backend=self.name) from exc
        response = response_from(body, header_length, request, self.name)
        response.model_version = str(answer.get("model_version") or response.model_version)
        response.precision = answer.get("precision") or response.precision
        return response

    def metadata(self, model: str, *, version: str | None = None) -> dict[str, Any]:
        """The function's model metadata, through an HTTP API event in the same invoke."""
        path = f"/v2/models/{model}" + (f"/versions/{version}" if version else "")
        answer = self._invoke(dumps(_http_event("GET", path)), self.timeout)
        status = int(answer.get("statusCode", 500))
        text = answer.get("body") or "{}"
        if answer.get("isBase64Encoded"):
            import base64

            text = base64.b64decode(text)
        if status != 200:
            raise error_for_status(status, str(text)[:300], self.name)
        return metadata_from(text, self.name)


class LambdaHttpApi(Lambda):
    """OIP v2 over the function's HTTP API (API Gateway), SigV4-signed with `sigv4=True`."""

    options: ClassVar[frozenset[str]] = frozenset(
        {"sigv4", "region", "credentials", "timeout", "name"}
    )

    def __init__(
        self,
        function_name: str | None = None,
        *,
        http_url: str | None = None,
        sigv4: bool = False,
        region: str | None = None,
        credentials: Any = None,
        timeout: float = 30.0,
        name: str | None = None,
    ) -> None:
        from .edge import OipHttp

        if not http_url:
            raise ConfigError("LambdaHttpApi needs http_url")
        self.url = self.target = http_url.rstrip("/")
        self.timeout = timeout
        self.name = name or self.name
        signer = sigv4_signer(region, credentials=credentials) if sigv4 else None
        self._http = OipHttp(http_url, timeout=timeout, name=self.name, tier="cloud", signer=signer)

    def max_tensor_bytes(self, inputs: int) -> int:
        """What fits the HTTP API event once its body is base64-encoded in it."""
        return base64_budget(self.payload_limit, EVENT_ALLOWANCE, inputs)

    def infer(self, request: InferRequest, *, timeout: float | None = None) -> InferResponse:
        """`POST /v2/models/{model}/infer` on the HTTP API, refused before sending if too big."""
        tensors = sum(array.nbytes for array in request.inputs.values())
        event = -(-(tensors + HEADER_ALLOWANCE) // 3) * 4 + EVENT_ALLOWANCE
        if event > self.payload_limit:
            raise _too_large(self.name, event, self.payload_limit, "HTTP API event")
        return self._http.infer(request, timeout=timeout or self.timeout)

    def metadata(self, model: str, *, version: str | None = None) -> dict[str, Any]:
        """`GET /v2/models/{model}` on the HTTP API."""
        return self._http.metadata(model, version=version)

    def close(self) -> None:
        """Close the HTTP connections."""
        self._http.close()


class SageMaker(Transport):
    """A SageMaker endpoint running the strato container; binary OIP inputs.

    `serverless=True` (the default, what strato deploys) limits a request to 4 MB, a real-time
    endpoint (`serverless=False`) to 6 MB. `metadata()` asks the container through the
    `CustomAttributes: strato-metadata` header of an invocation.

    >>> SageMaker("strato-digits", region="eu-west-1")
    """

    name = "sagemaker"
    tier = "cloud"
    payload_limit = SAGEMAKER_SERVERLESS_LIMIT

    def __init__(
        self,
        endpoint_name: str,
        *,
        client: Any = None,
        session: Any = None,
        endpoint_url: str | None = None,
        region: str | None = None,
        target_model: str | None = None,
        serverless: bool = True,
        timeout: float = 60.0,
        name: str | None = None,
    ) -> None:
        self.endpoint_name = endpoint_name
        self.timeout = timeout
        self.name = name or self.name
        self.payload_limit = SAGEMAKER_SERVERLESS_LIMIT if serverless else SAGEMAKER_REALTIME_LIMIT
        self._target = {"TargetModel": target_model} if target_model else {}
        self._clients = BotoClients(
            "sagemaker-runtime",
            client=client,
            session=session,
            region=region,
            endpoint_url=endpoint_url,
            timeout=timeout,
        )

    def _invoke(self, body: bytes, content_type: str, timeout: float, **extra: Any) -> Any:
        if len(body) > self.payload_limit:
            raise _too_large(self.name, len(body), self.payload_limit, "invocation body")
        with translating_aws(self.name, timeout):
            result = self._clients.for_timeout(timeout).invoke_endpoint(
                EndpointName=self.endpoint_name,
                Body=body,
                ContentType=content_type,
                Accept="application/json",
                **self._target,
                **extra,
            )
            return result, result["Body"].read()

    def infer(self, request: InferRequest, *, timeout: float | None = None) -> InferResponse:
        """One `invoke_endpoint` with binary OIP inputs; outputs come back as JSON."""
        # Outputs as JSON: SageMaker returns only the Content-Type, and classifier outputs are small.
        body, header_length = encode_request(
            request.inputs, outputs=request.outputs, binary_outputs=False, id=request.id
        )
        content_type = (
            "application/json"
            if header_length is None
            else f"{SAGEMAKER_BINARY};json-header-size={header_length}"
        )
        result, content = self._invoke(body, content_type, timeout or self.timeout)
        answer_length = header_length_from({"content-type": str(result.get("ContentType", ""))})
        return response_from(content, answer_length, request, self.name)

    def metadata(self, model: str, *, version: str | None = None) -> dict[str, Any]:
        """The container's model metadata (`CustomAttributes: strato-metadata`); a container
        that does not answer it is a `ConfigError` (a setup to fix, not an outage)."""
        try:
            _, content = self._invoke(
                b"{}", "application/json", self.timeout, CustomAttributes="strato-metadata"
            )
            metadata = metadata_from(content, self.name)
        except TransportError:
            raise
        except StratoError as exc:
            raise ConfigError(
                f"{self.name}: endpoint {self.endpoint_name} answers no model metadata ({exc}); "
                "give the client an edge tier, or serve a strato container that answers "
                "CustomAttributes: strato-metadata"
            ) from exc
        if "inputs" not in metadata:
            raise ConfigError(
                f"{self.name}: endpoint {self.endpoint_name} answered no model signature "
                "to CustomAttributes: strato-metadata"
            )
        return metadata

    def __repr__(self) -> str:
        return f"SageMaker({self.endpoint_name!r})"


def _http_event(method: str, path: str) -> dict[str, Any]:
    """A minimal API Gateway HTTP API (payload 2.0) event: metadata goes through the resolver."""
    now = time.time()
    return {
        "version": "2.0",
        "routeKey": "$default",
        "rawPath": path,
        "rawQueryString": "",
        "headers": {"accept": "application/json"},
        "isBase64Encoded": False,
        "requestContext": {
            "accountId": "000000000000",
            "apiId": "strato",
            "domainName": "localhost",
            "domainPrefix": "localhost",
            "http": {
                "method": method,
                "path": path,
                "protocol": "HTTP/1.1",
                "sourceIp": "127.0.0.1",
                "userAgent": "strato",
            },
            "requestId": str(uuid.uuid4()),
            "routeKey": "$default",
            "stage": "$default",
            "time": time.strftime("%d/%b/%Y:%H:%M:%S +0000", time.gmtime(now)),
            "timeEpoch": int(now * 1000),
        },
    }
