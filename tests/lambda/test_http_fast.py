"""The inference routes' fast path answers exactly what Powertools' resolver answers, and an
inference event never imports the event handler (the cold-start saving it exists for)."""

from __future__ import annotations

import base64
import copy
import json
import subprocess
import sys
from typing import Any

import numpy as np
import pytest
from strato._codec import HEADER_LENGTH, encode_request

pytestmark = pytest.mark.timeout(120)


def _through_resolver(function: Any, event: dict[str, Any], context: Any) -> dict[str, Any]:
    from strato_lambda.http_api import resolver

    answer: dict[str, Any] = resolver.resolve(copy.deepcopy(event), context)
    return answer


def _fast(event: dict[str, Any], context: Any) -> dict[str, Any]:
    from strato_lambda.http_fast import answer_infer, infer_route

    route = infer_route(event)
    assert route is not None
    return answer_infer(copy.deepcopy(event), context, *route)


def _same(fast: dict[str, Any], slow: dict[str, Any]) -> None:
    assert fast["statusCode"] == slow["statusCode"]
    assert fast["isBase64Encoded"] == slow["isBase64Encoded"]
    assert fast.get("cookies", []) == slow.get("cookies", [])
    fast_headers = {k.lower(): v for k, v in fast["headers"].items()}
    slow_headers = {k.lower(): v for k, v in slow.get("headers", {}).items()}
    assert fast_headers == slow_headers
    if fast["isBase64Encoded"]:
        assert base64.b64decode(fast["body"]) == base64.b64decode(slow["body"])
    else:
        assert json.loads(fast["body"]) == json.loads(slow["body"])


def _variants(event: Any, digit_batch: np.ndarray) -> list[dict[str, Any]]:
    plain = event("http_infer_json")
    binary = copy.deepcopy(plain)
    body, length = encode_request({"input": digit_batch}, binary=True, binary_outputs=True)
    binary["body"] = base64.b64encode(body).decode()
    binary["isBase64Encoded"] = True
    binary["headers"][HEADER_LENGTH.lower()] = str(length)
    pinned = copy.deepcopy(plain)
    pinned["rawPath"] = pinned["requestContext"]["http"]["path"] = (
        "/v2/models/tiny/versions/1/infer"
    )
    unknown = copy.deepcopy(plain)
    unknown["rawPath"] = unknown["requestContext"]["http"]["path"] = "/v2/models/nope/infer"
    bad_body = copy.deepcopy(plain)
    bad_body["body"] = "{"
    bad_base64 = copy.deepcopy(plain)
    bad_base64["isBase64Encoded"], bad_base64["body"] = True, "***"
    return [plain, binary, pinned, unknown, bad_body, bad_base64]


def test_the_fast_path_answers_what_the_resolver_answers(
    function: Any, event: Any, lambda_context: Any, digit_batch: np.ndarray
) -> None:
    statuses = []
    for variant in _variants(event, digit_batch):
        fast = _fast(variant, lambda_context)
        _same(fast, _through_resolver(function, variant, lambda_context))
        statuses.append(fast["statusCode"])
    assert statuses == [200, 200, 200, 404, 400, 400]


def test_other_routes_still_go_to_the_resolver(event: Any) -> None:
    from strato_lambda.http_fast import infer_route

    for name in ("http_health_ready", "http_model_metadata", "http_predict", "http_unknown_route"):
        assert infer_route(event(name)) is None, name
    get = event("http_infer_json")
    get["requestContext"]["http"]["method"] = "GET"
    assert infer_route(get) is None


def test_an_inference_event_never_imports_the_event_handler(tiny_bundle: Any, tmp_path: Any):
    from pathlib import Path

    events = Path(__file__).parent / "events"
    code = (
        "import json, sys\n"
        "import strato_lambda.app as app\n"
        "from strato_lambda.emulator import InvocationContext\n"
        f"event = json.loads(open({str(events / 'http_infer_json.json')!r}).read())\n"
        "answer = app.handler(event, InvocationContext())\n"
        "print(answer['statusCode'], 'aws_lambda_powertools.event_handler' in sys.modules)\n"
    )
    env = {
        "STRATO_MODEL_URI": str(tiny_bundle.root),
        "POWERTOOLS_TRACE_DISABLED": "true",
        "STRATO_CACHE_DIR": str(tmp_path),
        "PATH": "/usr/bin:/bin",
    }
    import os

    env["PYTHONPATH"] = os.environ.get("PYTHONPATH", "")
    done = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, env=env, timeout=60
    )
    assert done.returncode == 0, done.stderr
    assert done.stdout.split()[-2:] == ["200", "False"]
