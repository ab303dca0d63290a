"""API Gateway HTTP API events (payload format 2.0) from plain HTTP requests, and back.

What `sam local start-api` does for an HTTP API, without Docker: the emulator's front door.
"""

from __future__ import annotations

import base64
import json
import time
import uuid
from typing import TYPE_CHECKING, Any
from urllib.parse import parse_qsl

if TYPE_CHECKING:
    from collections.abc import Iterable

__all__ = ["HttpAnswer", "http_answer", "http_api_event"]

_TEXT_TYPES = (
    "text/",
    "application/json",
    "+json",
    "application/xml",
    "+xml",
    "x-www-form-urlencoded",
)


def _is_text(content_type: str, body: bytes) -> bool:
    if content_type and not any(t in content_type for t in _TEXT_TYPES):
        return False
    try:
        body.decode("utf-8")
    except UnicodeDecodeError:
        return False
    return True


def http_api_event(
    method: str,
    raw_path: str,
    raw_query: str,
    headers: Iterable[tuple[str, str]],
    body: bytes,
    *,
    source_ip: str = "127.0.0.1",
    account_id: str = "123456789012",
) -> dict[str, Any]:
    """The event API Gateway would hand the function for this request ($default route/stage)."""
    merged: dict[str, str] = {}
    for key, value in headers:
        key = key.lower()
        merged[key] = f"{merged[key]},{value}" if key in merged else value
    cookies = [c.strip() for c in merged.pop("cookie", "").split(";") if c.strip()]
    query: dict[str, str] = {}
    for key, value in parse_qsl(raw_query, keep_blank_values=True):
        query[key] = f"{query[key]},{value}" if key in query else value
    event: dict[str, Any] = {
        "version": "2.0",
        "routeKey": "$default",
        "rawPath": raw_path,
        "rawQueryString": raw_query,
        "headers": merged,
        "requestContext": _request_context(method, raw_path, merged, source_ip, account_id),
        "isBase64Encoded": False,
    }
    if cookies:
        event["cookies"] = cookies
    if query:
        event["queryStringParameters"] = query
    if body:
        if _is_text(merged.get("content-type", ""), body):
            event["body"] = body.decode("utf-8")
        else:
            event["body"] = base64.b64encode(body).decode("ascii")
            event["isBase64Encoded"] = True
    return event


def _request_context(
    method: str, raw_path: str, headers: dict[str, str], source_ip: str, account_id: str
) -> dict[str, Any]:
    now = time.time()
    host = headers.get("host", "localhost")
    return {
        "accountId": account_id,
        "apiId": "local",
        "domainName": host,
        "domainPrefix": host.split(".")[0],
        "http": {
            "method": method,
            "path": raw_path,
            "protocol": "HTTP/1.1",
            "sourceIp": source_ip,
            "userAgent": headers.get("user-agent", ""),
        },
        "requestId": str(uuid.uuid4()),
        "routeKey": "$default",
        "stage": "$default",
        "time": time.strftime("%d/%b/%Y:%H:%M:%S +0000", time.gmtime(now)),
        "timeEpoch": int(now * 1000),
    }


HttpAnswer = tuple[int, list[tuple[str, str]], bytes]


def http_answer(result: Any) -> HttpAnswer:
    """Status, headers and body API Gateway sends for a function's result (format 2.0 rules)."""
    if not isinstance(result, dict) or "statusCode" not in result:
        # Without a statusCode, API Gateway assumes 200 and a JSON body of the whole result.
        body = result if isinstance(result, str) else json.dumps(result)
        return 200, [("Content-Type", "application/json")], body.encode()
    headers = [(str(k), str(v)) for k, v in (result.get("headers") or {}).items()]
    for name, values in (result.get("multiValueHeaders") or {}).items():
        headers.extend((str(name), str(v)) for v in values)
    headers.extend(("Set-Cookie", str(c)) for c in result.get("cookies") or [])
    raw = str(result.get("body") or "")
    payload = base64.b64decode(raw) if result.get("isBase64Encoded") else raw.encode()
    return int(result["statusCode"]), headers, payload
