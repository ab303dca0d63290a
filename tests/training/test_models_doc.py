"""docs/models.md runs as written: its Python blocks are written to the files they name, its
shell blocks run in order in an empty folder (servers it starts in the background are stopped
at the end). Only the fixed ports are swapped for free ones, so parallel runs do not collide."""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
from pathlib import Path

import pytest
import support

DOC = Path(__file__).resolve().parents[2] / "docs" / "models.md"
BLOCK = re.compile(r"```(\w+)\n(.*?)```", re.S)

pytestmark = pytest.mark.timeout(600)


def blocks() -> list[tuple[str, str]]:
    return [(kind, body) for kind, body in BLOCK.findall(DOC.read_text())]


def test_every_python_block_names_its_file_and_every_shell_line_is_a_command() -> None:
    found = blocks()
    assert any(kind == "bash" for kind, _ in found)
    for kind, body in found:
        if kind == "python":
            assert body.startswith("# file: "), body[:60]
        if kind == "bash":
            for line in body.splitlines():
                assert line.split()[0] in {"python", "strato", "until"}, line


def test_the_models_page_runs_top_to_bottom(tmp_path: Path) -> None:
    ports = {"8000": str(support.free_port()), "3001": str(support.free_port())}
    script = ["set -euo pipefail"]
    for kind, text in blocks():
        body = re.sub(
            r"127\.0\.0\.1:(8000|3001)\b", lambda m: f"127.0.0.1:{ports[m.group(1)]}", text
        )
        body = re.sub(r"--port (8000|3001)\b", lambda m: f"--port {ports[m.group(1)]}", body)
        if kind == "python":
            name = body.splitlines()[0].removeprefix("# file: ").strip()
            (tmp_path / name).write_text(body)
        elif kind == "bash":
            script.extend(body.splitlines())
    bin_dir = str(Path(sys.executable).parent)
    env = {
        **os.environ,
        "PATH": f"{bin_dir}:{os.environ['PATH']}",
        "PYTHONPATH": os.environ.get("PYTHONPATH", ""),  # not tmp_path: strato finds cwd itself
        "STRATO_ORT_THREADS": "1",
    }
    env.pop("STRATO_REGISTRY", None)
    log = tmp_path / "doc.log"
    # A file, not a pipe: the background servers keep their end open after the script ends.
    with log.open("w") as out:
        shell = subprocess.Popen(
            ["bash", "-c", "\n".join(script)],
            cwd=tmp_path,
            env=env,
            stdout=out,
            stderr=subprocess.STDOUT,
            start_new_session=True,  # its background servers share its process group
        )
        try:
            shell.wait(timeout=400)
        finally:
            os.killpg(shell.pid, signal.SIGTERM)
    output = log.read_text()
    assert shell.returncode == 0, output[-4000:]
    assert "imported encoder:1 (embedding)" in output
    assert output.count("edge lambda (") == 2  # call_encoder.py: two lengths, both tiers
    assert "image UINT8 [-1, 224, 224, 3]" in output or '"UINT8"' in output
