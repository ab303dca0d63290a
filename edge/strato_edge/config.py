"""Settings of the edge daemon: explicit argument > `STRATO_EDGE_*` environment > default."""

from __future__ import annotations

import ipaddress
import json
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from strato import ConfigError

if TYPE_CHECKING:
    import os

__all__ = [
    "DEFAULT_MAX_BODY_BYTES",
    "DEFAULT_STORE",
    "SAGEMAKER_MODEL_DIR",
    "BatchingConfig",
    "ServeConfig",
    "is_loopback",
    "load_batching",
    "read_token_file",
]

DEFAULT_STORE = ".strato/device"  # never the registry: a store is not its own source
SAGEMAKER_MODEL_DIR = "/opt/ml/model"
DEFAULT_MAX_BODY_BYTES = 8 << 20


@dataclass(frozen=True, slots=True)
class BatchingConfig:
    """Dynamic batching for one model: `max_batch_size` 1 turns batching off.

    `max_queue_delay_us` is how long the first request of a batch may wait for company; the
    batcher only waits while the model is already busy, so a lone client never pays it.
    `instances` is how many batches of one model may run at once. An engine whose runs average
    under `inline_below_us` runs on the event loop (0: always in the thread pool).
    """

    max_batch_size: int = 32
    max_queue_delay_us: int = 500
    instances: int = 2
    inline_below_us: int = 150

    def __post_init__(self) -> None:
        if self.max_batch_size < 1:
            raise ConfigError(f"max_batch_size must be >= 1, got {self.max_batch_size}")
        if self.max_queue_delay_us < 0:
            raise ConfigError(f"max_queue_delay_us must be >= 0, got {self.max_queue_delay_us}")
        if self.inline_below_us < 0:
            raise ConfigError(f"inline_below_us must be >= 0, got {self.inline_below_us}")
        if self.instances < 1:
            raise ConfigError(f"instances must be >= 1, got {self.instances}")

    @property
    def enabled(self) -> bool:
        """Whether requests are batched at all (`max_batch_size` > 1)."""
        return self.max_batch_size > 1

    @classmethod
    def from_dict(cls, raw: Any, base: BatchingConfig | None = None) -> BatchingConfig:
        """A batching table from the config file, over `base`; unknown keys are a `ConfigError`."""
        if not isinstance(raw, dict):
            raise ConfigError(f"a batching entry must be a table/object, got {raw!r}")
        known = {"max_batch_size", "max_queue_delay_us", "instances", "inline_below_us"}
        unknown = sorted(set(raw) - known)
        if unknown:
            raise ConfigError(f"unknown batching key(s) {unknown}; known: {sorted(known)}")
        values = {k: getattr(base or cls(), k) for k in known}
        for key, value in raw.items():
            if not isinstance(value, int) or isinstance(value, bool):
                raise ConfigError(f"batching {key} must be an integer, got {value!r}")
            values[key] = value
        return cls(**values)


def load_batching(
    path: str | os.PathLike[str], base: BatchingConfig
) -> tuple[BatchingConfig, dict[str, BatchingConfig]]:
    """Read a `--batching` file (JSON or TOML): `{"default": {...}, "models": {"name": {...}}}`.

    Returns the default config (the file's `default` over `base`) and one per named model.
    """
    path = Path(path)
    try:
        text = path.read_text()
    except OSError as exc:
        raise ConfigError(f"cannot read batching config {path}: {exc}") from None
    try:
        if path.suffix == ".toml":
            raw: Any = _parse_toml(text)
        else:
            raw = json.loads(text)
    except ValueError as exc:
        raise ConfigError(f"batching config {path} is malformed: {exc}") from None
    if not isinstance(raw, dict):
        raise ConfigError(f"batching config {path} must hold an object")
    default = BatchingConfig.from_dict(raw.get("default", {}), base)
    models = raw.get("models", {})
    if not isinstance(models, dict):
        raise ConfigError(f"batching config {path}: 'models' must map names to settings")
    return default, {name: BatchingConfig.from_dict(v, default) for name, v in models.items()}


def _parse_toml(text: str) -> Any:
    if sys.version_info < (3, 11):
        raise ConfigError("TOML batching configs need Python 3.11+; use JSON")
    import tomllib  # type: ignore[import-not-found]  # mypy checks as 3.10

    return tomllib.loads(text)


def read_token_file(path: str | os.PathLike[str]) -> str:
    """The bearer token kept in a file (`--token-file`, `STRATO_EDGE_TOKEN_FILE`), so it never
    shows on a command line; one trailing newline is ignored. UTF-8, any characters."""
    try:
        raw = Path(path).read_bytes()
    except OSError as exc:
        raise ConfigError(f"cannot read the token file {path}: {exc.strerror}") from None
    try:
        token = raw.decode("utf-8").removesuffix("\n").removesuffix("\r")
    except UnicodeDecodeError:
        raise ConfigError(f"the token file {path} is not UTF-8 text") from None
    if not token.strip():
        raise ConfigError(f"the token file {path} is empty")
    return token


def is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


@dataclass(frozen=True)
class ServeConfig:
    """Everything `strato edge serve` needs. Refuses a public bind without a token."""

    store: Path = Path(DEFAULT_STORE)
    host: str = "127.0.0.1"
    port: int = 8000
    token: str | None = None
    insecure: bool = False
    sagemaker: bool = False
    batching: BatchingConfig = field(default_factory=BatchingConfig)
    model_batching: dict[str, BatchingConfig] = field(default_factory=dict)
    max_body_bytes: int = DEFAULT_MAX_BODY_BYTES
    timeout_s: float = 30.0
    watch_interval_s: float = 1.0
    threads: int | None = None
    workers: int = 4
    uds: str | None = None  # also listen on this Unix domain socket
    allow_shm: bool = False  # Triton's system shared-memory extension, for local clients
    max_loaded_versions: int = 2  # unserved versions kept loaded on request (LRU)
    # Connection limits (see `strato_edge.limits`): what a slow or hostile client can hold.
    max_header_bytes: int = 64 << 10  # request line + headers; more gets 431
    max_headers: int = 100
    header_timeout_s: float = 10.0  # from a request's first byte to its last header
    keep_alive_s: float = 5.0  # an idle keep-alive connection is closed after this
    max_connections: int = 1024  # then the oldest idle or half-sent connection is dropped
    grpc_port: int | None = None  # KServe v2 gRPC on this port too (None: off)
    metrics_port: int | None = None  # /metrics without a token on this port too (None: off)

    def __post_init__(self) -> None:
        if not is_loopback(self.host) and not self.token and not self.insecure:
            raise ConfigError(
                f"refusing to listen on {self.host} without a token: pass --token or set "
                "STRATO_EDGE_TOKEN (or --insecure to serve without authentication)"
            )
        if self.max_body_bytes < 1024:
            raise ConfigError(f"max_body_bytes must be >= 1024, got {self.max_body_bytes}")
        if self.timeout_s <= 0:
            raise ConfigError(f"timeout must be > 0 seconds, got {self.timeout_s}")
        if not 0 <= self.port < 65536:
            raise ConfigError(f"port must be in 0..65535, got {self.port}")
        for option, value in (("grpc_port", self.grpc_port), ("metrics_port", self.metrics_port)):
            if value is not None and not 0 <= value < 65536:
                raise ConfigError(f"{option} must be in 0..65535, got {value}")
        if self.workers < 1:
            raise ConfigError(f"workers must be >= 1, got {self.workers}")
        for option, number in (
            ("max_header_bytes", self.max_header_bytes),
            ("max_headers", self.max_headers),
            ("header_timeout_s", self.header_timeout_s),
            ("keep_alive_s", self.keep_alive_s),
            ("max_connections", self.max_connections),
        ):
            if number <= 0:
                raise ConfigError(f"{option} must be > 0, got {number}")
        if self.max_loaded_versions < 0:
            raise ConfigError(f"max_loaded_versions must be >= 0, got {self.max_loaded_versions}")

    def batching_for(self, model: str) -> BatchingConfig:
        """The batching settings of `model`: its own table, else the daemon's default."""
        return self.model_batching.get(model, self.batching)
