"""Servers for the SDK's tests: the real edge daemon and cloud emulator as subprocesses, and a
stand-in for the parts of AWS that cannot be reached here (throttling, SageMaker runtime, an
HTTP API behind SigV4), with injectable faults. The stand-in replaces only the unreachable cloud:
the client, transports and router under test run for real against it.
"""

from __future__ import annotations

import base64
import collections
import contextlib
import json
import os
import signal
import subprocess
import sys
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import httpx
from strato import Bundle, InferRequest, Local, TensorSpec
from strato._bundle import make_bundle
from strato._codec import (
    HEADER_LENGTH,
    decode_request,
    encode_response,
    header_length_from,
)
from strato._envelope import is_envelope, pack, unpack
from strato._errors import InferenceError
from strato._transports.local import model_metadata

import support

STRATO = str(Path(sys.executable).with_name("strato"))



def free_port() -> int:
    return int(support.free_port())


def private_bundle(root: Path, *, name: str = "secret", version: str = "1") -> Bundle:
    """A tiny bundle whose manifest says `serving.cloud: never`."""
    helpers = support
    root.mkdir(parents=True, exist_ok=True)
    helpers.write_tiny_onnx(root / "model.onnx", seed=3)
    return make_bundle(
        root,
        name=name,
        version=version,
        inputs=[TensorSpec("input", "FP32", (-1, 1, 28, 28))],
        outputs=[TensorSpec("logits", "FP32", (-1, 10))],
        artifacts=[{"path": "model.onnx", "kind": "onnx", "precision": "fp32"}],
        labels=tuple(str(i) for i in range(10)),
        opset=17,
        calibration={"temperature": 1.0, "cascade_threshold": 0.8},
        serving={"cloud": "never"},
    )


class Proc:
    """A server subprocess whose output goes to a file (a pipe would fill up and block it)."""

    def __init__(
        self,
        args: list[str],
        log: Path,
        *,
        ready_url: str | None = None,
        ready_line: str | None = None,
    ) -> None:
        self.args = args
        self.log = log
        self.ready_url = ready_url
        self.ready_line = ready_line
        self.process: subprocess.Popen[bytes] | None = None
        self.url = ""

    def start(self, timeout: float = 90.0) -> Proc:
        env = {**os.environ, "PYTHONUNBUFFERED": "1", "STRATO_ORT_THREADS": "1"}
        with self.log.open("ab") as out:
            self.process = subprocess.Popen(
                self.args, stdout=out, stderr=subprocess.STDOUT, env=env
            )
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise RuntimeError(
                    f"{self.args} exited {self.process.returncode}:\n{self.output()}"
                )
            if self._ready():
                return self
            time.sleep(0.1)
        self.stop()
        raise RuntimeError(f"{self.args} not ready after {timeout}s:\n{self.output()}")

    def _ready(self) -> bool:
        if self.ready_line is not None:
            return self.ready_line in self.output()
        assert self.ready_url is not None
        try:
            return httpx.get(self.ready_url, timeout=1.0).status_code == 200
        except httpx.HTTPError:
            return False

    def output(self) -> str:
        return self.log.read_text(errors="replace") if self.log.exists() else ""

    def kill(self) -> None:
        """SIGKILL: no clean shutdown, connections die mid-flight."""
        if self.process is not None and self.process.poll() is None:
            self.process.send_signal(signal.SIGKILL)
            self.process.wait(10)

    def stop(self) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(10)
            except subprocess.TimeoutExpired:
                self.kill()


def edge_server(store: Path, port: int, log: Path, *extra: str) -> Proc:
    """`strato edge serve` on 127.0.0.1:port (not started)."""
    args = [
        STRATO,
        "edge",
        "serve",
        "--store",
        str(store),
        "--port",
        str(port),
        "--log-level",
        "warning",
        *extra,
    ]
    proc = Proc(args, log, ready_url=f"http://127.0.0.1:{port}/v2/health/ready")
    proc.url = f"http://127.0.0.1:{port}"
    return proc


def cloud_emulator(model_uri: str, port: int, log: Path) -> Proc:
    """`strato cloud local` on 127.0.0.1:port (not started)."""
    args = [STRATO, "cloud", "local", "--model-uri", model_uri, "--port", str(port)]
    proc = Proc(args, log, ready_line="strato cloud local ready")
    proc.url = f"http://127.0.0.1:{port}"
    return proc


class StandIn:
    """The unreachable cloud, served from a `Local` engine: the Lambda Invoke API (strato's
    envelope, and HTTP API events for metadata), SageMaker runtime `invoke_endpoint`, and OIP
    over HTTP. Faults: `delay_s`, `fail(status, times)`, `throttle(times)`.
    """

    def __init__(self, source: Any, *, name: str = "standin") -> None:
        self.local = Local(source)
        self.name = name
        self.delay_s = 0.0
        self.version_override: str | None = None
        self.seen_ids: collections.Counter[str] = collections.Counter()
        self.requests = 0
        self.headers: list[dict[str, str]] = []
        self._faults: list[int] = []
        self._lock = threading.Lock()
        self._server = ThreadingHTTPServer(("127.0.0.1", 0), self._handler())
        self._server.daemon_threads = True
        self.port = self._server.server_address[1]
        self.url = f"http://127.0.0.1:{self.port}"
        self._thread = threading.Thread(target=self._server.serve_forever, daemon=True)

    def start(self) -> StandIn:
        self._thread.start()
        return self

    def stop(self) -> None:
        self._server.shutdown()
        self._server.server_close()
        self.local.close()

    def fail(self, status: int, times: int = 1) -> None:
        with self._lock:
            self._faults.extend([status] * times)

    def _next_fault(self) -> int | None:
        with self._lock:
            self.requests += 1
            return self._faults.pop(0) if self._faults else None

    # --- what the routes do --------------------------------------------------------------
    def infer(
        self,
        model: str,
        version: str | None,
        body: bytes,
        header_length: int | None,
        *,
        binary: bool,
    ) -> tuple[int, bytes, int | None, str]:
        """(status, body, header length, model_version) for one OIP request."""
        try:
            decoded = decode_request(body, header_length=header_length)
            if decoded.id:
                with self._lock:
                    self.seen_ids[decoded.id] += 1
            response = self.local.infer(InferRequest(model, decoded.inputs, version, decoded.id))
        except InferenceError as exc:
            return exc.status_code, json.dumps({"error": str(exc)}).encode(), None, ""
        model_version = self.version_override or response.model_version
        payload, length = encode_response(
            response.outputs,
            model_name=response.model_name,
            model_version=model_version,
            id=decoded.id,
            binary=binary and decoded.binary_default,
        )
        return 200, payload, length, model_version

    def metadata(self, model: str) -> tuple[int, bytes]:
        try:
            metadata = model_metadata(self.local.engine(model))
        except InferenceError as exc:
            return exc.status_code, json.dumps({"error": str(exc)}).encode()
        if self.version_override:
            metadata["versions"] = [self.version_override]
        return 200, json.dumps(metadata).encode()

    def invoke(self, event: dict[str, Any]) -> dict[str, Any]:
        if is_envelope(event):
            body, length = unpack(event)
            status, payload, out_length, version = self.infer(
                event["model"], event.get("version"), body, length, binary=True
            )
            if status != 200:
                return {"strato": 1, "status": status, "error": json.loads(payload)["error"]}
            return pack(payload, out_length, status=200, model_version=version, precision="fp32")
        path = event["rawPath"]
        status, payload = self.metadata(path.split("/")[3])
        return {"statusCode": status, "body": payload.decode(), "isBase64Encoded": False}

    def _handler(self) -> type[BaseHTTPRequestHandler]:
        standin = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"
            disable_nagle_algorithm = True  # headers and body go out in two writes

            def log_message(self, *args: Any) -> None:
                pass

            def _send(
                self, status: int, body: bytes, headers: dict[str, str] | None = None
            ) -> None:
                self.send_response(status)
                for key, value in (headers or {"content-type": "application/json"}).items():
                    self.send_header(key, value)
                self.send_header("content-length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def _fault(self) -> bool:
                fault = standin._next_fault()
                standin.headers.append(dict(self.headers.items()))
                if standin.delay_s:
                    time.sleep(standin.delay_s)
                if fault is None:
                    return False
                if fault == 429 and self.path.startswith("/2015-03-31/"):
                    body = json.dumps(
                        {"__type": "TooManyRequestsException", "message": "Rate exceeded"}
                    )
                    self._send(
                        429,
                        body.encode(),
                        {
                            "content-type": "application/json",
                            "x-amzn-ErrorType": "TooManyRequestsException",
                        },
                    )
                else:
                    self._send(fault, json.dumps({"error": f"injected {fault}"}).encode())
                return True

            def do_GET(self) -> None:
                if self._fault():
                    return
                parts = self.path.split("/")
                if self.path.startswith("/v2/models/"):
                    self._send(*standin.metadata(parts[3]))
                else:
                    self._send(200, b"{}")

            def do_POST(self) -> None:
                body = self.rfile.read(int(self.headers.get("content-length", 0)))
                if self._fault():
                    return
                parts = self.path.split("/")
                if self.path.startswith("/2015-03-31/functions/"):
                    self._send(200, json.dumps(standin.invoke(json.loads(body))).encode())
                elif self.path.startswith("/endpoints/") and (
                    self.headers.get("X-Amzn-SageMaker-Custom-Attributes") == "strato-metadata"
                ):  # the metadata contract SageMaker.metadata speaks
                    self._send(*standin.metadata("tiny"))
                elif self.path.startswith("/endpoints/"):
                    length = header_length_from(
                        {"content-type": self.headers.get("content-type", "")}
                    )
                    status, payload, _, _ = standin.infer("tiny", None, body, length, binary=False)
                    if status != 200:
                        error = {
                            "ErrorCode": "CLIENT_ERROR_FROM_MODEL",
                            "Message": "model error",
                            "OriginalStatusCode": status,
                            "OriginalMessage": payload.decode(),
                        }
                        self._send(
                            424,
                            json.dumps(error).encode(),
                            {"content-type": "application/json", "x-amzn-ErrorType": "ModelError"},
                        )
                    else:
                        self._send(200, payload)
                elif self.path.startswith("/v2/models/"):
                    version = parts[5] if len(parts) > 6 else None
                    status, payload, length, model_version = standin.infer(
                        parts[3], version, body, header_length_from(self.headers), binary=True
                    )
                    headers = {
                        "content-type": "application/octet-stream"
                        if length
                        else "application/json",
                        "X-Strato-Model-Version": model_version,
                    }
                    if length is not None:
                        headers[HEADER_LENGTH] = str(length)
                    self._send(status, payload, headers)
                else:
                    self._send(404, b'{"error": "no such route"}')

        return Handler


def b64(data: bytes) -> str:
    return base64.b64encode(data).decode()


class DelayProxy:
    """A TCP proxy in front of a real server: delays each chunk the client sends by `delay_s`
    (a slowed edge, without touching the server) and counts the chunks (≈ requests)."""

    def __init__(self, upstream_port: int) -> None:
        import socket

        self.upstream = ("127.0.0.1", upstream_port)
        self.delay_s = 0.0
        self.chunks = 0
        self._listener = socket.create_server(("127.0.0.1", 0))
        self.port = self._listener.getsockname()[1]
        self.url = f"http://127.0.0.1:{self.port}"
        self._closed = threading.Event()
        self._sockets: list[Any] = []
        threading.Thread(target=self._accept, daemon=True).start()

    def _accept(self) -> None:
        import socket

        while not self._closed.is_set():
            try:
                client, _ = self._listener.accept()
            except OSError:
                return
            try:
                server = socket.create_connection(self.upstream, timeout=5)
            except OSError:
                client.close()
                continue
            server.settimeout(None)
            self._sockets += [client, server]
            threading.Thread(target=self._pump, args=(client, server, True), daemon=True).start()
            threading.Thread(target=self._pump, args=(server, client, False), daemon=True).start()

    def _pump(self, source: Any, target: Any, delayed: bool) -> None:
        try:
            while chunk := source.recv(65536):
                if delayed:
                    self.chunks += 1
                    if self.delay_s:
                        time.sleep(self.delay_s)
                target.sendall(chunk)
        except OSError:
            pass
        finally:
            for sock in (source, target):
                with contextlib.suppress(OSError):
                    sock.close()

    def close(self) -> None:
        self._closed.set()
        self._listener.close()
        for sock in self._sockets:
            with contextlib.suppress(OSError):
                sock.close()


class SageMakerFront:
    """What the SageMaker runtime service does in front of a container: `POST
    /endpoints/{name}/invocations` → the container's `POST /invocations` (same body, content
    type and target-model header); a container error comes back as a 424 `ModelError`.
    `drop_custom_attributes` stands in for a container that ignores `CustomAttributes`."""

    def __init__(self, container_url: str, *, drop_custom_attributes: bool = False) -> None:
        front = self
        self.container = httpx.Client(base_url=container_url, timeout=30)

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"
            disable_nagle_algorithm = True  # headers and body go out in two writes

            def log_message(self, *args: Any) -> None:
                pass

            def do_POST(self) -> None:
                body = self.rfile.read(int(self.headers.get("content-length", 0)))
                headers = {"content-type": self.headers.get("content-type", "application/json")}
                target = self.headers.get("X-Amzn-SageMaker-Target-Model")
                if target:
                    headers["X-Amzn-SageMaker-Target-Model"] = target
                custom = self.headers.get("X-Amzn-SageMaker-Custom-Attributes")
                if custom and not drop_custom_attributes:  # the runtime passes them through
                    headers["X-Amzn-SageMaker-Custom-Attributes"] = custom
                answer = front.container.post("/invocations", content=body, headers=headers)
                if answer.status_code == 200:
                    payload = answer.content
                    reply = {"content-type": answer.headers.get("content-type", "application/json")}
                    status = 200
                else:
                    error = {
                        "ErrorCode": "CLIENT_ERROR_FROM_MODEL",
                        "Message": "Received client error from primary",
                        "OriginalStatusCode": answer.status_code,
                        "OriginalMessage": answer.text,
                    }
                    payload, status = json.dumps(error).encode(), 424
                    reply = {"content-type": "application/json", "x-amzn-ErrorType": "ModelError"}
                self.send_response(status)
                for key, value in reply.items():
                    self.send_header(key, value)
                self.send_header("content-length", str(len(payload)))
                self.end_headers()
                self.wfile.write(payload)

        self._server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self._server.daemon_threads = True
        self.url = f"http://127.0.0.1:{self._server.server_address[1]}"
        threading.Thread(target=self._server.serve_forever, daemon=True).start()

    def close(self) -> None:
        self._server.shutdown()
        self._server.server_close()
        self.container.close()
