"""A Lambda context object for the local emulator and tests, shaped like the runtime's."""

from __future__ import annotations

import time
import uuid
from dataclasses import dataclass, field

__all__ = ["InvocationContext"]


@dataclass
class InvocationContext:
    """What `context` holds inside a real invocation (the attributes Powertools reads)."""

    function_name: str = "strato-infer"
    function_version: str = "$LATEST"
    memory_limit_in_mb: int = 1024
    region: str = "us-east-1"
    account_id: str = "123456789012"
    timeout_seconds: float = 30.0
    aws_request_id: str = field(default_factory=lambda: str(uuid.uuid4()))
    client_context: object | None = None
    identity: object | None = None
    _deadline: float = field(default=0.0, repr=False)

    def __post_init__(self) -> None:
        self._deadline = time.monotonic() + self.timeout_seconds

    @property
    def invoked_function_arn(self) -> str:
        return f"arn:aws:lambda:{self.region}:{self.account_id}:function:{self.function_name}"

    @property
    def log_group_name(self) -> str:
        return f"/aws/lambda/{self.function_name}"

    @property
    def log_stream_name(self) -> str:
        return f"{time.strftime('%Y/%m/%d')}/[{self.function_version}]{self.aws_request_id[:8]}"

    def get_remaining_time_in_millis(self) -> int:
        return max(0, int((self._deadline - time.monotonic()) * 1000))
