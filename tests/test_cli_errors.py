"""Everyday mistakes at the `strato` command line: one clear line, the right exit code, no
traceback. Exit codes: 0 the work is done, 1 the work failed, 2 the command line is wrong.

Every case runs the real console script in a subprocess, as a user would.
"""

from __future__ import annotations

import os
import socket
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from support import free_port

pytestmark = pytest.mark.timeout(180)

STRATO = str(Path(sys.executable).with_name("strato"))


def _run(*args: str, cwd: Path | None = None) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "STRATO_EDGE_TOKEN": "", "COLUMNS": "80"}
    env.pop("STRATO_DEBUG", None)
    return subprocess.run(
        [STRATO, *args], capture_output=True, text=True, timeout=120, env=env, cwd=cwd
    )


def _clean_failure(done: subprocess.CompletedProcess[str], code: int, *words: str) -> None:
    output = done.stdout + done.stderr
    assert done.returncode == code, output
    assert "Traceback" not in output, output
    for word in words:
        assert word in output, output


@pytest.mark.parametrize(
    "command",
    [
        ["edge", "models"],
        ["edge", "predict", "tiny", "--random"],
        ["edge", "bench", "tiny", "-d", "1"],
    ],
    ids=["models", "predict", "bench"],
)
def test_client_commands_without_a_server(command):
    url = f"http://127.0.0.1:{free_port()}"
    done = _run(*command, "--url", url)
    _clean_failure(done, 1, f"cannot connect to the edge server at {url}", "strato edge serve")
    assert len(done.stderr.strip().splitlines()) == 1


def test_a_url_without_a_scheme_is_a_usage_error():
    _clean_failure(_run("edge", "models", "--url", "127.0.0.1:8000"), 2, "http://")


def test_a_missing_or_wrong_input_file(tmp_path):
    missing = tmp_path / "x.npy"
    _clean_failure(_run("edge", "predict", "tiny", "--input", str(missing)), 2, "x.npy")
    wrong = tmp_path / "notes.npy"
    wrong.write_text("not an array\n")
    _clean_failure(_run("edge", "predict", "tiny", "--input", str(wrong)), 2, "not a .npy file")
    _clean_failure(_run("predict", "tiny", "--input", str(missing)), 2, "does not exist")
    _clean_failure(_run("predict", "tiny", "--input", str(wrong)), 2, "cannot read")


def test_a_log_level_that_does_not_exist(tmp_path):
    done = _run("edge", "serve", "--store", str(tmp_path), "--log-level", "verbose")
    _clean_failure(done, 2, "'verbose' is not one of debug, info")


def test_a_registry_or_store_that_does_not_exist(tmp_path):
    _clean_failure(_run("models", "ls", "--registry", str(tmp_path / "nope")), 2, "does not exist")
    _clean_failure(_run("edge", "status", "--store", str(tmp_path / "nope")), 2, "does not exist")
    done = _run("edge", "pull", "tiny@prod", "--registry", str(tmp_path / "nope"))
    _clean_failure(done, 2, "does not exist")


def test_cloud_local_on_a_port_in_use(tiny_registry):
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        port = busy.getsockname()[1]
        done = _run(
            "cloud", "local", "tiny@prod", "--registry", tiny_registry.url, "--port", str(port)
        )
    _clean_failure(done, 1, f"127.0.0.1:{port}", "in use", "--port")


def test_cloud_local_needs_a_model():
    _clean_failure(_run("cloud", "local"), 2, "NAME@ALIAS")


def test_a_malformed_batching_file(tmp_path):
    bad = tmp_path / "batching.json"
    bad.write_text("{")
    done = _run("edge", "serve", "--store", str(tmp_path), "--batching", str(bad))
    _clean_failure(done, 2, "malformed")


def test_tables_are_not_cut_at_80_columns_when_piped(tmp_path, registry):
    from support import build_tiny_bundle

    long_name = "a-model-with-a-rather-long-name-for-a-table-column-" + "x" * 40
    registry.publish(build_tiny_bundle(tmp_path / "b", name=long_name, version="1"), alias="prod")
    done = _run("models", "ls", "--registry", registry.url)
    assert done.returncode == 0, done.stderr
    assert long_name in done.stdout
    assert np.max([len(line) for line in done.stdout.splitlines()]) > 80


def test_edge_serve_on_a_port_in_use(tiny_registry):
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        port = busy.getsockname()[1]
        done = _run("edge", "serve", "--store", tiny_registry.url, "--port", str(port))
    _clean_failure(done, 1, "address already in use", f"did not start on 127.0.0.1:{port}")
