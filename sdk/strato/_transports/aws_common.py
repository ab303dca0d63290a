"""What the AWS transports share: botocore's failures as strato's (one boundary), clients built
once per timeout bucket (so the router's deadline bounds every call), SigV4 signing.

boto3/botocore are imported lazily, so `import strato` stays light. Setup mistakes — no
credentials, no region, an unknown function or endpoint, a refused signature — are
`ConfigError`: they never trip a circuit breaker and never fall back to another tier.
"""

from __future__ import annotations

import os
import threading
from contextlib import contextmanager
from typing import TYPE_CHECKING, Any

from strato._errors import ConfigError, InvalidInput, StratoError, Throttled, Timeout, Unavailable

from ._oip import error_for_status

if TYPE_CHECKING:
    from collections.abc import Iterator

    from ._oip import Signer

__all__ = ["TIMEOUT_BUCKETS", "BotoClients", "region_of", "sigv4_signer", "translating_aws"]

# Read timeouts a client is built for: a call gets the largest bucket within its time left.
TIMEOUT_BUCKETS = (0.25, 0.5, 1.0, 2.0, 5.0, 10.0, 30.0, 60.0, 120.0, 300.0, 900.0)
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
_SETUP = {
    "UnrecognizedClientException",
    "InvalidSignatureException",
    "AccessDeniedException",
    "AccessDenied",
    "ExpiredTokenException",
    "InvalidClientTokenId",
    "SignatureDoesNotMatch",
}


def region_of(region: str | None) -> str:
    """explicit > AWS_REGION > AWS_DEFAULT_REGION > us-east-1."""
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
    if code == "ResourceNotFoundException" or (
        code in _INVALID and "endpoint" in message.lower() and "not found" in message.lower()
    ):
        return ConfigError(
            f"{backend}: {message} (is the name right, and deployed in this region?)"
        )
    if code in _SETUP:
        return ConfigError(f"{backend}: {code}: {message} (check the AWS credentials)")
    if code in _INVALID:
        return InvalidInput(f"{backend}: {code}: {message}")
    return error_for_status(status, f"{code}: {message}", backend)


@contextmanager
def translating_aws(backend: str, timeout: float | None) -> Iterator[None]:
    """botocore's failures as strato's, at one boundary for every AWS transport."""
    from botocore.exceptions import (
        BotoCoreError,
        ClientError,
        ConnectTimeoutError,
        NoCredentialsError,
        NoRegionError,
        PartialCredentialsError,
        ReadTimeoutError,
    )

    try:
        yield
    except (ConnectTimeoutError, ReadTimeoutError) as exc:
        raise Timeout(f"{backend}: no answer within {timeout}s", backend=backend) from exc
    except ClientError as exc:
        raise _client_error(exc, backend) from exc
    except (NoCredentialsError, PartialCredentialsError) as exc:
        raise ConfigError(
            f"{backend}: no AWS credentials ({exc}); set AWS_ACCESS_KEY_ID/AWS_SECRET_ACCESS_KEY, "
            "AWS_PROFILE or a role, or pass client="
        ) from exc
    except NoRegionError as exc:
        raise ConfigError(f"{backend}: no AWS region; pass region= or set AWS_REGION") from exc
    except BotoCoreError as exc:
        raise Unavailable(f"{backend}: {exc}", backend=backend) from exc


def bucket_of(timeout: float) -> float:
    """The largest bucket within `timeout` (the smallest one for a shorter timeout)."""
    chosen = TIMEOUT_BUCKETS[0]
    for bucket in TIMEOUT_BUCKETS:
        if bucket > timeout:
            break
        chosen = bucket
    return chosen


class BotoClients:
    """One boto3 client per timeout bucket, each built once, on first use.

    The router retries (with jitter, within the deadline), so botocore never retries on its
    own. A `client` passed in is used for every call as it is (its own timeouts apply).
    """

    def __init__(
        self,
        service: str,
        *,
        client: Any = None,
        session: Any = None,
        region: str | None = None,
        endpoint_url: str | None = None,
        timeout: float | None = None,
    ) -> None:
        self.service = service
        self._given = client
        self._session = session
        self._region = region_of(region)
        self._endpoint_url = endpoint_url
        self._clients: dict[float, Any] = {}
        self._lock = threading.Lock()
        if timeout is not None and client is None:
            # The first client loads the service model (~0.1 s): pay it here, not in a call.
            # Later buckets reuse the session's loaded model (a few ms each).
            self.for_timeout(timeout)

    def for_timeout(self, timeout: float) -> Any:
        """The client whose read timeout fits a call with `timeout` seconds left."""
        if self._given is not None:
            return self._given
        bucket = bucket_of(timeout)
        client = self._clients.get(bucket)
        if client is None:
            with self._lock:
                client = self._clients.get(bucket)
                if client is None:
                    client = self._clients[bucket] = self._build(bucket)
        return client

    def _build(self, timeout: float) -> Any:
        import boto3
        from botocore.config import Config

        config = Config(
            read_timeout=timeout,
            connect_timeout=min(timeout, 5.0),
            retries={"total_max_attempts": 1},
            tcp_keepalive=True,
        )
        if self._session is None:  # one session per transport: credentials resolved once
            self._session = boto3.session.Session()
        maker: Any = self._session  # the stubs type each service by literal name
        return maker.client(
            self.service, region_name=self._region, endpoint_url=self._endpoint_url, config=config
        )

    @property
    def built(self) -> list[float]:
        """The timeout buckets a client was built for (tests and debugging read it)."""
        return sorted(self._clients)


def sigv4_signer(
    region: str | None = None, *, service: str = "execute-api", credentials: Any = None
) -> Signer:
    """A signer adding AWS SigV4 headers (for an HTTP API with IAM authorization)."""
    import botocore.session
    from botocore.auth import SigV4Auth
    from botocore.awsrequest import AWSRequest

    credentials = credentials or botocore.session.get_session().get_credentials()
    if credentials is None:
        raise ConfigError("SigV4 needs AWS credentials (environment, profile or role); none found")
    auth = SigV4Auth(credentials, service, region_of(region))

    def sign(method: str, url: str, headers: dict[str, str], body: bytes) -> dict[str, str]:
        request = AWSRequest(method=method, url=url, data=body, headers=headers)
        auth.add_auth(request)
        return dict(request.headers.items())

    return sign
