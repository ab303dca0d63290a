"""Settings the SDK reads from the environment, each in exactly one place.

Every function resolves explicit argument > `STRATO_*` environment variable > default, at the
moment it is called (so a test or a long-lived process that changes the environment is honoured).
"""

from __future__ import annotations

import os
from typing import Any

__all__ = [
    "DEFAULT_REGISTRY",
    "ORT_THREADS_ENV",
    "REGISTRY_ENV",
    "S3_ENDPOINT_ENV",
    "S3_TIMEOUT_ENV",
    "TRUSTED_KEYS_ENV",
    "make_s3_client",
    "ort_threads",
    "registry_root",
    "s3_endpoint",
    "s3_timeout",
    "trusted_keys_spec",
]

REGISTRY_ENV = "STRATO_REGISTRY"
DEFAULT_REGISTRY = ".strato/registry"
ORT_THREADS_ENV = "STRATO_ORT_THREADS"
TRUSTED_KEYS_ENV = "STRATO_TRUSTED_KEYS"
S3_ENDPOINT_ENV = "STRATO_S3_ENDPOINT"
S3_TIMEOUT_ENV = "STRATO_S3_TIMEOUT_S"
S3_TIMEOUT_S = 20.0


def _resolve(explicit: str | None, env: str) -> str | None:
    if explicit is not None and explicit.strip():
        return explicit.strip()
    value = os.environ.get(env, "").strip()
    return value or None


def registry_root(explicit: str | os.PathLike[str] | None = None) -> str:
    """The registry a command or `Registry()` means: argument > `STRATO_REGISTRY` >
    `.strato/registry`."""
    if explicit:
        return os.fspath(explicit)
    return _resolve(None, REGISTRY_ENV) or DEFAULT_REGISTRY


def ort_threads(explicit: int | None = None) -> int | None:
    """ONNX Runtime intra-op threads: argument > `STRATO_ORT_THREADS` > ORT's own choice (None).
    A value that is not a positive integer is a `ConfigError`, not a crash at load."""
    if explicit:
        return explicit
    text = _resolve(None, ORT_THREADS_ENV)
    if text is None or text == "0":
        return None
    if not text.isdigit():
        from ._errors import ConfigError

        raise ConfigError(f"{ORT_THREADS_ENV} must be a positive integer, got {text!r}")
    return int(text)


def trusted_keys_spec(explicit: str | None = None) -> str | None:
    """The trusted-keys spec (comma-separated PEM files/folders): argument > env > none."""
    return _resolve(explicit, TRUSTED_KEYS_ENV)


def s3_endpoint(explicit: str | None = None) -> str | None:
    """The S3 endpoint URL (moto, MinIO, a VPC endpoint): argument > env > AWS's default."""
    return _resolve(explicit, S3_ENDPOINT_ENV)


def s3_timeout() -> float:
    """Seconds a registry's S3 endpoint may stay silent (connect, or between two reads):
    `STRATO_S3_TIMEOUT_S` > 20. botocore's own default (60 s, five attempts) let a silent
    endpoint hold `strato edge pull` for five minutes a request."""
    text = os.environ.get(S3_TIMEOUT_ENV, "").strip()
    try:
        value = float(text) if text else S3_TIMEOUT_S
    except ValueError:
        value = S3_TIMEOUT_S
    return value if value > 0 else S3_TIMEOUT_S


def make_s3_client(endpoint: str | None = None) -> Any:
    """A boto3 S3 client at `s3_endpoint(endpoint)` with `s3_timeout()` and three attempts;
    boto3 is imported only here, lazily."""
    import boto3
    from botocore.config import Config

    timeout = s3_timeout()
    config = Config(
        connect_timeout=timeout,
        read_timeout=timeout,
        retries={"mode": "standard", "max_attempts": 3},
    )
    return boto3.client("s3", endpoint_url=s3_endpoint(endpoint), config=config)
