"""The public surface changes only on purpose."""

from __future__ import annotations

import subprocess
import sys

import strato
from strato import policies


def test_exported_names():
    assert set(strato.__all__) == {
        "Artifact",
        "AsyncClient",
        "AsyncEdge",
        "AsyncTransport",
        "BreakerConfig",
        "Bundle",
        "BundleError",
        "Classification",
        "Client",
        "ConfigError",
        "DatasetError",
        "DowngradeRefused",
        "Edge",
        "EngineError",
        "EngineMismatch",
        "ExportError",
        "FailedRequest",
        "FlushReport",
        "InferRequest",
        "InferResponse",
        "InferenceError",
        "IntegrityError",
        "InvalidInput",
        "Lambda",
        "Local",
        "Manifest",
        "ModelNotFound",
        "ModelRef",
        "ModelUnavailable",
        "Outbox",
        "ParityError",
        "PayloadTooLarge",
        "Prediction",
        "QuantizationError",
        "Queued",
        "Registry",
        "Retry",
        "SageMaker",
        "SignatureError",
        "StratoError",
        "TensorSpec",
        "Throttled",
        "Timeout",
        "Transport",
        "TransportError",
        "Unauthorized",
        "Unavailable",
        "VersionExists",
        "VersionMismatch",
        "__version__",
        "make_bundle",
        "policies",
    }
    assert set(policies.__all__) == {
        "BreakerConfig",
        "Cascade",
        "CloudFirst",
        "CloudOnly",
        "EdgeFirst",
        "EdgeOnly",
        "LatencySLO",
        "Policy",
        "Retry",
    }
    for name in strato.__all__:
        assert hasattr(strato, name), name


def test_import_stays_light():
    code = "import strato, sys; print(sorted(m for m in ('torch', 'onnxruntime', 'boto3', 'botocore') if m in sys.modules))"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"
