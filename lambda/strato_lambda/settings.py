"""The cloud tier's settings, resolved in one place: explicit argument > `STRATO_*` env > default.

`MODEL_URI` (the name the SAM template and the issue use) is accepted as a fallback for
`STRATO_MODEL_URI`. Without any model URI the handler serves the bundle packaged into the
artifact at `$LAMBDA_TASK_ROOT/model`, when there is one. `s3_endpoint` is explicit only: without
it strato itself reads `STRATO_S3_ENDPOINT`, in one place (`Registry`'s S3 client).
"""

from __future__ import annotations

import os
import tempfile
from dataclasses import dataclass, fields, replace
from pathlib import Path
from typing import Any

from strato import ConfigError

__all__ = ["LAMBDA_PAYLOAD_LIMIT", "Settings", "vcpus"]

LAMBDA_PAYLOAD_LIMIT = 6 * 1024 * 1024  # synchronous invoke: 6 MB each way

_ENV: dict[str, tuple[str, ...]] = {
    "model_uri": ("STRATO_MODEL_URI", "MODEL_URI"),
    "service": ("STRATO_SERVICE", "POWERTOOLS_SERVICE_NAME"),
    "namespace": ("STRATO_METRICS_NAMESPACE", "POWERTOOLS_METRICS_NAMESPACE"),
    "cache_dir": ("STRATO_CACHE_DIR",),
    "threads": ("STRATO_ORT_THREADS",),
    "precision": ("STRATO_PRECISION",),
    "max_payload": ("STRATO_MAX_PAYLOAD_BYTES",),
}


def vcpus() -> int:
    """CPUs this process may run on (Lambda gives ~1 vCPU per 1,769 MB of memory)."""
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except (AttributeError, OSError):  # pragma: no cover - not Linux
        return max(1, os.cpu_count() or 1)


def _packaged_model() -> str | None:
    root = os.environ.get("LAMBDA_TASK_ROOT")
    if root and (Path(root) / "model" / "manifest.json").is_file():
        return str(Path(root) / "model")
    return None


@dataclass(frozen=True, slots=True)
class Settings:
    """Everything the handler needs to know; build with `Settings.resolve(...)`."""

    model_uri: str | None = None
    service: str = "strato"
    namespace: str = "Strato"
    cache_dir: str = ""
    threads: int = 0
    precision: str | None = None
    max_payload: int = LAMBDA_PAYLOAD_LIMIT
    s3_endpoint: str | None = None

    @classmethod
    def resolve(cls, **explicit: Any) -> Settings:
        """Explicit keyword arguments win over `STRATO_*` variables, which win over defaults."""
        unknown = set(explicit) - {f.name for f in fields(cls)}
        if unknown:
            raise ConfigError(f"unknown settings: {sorted(unknown)}")
        values: dict[str, Any] = {k: v for k, v in explicit.items() if v is not None}
        for name, env_names in _ENV.items():
            if name in values:
                continue
            for env_name in env_names:
                if os.environ.get(env_name):
                    values[name] = os.environ[env_name]
                    break
        settings = replace(cls(), **{k: _convert(k, v) for k, v in values.items()})
        if settings.model_uri is None:
            settings = replace(settings, model_uri=_packaged_model())
        if not settings.cache_dir:
            settings = replace(
                settings, cache_dir=str(Path(tempfile.gettempdir()) / "strato-models")
            )
        if settings.threads <= 0:
            settings = replace(settings, threads=vcpus())
        return settings


def _convert(name: str, value: Any) -> Any:
    if name not in ("threads", "max_payload"):
        return str(value)
    try:
        number = int(value)
    except (TypeError, ValueError):
        raise ConfigError(f"setting {name} must be an integer, got {value!r}") from None
    if name == "max_payload" and number <= 0:
        raise ConfigError(f"setting max_payload must be positive, got {number}")
    return number
