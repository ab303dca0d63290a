"""Baseline for benchmarks/edge_server.py: a bare Starlette endpoint calling ONNX Runtime per
request, on the event loop, OIP JSON bodies parsed with orjson. No batching, no validation
beyond what numpy does, no metrics: the floor a Python server can reach on this machine.

    python benchmarks/_edge_bare_server.py --store REGISTRY --port 8101
"""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import onnxruntime as ort
import orjson
import uvicorn
from starlette.applications import Starlette
from starlette.responses import Response
from starlette.routing import Route

if TYPE_CHECKING:
    from starlette.requests import Request


def build_app(store: Path) -> Starlette:
    sessions: dict[str, Any] = {}
    for model_dir in sorted(p for p in store.iterdir() if p.is_dir()):
        onnx = next(model_dir.glob("*/model.onnx"))
        sessions[model_dir.name] = ort.InferenceSession(
            str(onnx), providers=["CPUExecutionProvider"]
        )

    async def infer(request: Request) -> Response:
        session = sessions[request.path_params["model"]]
        body = orjson.loads(await request.body())
        tensor = body["inputs"][0]
        x = np.asarray(tensor["data"], dtype=np.float32).reshape(tensor["shape"])
        (logits,) = session.run(None, {tensor["name"]: x})
        out = {
            "model_name": request.path_params["model"],
            "outputs": [
                {
                    "name": "logits",
                    "datatype": "FP32",
                    "shape": list(logits.shape),
                    "data": logits.ravel(),
                }
            ],
        }
        return Response(
            orjson.dumps(out, option=orjson.OPT_SERIALIZE_NUMPY), media_type="application/json"
        )

    async def ready(request: Request) -> Response:
        return Response(b"{}", media_type="application/json")

    return Starlette(
        routes=[
            Route("/v2/health/ready", ready),
            Route("/v2/models/{model}/infer", infer, methods=["POST"]),
        ]
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--store", type=Path, required=True)
    parser.add_argument("--port", type=int, required=True)
    args = parser.parse_args()
    uvicorn.run(
        build_app(args.store),
        host="127.0.0.1",
        port=args.port,
        log_level="warning",
        access_log=False,
    )


if __name__ == "__main__":
    main()
