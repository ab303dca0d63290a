"""Footprints are part of the contract: the runtime packages and `strato --help` load no torch.

Each check runs in a fresh interpreter, since this test process has torch loaded already.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

HEAVY = {"torch", "tensorrt", "onnx", "onnxscript", "sklearn", "matplotlib"}
# The client and the CLI root must also start without the inference and AWS stacks.
CLIENT = HEAVY | {"onnxruntime", "boto3", "botocore"}
STRATO = str(Path(sys.executable).parent / "strato")

PROBE = """
import json, sys
{body}
print(json.dumps(sorted({{m.split('.')[0] for m in sys.modules}})))
"""


def loaded_modules(body: str) -> set[str]:
    done = subprocess.run(
        [sys.executable, "-c", PROBE.format(body=body)],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == 0, done.stderr[-2000:]
    return set(json.loads(done.stdout.strip().splitlines()[-1]))


@pytest.mark.parametrize(
    ("body", "forbidden"),
    [
        ("import strato", CLIENT),
        ("import strato._cli", CLIENT),
        ("import strato_edge", HEAVY | {"boto3"}),
        ("import strato_lambda", HEAVY),
        ("import strato_lambda.app", HEAVY),
        ("import strato_training", HEAVY),
    ],
)
def test_imports_load_no_torch(body: str, forbidden: set[str]) -> None:
    heavy = loaded_modules(body) & forbidden
    assert not heavy, f"`{body}` loads {sorted(heavy)}"


def test_strato_help_loads_no_torch() -> None:
    body = (
        "import sys\n"
        "from strato._cli import app\n"
        "try:\n"
        "    app(['--help'], standalone_mode=False)\n"
        "except SystemExit:\n"
        "    pass\n"
        "for sub in ('train', 'quickstart', 'edge', 'cloud'):\n"
        "    try:\n"
        "        app([sub, '--help'], standalone_mode=False)\n"
        "    except SystemExit:\n"
        "        pass\n"
    )
    heavy = loaded_modules(body) & CLIENT
    assert not heavy, f"`strato --help` loads {sorted(heavy)}"


def test_the_installed_strato_command_helps() -> None:
    done = subprocess.run([STRATO, "--help"], capture_output=True, text=True, timeout=120)
    assert done.returncode == 0
    for command in (
        "train",
        "evaluate",
        "export",
        "publish",
        "quickstart",
        "predict",
        "models",
        "import",
    ):
        assert command in done.stdout


def test_import_strato_loads_no_http_or_asyncio_until_used():
    """Lambda/AsyncClient load httpx and asyncio on first use, not on `import strato`; `Edge`
    speaks its own lean HTTP/1.1 and never loads httpx."""
    import subprocess
    import sys

    code = (
        "import sys, strato\n"
        "print(sorted(m for m in ('httpx', 'asyncio', 'boto3') if m in sys.modules))\n"
        "strato.Edge('http://127.0.0.1:1').close()\n"
        "print('httpx' in sys.modules)\n"
        "strato.Lambda(http_url='http://127.0.0.1:1')\n"
        "print('httpx' in sys.modules)\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.split("\n")[:3] == ["[]", "False", "True"]


def test_every_cli_module_imports_on_its_own():
    """Sub-apps take shared options from strato._cli_options, so none imports strato._cli
    (which loads the sub-apps) in a cycle, whichever is imported first."""
    import subprocess
    import sys

    modules = [
        "strato_training.cli",
        "strato_training.cli_optimize",
        "strato_edge.cli",
        "strato_lambda.cli",
        "strato._cli_trust",
        "strato._cli",
    ]
    for module in modules:
        result = subprocess.run(
            [sys.executable, "-c", f"import {module}"], capture_output=True, text=True
        )
        assert result.returncode == 0, f"import {module}: {result.stderr[-400:]}"


# The client side of strato and the emulator's HTTP server: no part of a Lambda cold start.
CLIENT_SIDE = (
    "strato._client",
    "strato._outbox",
    "strato.policies",
    "strato._breaker",
    "strato._transports",
    "strato._inference",
    "sqlite3",
    "http.server",
)


def test_the_lambda_handler_loads_no_client_side_until_used():
    """`import strato_lambda.app` (and the emulator's `InvocationContext`, which tests and
    benchmarks hand the handler) loads none of `CLIENT_SIDE`; `strato.Client`, `strato.Outbox`,
    `strato.Retry`, `strato.policies` and the emulator's `Emulator` still load on first use."""
    code = (
        "import json, sys\n"
        "import strato_lambda.app\n"
        "from strato_lambda.emulator import InvocationContext\n"
        f"print(json.dumps(sorted(m for m in {CLIENT_SIDE!r} if m in sys.modules)))\n"
        "import strato\n"
        "from strato_lambda.emulator import Emulator\n"
        "loaded = (strato.Client, strato.Outbox, strato.Retry, strato.policies.Retry, Emulator)\n"
        "print(json.dumps([getattr(x, '__module__', x.__name__) for x in loaded]))\n"
    )
    done = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, timeout=120, check=True
    )
    before, after = (json.loads(line) for line in done.stdout.strip().splitlines()[-2:])
    assert before == []
    assert after == [
        "strato._client",
        "strato._outbox",
        "strato.policies",
        "strato.policies",
        "strato_lambda.emulator.server",
    ]
