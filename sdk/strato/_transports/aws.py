"""Cloud transports: `Lambda` (boto3 invoke, or the HTTP API signed with SigV4) and `SageMaker`.

boto3/botocore are imported lazily (inside the constructors and `translating_aws`), so
`import strato` stays light. AWS clients are passed in or built once per transport, never per
call; pointing `endpoint_url` at the local emulator or a stand-in is how tests reach them.
"""

from __future__ import annotations

import os
import time
import uuid
from contextlib import contextmanager
from typing import TYPE_CHECKING, Any

from strato._codec import SAGEMAKER_BINARY, dumps, encode_request, header_length_from, loads
from strato._envelope import pack, unpack
from strato._errors import (
    InvalidInput,
    StratoError,
    Throttled,
    Timeout,
    Unavailable,
)

from .base import Transport
from .edge import OipHttp, Signer, error_for_status, metadata_from, response_from

if TYPE_CHECKING:
    from collections.abc import Iterator

    from strato._messages import InferRequest, InferResponse

__all__ = ["Lambda", "SageMaker", "sigv4_signer", "translating_aws"]

_THROTTLED = {
    "TooManyRequestsException",
    "ThrottlingException",
    "Throttling",
    "ProvisionedThroughputExceededException",
}
_INVALID = {
    "ValidationError",
    "ValidationException",
    "RequestTooLargeException",
    "InvalidRequestContentException",
    "UnsupportedMediaTypeException",
}


def _region(region: str | None) -> str:
    return (
        region
        or os.environ.get("AWS_REGION")
        or os.environ.get("AWS_DEFAULT_REGION")
        or "us-east-1"
    )


def _client_error(exc: Any, backend: str) -> StratoError:
    error = exc.response.get("Error", {})
    code = str(error.get("Code", ""))
    message = str(error.get("Message", "")) or str(exc)
    status = int(exc.response.get("ResponseMetadata", {}).get("HTTPStatusCode", 500) or 500)
    if code in _THROTTLED or status == 429:
        return Throttled(f"{backend}: {code}: {message}", backend=backend)
    if code == "ModelError":  # SageMaker: the container answered with an error of its own
        original = int(exc.response.get("OriginalStatusCode", 500) or 500)
        return error_for_status(
            original, str(exc.response.get("OriginalMessage", message)), backend
        )
    if code in _INVALID:
        return InvalidInput(f"{backend}: {code}: {message}")
    if code == "ResourceNotFoundException":
        return Unavailable(
            f"{backend}: {message} (is it deployed in this region?)", backend=backend
        )
    return error_for_status(status, f"{code}: {message}", backend)


@contextmanager
def translating_aws(backend: str, timeout: float | None) -> Iterator[None]:
    """botocore's failures as strato's, at one boundary for both AWS transports."""
    from botocore.exceptions import (
        BotoCoreError,
        ClientError,
        ConnectTimeoutError,
        ReadTimeoutError,
    )

    try:
        yield
    except (ConnectTimeoutError, ReadTimeoutError) as exc:
        raise Timeout(f"{backend}: no answer within {timeout}s", backend=backend) from exc
    except ClientError as exc:
        raise _client_error(exc, backend) from exc
    except BotoCoreError as exc:
        raise Unavailable(f"{backend}: {exc}", backend=backend) from exc


def _boto_client(service: str, region: str | None, endpoint_url: str | None, timeout: float) -> Any:
    import boto3
    from botocore.config import Config

    # The router retries (with jitter, within the deadline): botocore must not retry on its own.
    config = Config(
        read_timeout=timeout,
        connect_timeout=min(timeout, 5.0),
        retries={"total_max_attempts": 1},
        tcp_keepalive=True,
    )
    session: Any = boto3  # the stubs type each service by literal name; ours is a variable
    return session.client(
        service, region_name=_region(region), endpoint_url=endpoint_url, config=config
    )


def sigv4_signer(
    region: str | None = None, *, service: str = "execute-api", credentials: Any = None
) -> Signer:
    """A signer adding AWS SigV4 headers (for an HTTP API with IAM authorization)."""
    import botocore.session
    from botocore.auth import SigV4Auth
    from botocore.awsrequest import AWSRequest

    from strato._errors import ConfigError

    credentials = credentials or botocore.session.get_session().get_credentials()
    if credentials is None:
        raise ConfigError("SigV4 needs AWS credentials (environment, profile or role); none found")
    auth = SigV4Auth(credentials, service, _region(region))

    def sign(method: str, url: str, headers: dict[str, str], body: bytes) -> dict[str, str]:
        request = AWSRequest(method=method, url=url, data=body, headers=headers)
        auth.add_auth(request)
        return dict(request.headers.items())

    return sign


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


class Lambda(Transport):
    """The Lambda function (`lambda.invoke` with strato's envelope), or its HTTP API.

    >>> Lambda("strato-infer")                                        # boto3, default credentials
    >>> Lambda("strato-infer", endpoint_url="http://127.0.0.1:3001")  # the local emulator
    >>> Lambda(http_url="https://abc.execute-api.eu-west-1.amazonaws.com", sigv4=True)
    """

    name = "lambda"
    tier = "cloud"
    # 6 MB synchronous payload, and the envelope base64-encodes the body (4/3): keep under 4 MiB.
    payload_limit = 4 * 1024 * 1024

    def __init__(
        self,
        function_name: str | None = None,
        *,
        client: Any = None,
        endpoint_url: str | None = None,
        region: str | None = None,
        qualifier: str | None = None,
        http_url: str | None = None,
        sigv4: bool = False,
        credentials: Any = None,
        timeout: float = 30.0,
        name: str | None = None,
    ) -> None:
        if (function_name is None) == (http_url is None):
            from strato._errors import ConfigError

            raise ConfigError("Lambda needs exactly one of function_name or http_url")
        self.function_name = function_name
        self.timeout = timeout
        self.name = name or self.name
        self._http: OipHttp | None = None
        self._client: Any = None
        self._qualifier = {"Qualifier": qualifier} if qualifier else {}
        if http_url is not None:
            signer = sigv4_signer(region, credentials=credentials) if sigv4 else None
            self._http = OipHttp(
                http_url, timeout=timeout, name=self.name, tier="cloud", signer=signer
            )
        else:
            self._client = client or _boto_client("lambda", region, endpoint_url, timeout)

    def _invoke(self, payload: bytes) -> dict[str, Any]:
        with translating_aws(self.name, self.timeout):
            result = self._client.invoke(
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
        if self._http is not None:
            return self._http.infer(request, timeout=timeout)
        body, header_length = encode_request(request.inputs, outputs=request.outputs, id=request.id)
        answer = self._invoke(
            dumps(pack(body, header_length, model=request.model, version=request.version))
        )
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
        if self._http is not None:
            return self._http.metadata(model, version=version)
        path = f"/v2/models/{model}" + (f"/versions/{version}" if version else "")
        answer = self._invoke(dumps(_http_event("GET", path)))
        status = int(answer.get("statusCode", 500))
        text = answer.get("body") or "{}"
        if answer.get("isBase64Encoded"):
            import base64

            text = base64.b64decode(text)
        if status != 200:
            raise error_for_status(status, str(text)[:300], self.name)
        return metadata_from(text, self.name)

    def close(self) -> None:
        if self._http is not None:
            self._http.close()

    def __repr__(self) -> str:
        target = self.function_name or (self._http.url if self._http else "?")
        return f"Lambda({target!r})"


class SageMaker(Transport):
    """A SageMaker (Serverless) endpoint running the strato container; binary OIP inputs.

    >>> SageMaker("strato-digits", region="eu-west-1")
    """

    name = "sagemaker"
    tier = "cloud"
    payload_limit = 4 * 1000 * 1000 - 64 * 1024  # 4 MB per invocation, minus the JSON header

    def __init__(
        self,
        endpoint_name: str,
        *,
        client: Any = None,
        endpoint_url: str | None = None,
        region: str | None = None,
        target_model: str | None = None,
        timeout: float = 60.0,
        name: str | None = None,
    ) -> None:
        self.endpoint_name = endpoint_name
        self.timeout = timeout
        self.name = name or self.name
        self._target = {"TargetModel": target_model} if target_model else {}
        self._client = client or _boto_client("sagemaker-runtime", region, endpoint_url, timeout)

    def infer(self, request: InferRequest, *, timeout: float | None = None) -> InferResponse:
        # Outputs as JSON: SageMaker returns only the Content-Type, and classifier outputs are small.
        body, header_length = encode_request(
            request.inputs, outputs=request.outputs, binary_outputs=False, id=request.id
        )
        content_type = (
            "application/json"
            if header_length is None
            else f"{SAGEMAKER_BINARY};json-header-size={header_length}"
        )
        with translating_aws(self.name, self.timeout):
            result = self._client.invoke_endpoint(
                EndpointName=self.endpoint_name,
                Body=body,
                ContentType=content_type,
                Accept="application/json",
                **self._target,
            )
            content = result["Body"].read()
        answer_length = header_length_from({"content-type": str(result.get("ContentType", ""))})
        return response_from(content, answer_length, request, self.name)

    def metadata(self, model: str, *, version: str | None = None) -> dict[str, Any]:
        raise Unavailable(
            f"{self.name}: SageMaker endpoints answer /invocations only; "
            "model metadata comes from the edge tier",
            backend=self.name,
        )

    def ready(self, model: str) -> bool:
        return True

    def __repr__(self) -> str:
        return f"SageMaker({self.endpoint_name!r})"
