"""`strato cloud local`: the Lambda Invoke API and an HTTP API front, in-process, no Docker.

What `sam local start-lambda` + `sam local start-api` give: boto3's lambda client pointed at
``endpoint_url`` invokes the function (`POST /2015-03-31/functions/{name}/invocations`,
honouring `X-Amz-Invocation-Type` RequestResponse / Event / DryRun and `X-Amz-Log-Type: Tail`),
and any other request is turned into an API Gateway HTTP API (2.0) event. Invocations run one at
a time, as in one Lambda container.
"""

from __future__ import annotations

import base64
import json
import threading
import time
import traceback
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import TYPE_CHECKING, Any
from urllib.parse import unquote, urlsplit

from strato_lambda.settings import LAMBDA_PAYLOAD_LIMIT

from .http_events import HttpAnswer, http_answer, http_api_event
from .invocation_context import InvocationContext

if TYPE_CHECKING:
    from collections.abc import Callable

__all__ = ["INVOKE_PREFIX", "Emulator"]

INVOKE_PREFIX = "/2015-03-31/functions/"


class Emulator:
    """Serve `handler` as function `function_name` on `host:port` (and the API on `api_port`)."""

    def __init__(
        self,
        handler: Callable[[Any, Any], Any],
        *,
        function_name: str = "strato-infer",
        host: str = "127.0.0.1",
        port: int = 3001,
        api_port: int | None = None,
        memory_mb: int = 1024,
        timeout_seconds: float = 30.0,
        region: str = "us-east-1",
    ) -> None:
        self.handler = handler
        self.function_name = function_name
        self.memory_mb = memory_mb
        self.timeout_seconds = timeout_seconds
        self.region = region
        self._lock = threading.Lock()
        self._servers: list[ThreadingHTTPServer] = []
        self._threads: list[threading.Thread] = []
        same = api_port is None or api_port == port
        self._servers.append(self._server(host, port, invoke=True, api=same))
        if not same:
            assert api_port is not None
            self._servers.append(self._server(host, api_port, invoke=False, api=True))

    def _server(self, host: str, port: int, *, invoke: bool, api: bool) -> ThreadingHTTPServer:
        server = ThreadingHTTPServer((host, port), _RequestHandler)
        server.daemon_threads = True
        server.emulator = self  # type: ignore[attr-defined]
        server.serves_invoke = invoke  # type: ignore[attr-defined]
        server.serves_api = api  # type: ignore[attr-defined]
        return server

    @property
    def lambda_url(self) -> str:
        host, port = self._servers[0].server_address[:2]
        return f"http://{host!s}:{port}"

    @property
    def api_url(self) -> str:
        host, port = self._servers[-1].server_address[:2]
        return f"http://{host!s}:{port}"

    def start(self) -> Emulator:
        for server in self._servers:
            thread = threading.Thread(target=server.serve_forever, daemon=True)
            thread.start()
            self._threads.append(thread)
        return self

    def stop(self) -> None:
        for server in self._servers:
            server.shutdown()
            server.server_close()
        for thread in self._threads:
            thread.join(timeout=5)

    def __enter__(self) -> Emulator:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    # --- running the function -------------------------------------------------------------
    def context(self) -> InvocationContext:
        return InvocationContext(
            function_name=self.function_name,
            memory_limit_in_mb=self.memory_mb,
            region=self.region,
            timeout_seconds=self.timeout_seconds,
        )

    def run(self, event: Any, context: InvocationContext) -> tuple[Any, bool]:
        """(result, unhandled): the handler's result, or Lambda's error document for a raise."""
        with self._lock:
            try:
                return self.handler(event, context), False
            except Exception as exc:
                return {
                    "errorMessage": str(exc),
                    "errorType": type(exc).__name__,
                    "requestId": context.aws_request_id,
                    "stackTrace": traceback.format_tb(exc.__traceback__),
                }, True

    def owns(self, function: str) -> bool:
        """Whether `function` (name, `name:qualifier` or ARN) is this emulator's function."""
        if function.startswith("arn:"):
            parts = function.split(":")
            function = parts[6] if len(parts) > 6 else ""
        return function.split(":")[0] == self.function_name


def _invoke_error(kind: str, message: str, status: int) -> HttpAnswer:
    body = json.dumps({"Type": "User", "message": message}).encode()
    return status, [("Content-Type", "application/json"), ("x-amzn-ErrorType", kind)], body


def _tail(context: InvocationContext, seconds: float, memory_mb: int) -> str:
    rid = context.aws_request_id
    log = (
        f"START RequestId: {rid} Version: $LATEST\nEND RequestId: {rid}\n"
        f"REPORT RequestId: {rid}\tDuration: {seconds * 1000:.2f} ms\t"
        f"Memory Size: {memory_mb} MB\n"
    )
    return base64.b64encode(log.encode()).decode()


def _payload(result: Any, unhandled: bool) -> tuple[bytes, bool]:
    """The response payload, or Lambda's error document when it cannot be sent."""
    try:
        body = json.dumps(result).encode()
    except (TypeError, ValueError) as exc:
        error = {
            "errorMessage": f"Unable to marshal response: {exc}",
            "errorType": "Runtime.MarshalError",
        }
        return json.dumps(error).encode(), True
    if len(body) > LAMBDA_PAYLOAD_LIMIT:
        message = (
            f"Response payload size ({len(body)} bytes) exceeded maximum allowed payload size "
            f"({LAMBDA_PAYLOAD_LIMIT} bytes)."
        )
        error = {"errorMessage": message, "errorType": "Function.ResponseSizeTooLarge"}
        return json.dumps(error).encode(), True
    return body, unhandled


def _event_of(function: str, emulator: Emulator, payload: bytes) -> Any | HttpAnswer:
    """The event to run, or the error Lambda answers before running anything."""
    if not emulator.owns(function):
        arn = f"arn:aws:lambda:{emulator.region}:123456789012:function:{function}"
        return _invoke_error("ResourceNotFoundException", f"Function not found: {arn}", 404)
    if len(payload) > LAMBDA_PAYLOAD_LIMIT:
        message = f"Request must be smaller than {LAMBDA_PAYLOAD_LIMIT} bytes for the InvokeFunction operation"
        return _invoke_error("RequestTooLargeException", message, 413)
    try:
        return json.loads(payload) if payload.strip() else {}
    except ValueError:
        message = "Could not parse request body into json"
        return _invoke_error("InvalidRequestContentException", message, 400)


def invoke(
    emulator: Emulator, function: str, headers: dict[str, str], payload: bytes
) -> HttpAnswer:
    """The Lambda `Invoke` API for one request."""
    event = _event_of(function, emulator, payload)
    if isinstance(event, tuple):
        return event
    kind = headers.get("x-amz-invocation-type", "RequestResponse")
    if kind == "DryRun":
        return 204, [], b""
    context = emulator.context()
    base = [("x-amzn-RequestId", context.aws_request_id), ("X-Amz-Executed-Version", "$LATEST")]
    if kind == "Event":
        threading.Thread(target=emulator.run, args=(event, context), daemon=True).start()
        return 202, base, b""
    if kind != "RequestResponse":
        return _invoke_error("InvalidParameterValueException", f"bad invocation type {kind!r}", 400)
    started = time.perf_counter()
    body, unhandled = _payload(*emulator.run(event, context))
    answer = [*base, ("Content-Type", "application/json")]
    if unhandled:
        answer.append(("X-Amz-Function-Error", "Unhandled"))
    if headers.get("x-amz-log-type") == "Tail":
        seconds = time.perf_counter() - started
        answer.append(("X-Amz-Log-Result", _tail(context, seconds, emulator.memory_mb)))
    return 200, answer, body


class _RequestHandler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    # Headers and body go out in two writes: with Nagle on, each answer waits ~40 ms for an ACK.
    disable_nagle_algorithm = True
    server_version = "strato-cloud-local"

    def log_message(self, format: str, *args: Any) -> None:
        """Quiet: the function's own structured logs are what matters."""

    def _refuse(self, status: int, kind: str, message: str) -> None:
        """Answer before reading the body, then close: the unread body must not be parsed as
        the next request."""
        self.close_connection = True
        self._send(_invoke_error(kind, message, status))

    def _payload(self) -> bytes | None:
        """The request body, or None once a refusal was sent: a Content-Length that is not a
        non-negative integer, or one over the payload limit (refused unread, as Lambda does)."""
        if "chunked" in self.headers.get("Transfer-Encoding", "").lower():
            self._refuse(411, "LengthRequiredException", "a Content-Length is required")
            return None
        declared = (self.headers.get("Content-Length") or "0").strip()
        if not declared.isdigit():
            self._refuse(400, "InvalidRequestContentException", "bad Content-Length")
            return None
        length = int(declared)
        if length > LAMBDA_PAYLOAD_LIMIT:
            message = (
                f"Request must be smaller than {LAMBDA_PAYLOAD_LIMIT} bytes for the "
                "InvokeFunction operation"
            )
            self._refuse(413, "RequestTooLargeException", message)
            return None
        return self.rfile.read(length) if length else b""

    def _handle(self) -> None:
        payload = self._payload()
        if payload is None:
            return
        split = urlsplit(self.path)
        server: Any = self.server
        emulator: Emulator = server.emulator
        if server.serves_invoke and split.path.startswith(INVOKE_PREFIX):
            name, _, rest = split.path[len(INVOKE_PREFIX) :].partition("/")
            if self.command == "POST" and rest.rstrip("/") == "invocations":
                headers = {k.lower(): v for k, v in self.headers.items()}
                self._send(invoke(emulator, unquote(name), headers, payload))
                return
        if not server.serves_api:
            self._send(
                _invoke_error(
                    "UnknownOperationException", f"no operation {self.command} {split.path}", 404
                )
            )
            return
        event = http_api_event(
            self.command,
            split.path,
            split.query,
            self.headers.items(),
            payload,
            source_ip=self.client_address[0],
        )
        result, unhandled = emulator.run(event, emulator.context())
        if unhandled:
            self._send(
                (
                    500,
                    [("Content-Type", "application/json")],
                    b'{"message":"Internal Server Error"}',
                )
            )
            return
        self._send(http_answer(result))

    def _send(self, answer: HttpAnswer) -> None:
        status, headers, body = answer
        self.send_response(status)
        for key, value in headers:
            if key.lower() not in ("content-length", "connection", "transfer-encoding"):
                self.send_header(key, value)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        if self.command != "HEAD":
            self.wfile.write(body)

    do_GET = do_POST = do_PUT = do_DELETE = do_PATCH = do_HEAD = do_OPTIONS = _handle
