"""strato_edge: the device daemon (`strato edge …`).

An Open Inference Protocol v2 server over a folder of verified bundles, with dynamic batching,
SageMaker hosting routes, Prometheus metrics, and a sync agent that pulls bundles from a
registry (folder or `s3://`) and hot-swaps them. Heavy modules (uvicorn, onnxruntime, boto3)
load only when a command needs them.
"""

from __future__ import annotations

from strato_edge.config import BatchingConfig, ServeConfig

__all__ = ["BatchingConfig", "ServeConfig"]
