"""The commands in the docs run as written.

`RUN` is README.md and docs/edge, cloud, training, optimization, trust and serving.md;
docs/models.md runs in tests/training/test_models_doc.py; docs/client.md has Python sketches only,
each marked with why it does not run. Every ```bash/```console block of `RUN` (and every
```python block of `PYTHON_RUN`) is executed, in order, in one sandbox per document: a
folder registry `.strato/registry` and an S3 registry `s3://models/strato` (a moto server)
holding `digits-mlp:1` (alias prod) and `digits-mlp:2`, `STRATO_S3_ENDPOINT` pointing at moto.
Long-running commands (`strato edge serve`, `strato cloud local`) start in the background and
serve the rest of the document. Substitutions keep the sandbox on its own: the system paths
`/var/lib/strato` and `/etc/strato` move under the sandbox, and the ports 8000, 8001, 8002,
3001 and 9100 become free ones (a server started without `--port` gets the free one for its
default). The README, training.md and optimization.md train their own `digits-mlp`, so their
folder registry starts empty. Figures the docs quote are checked against what produced them:
training.md's quickstart table against the quickstart run here, optimization.md's tables against
benchmarks/results/quantization.md.

A block (or one line) whose comment reads `not run by the docs test: <reason>` is not run: it
needs what this machine has not (AWS, root and systemd as PID 1, a Jetson, Docker); the reason
is required, and the test lists what it left out. Every `strato` command in every document —
run or not — must parse (command, options, argument types).
"""

from __future__ import annotations

import itertools
import os
import re
import shlex
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import httpx
import pytest
import typer
import typer.main
from strato import Registry
from strato._cli import app
from support import build_tiny_bundle, free_port

pytestmark = pytest.mark.timeout(600)

REPO = Path(__file__).resolve().parents[1]
DOCS = [REPO / "README.md", *sorted((REPO / "docs").glob("*.md"))]
RUN = [
    REPO / "docs" / name
    for name in ("edge.md", "cloud.md", "training.md", "optimization.md", "trust.md", "serving.md")
] + [REPO / "README.md"]
# docs/models.md runs in tests/training/test_models_doc.py (it writes the files it names).
RUN_ELSEWHERE = {"models.md"}
# These train and publish their own digits-mlp: their sandbox's folder registry starts empty.
OWN_MODELS = {"README.md", "training.md", "optimization.md"}
# Whose ```python blocks run too (the README's are sketches of the API, with names left open).
PYTHON_RUN = {"edge.md", "cloud.md", "training.md", "optimization.md", "serving.md"}
PORTS = ("8000", "8001", "8002", "3001", "9100")
MARK = "not run by the docs test:"
BIN = Path(sys.executable).parent
BACKGROUND = ("strato edge serve", "strato cloud local")


@dataclass
class Command:
    text: str  # one logical line (continuations joined), comments kept
    line: int
    skipped: str | None = None  # the reason, when marked


@dataclass
class Block:
    doc: Path
    line: int
    commands: list[Command] = field(default_factory=list)
    skipped: str | None = None
    python: str | None = None  # the code of a ```python block (run as one script)


def _reason(comment: str) -> str | None:
    if MARK not in comment:
        return None
    reason = comment.split(MARK, 1)[1].strip()
    assert reason, f"a '{MARK}' marker without a reason: {comment!r}"
    return reason


def blocks(doc: Path) -> list[Block]:
    """The ```bash blocks of `doc`; `$ ` prefixed lines are the commands of transcript blocks."""
    found = []
    for match in re.finditer(
        r"^```(bash|sh|console|shell|python)\n(.*?)^```", doc.read_text(), re.S | re.M
    ):
        start = doc.read_text().count("\n", 0, match.start()) + 2
        block = Block(doc, start)
        if match.group(1) == "python":
            first = match.group(2).lstrip().splitlines()[0] if match.group(2).strip() else ""
            block.python = match.group(2)
            block.skipped = _reason(first) if first.startswith("#") else None
            found.append(block)
            continue
        lines = match.group(2).splitlines()
        transcript = any(line.startswith("$ ") for line in lines)
        pending, first = "", 0
        for offset, raw in enumerate(lines):
            if transcript:
                if not raw.startswith("$ "):
                    continue
                raw = raw[2:]
            stripped = raw.strip()
            if not pending and stripped.startswith("#"):
                if not block.commands and (reason := _reason(stripped)):
                    block.skipped = reason
                continue
            if not stripped:
                continue
            if not pending:
                first = start + offset
            pending += (" " if pending else "") + stripped.removesuffix("\\").strip()
            if stripped.endswith("\\"):
                continue
            block.commands.append(Command(pending, first, _reason(pending)))
            pending = ""
        found.append(block)
    return found


def _strato_commands() -> list[tuple[str, str]]:
    commands = []
    for doc in DOCS:
        for block in blocks(doc):
            for command in block.commands:
                words = shlex.split(command.text, comments=True)
                if words[-1:] == ["&"]:  # started in the background: the command is the rest
                    words = words[:-1]
                while words and re.fullmatch(r"[A-Z_][A-Z0-9_]*=.*", words[0]):
                    words = words[1:]  # `STRATO_X=value strato ...`: the command follows
                if words[:1] == ["strato"]:
                    commands.append((f"{doc.name}:{command.line}", shlex.join(words)))
    return commands


@pytest.mark.parametrize(("where", "example"), _strato_commands())
def test_every_documented_strato_command_parses(where, example, tmp_path, monkeypatch):
    command = typer.main.get_command(app)
    tokens = shlex.split(example)[1:]
    monkeypatch.chdir(tmp_path)  # input files must exist to parse: the run test makes real ones
    for flag, value in itertools.pairwise(tokens):
        if flag in ("--input", "-i"):
            (tmp_path / value).parent.mkdir(parents=True, exist_ok=True)
            (tmp_path / value).touch()
    context = None
    while hasattr(command, "list_commands") and tokens and not tokens[0].startswith("-"):
        context = command.make_context(command.name, [], resilient_parsing=True, parent=context)
        sub = command.get_command(context, tokens[0])
        assert sub is not None, f"{where}: {example}: no command {tokens[0]!r}"
        command, tokens = sub, tokens[1:]
    try:
        command.make_context(command.name, list(tokens), resilient_parsing=False)
    except typer.Exit as done:  # an eager option (--version, --help) that answers and stops
        assert done.exit_code == 0


# --- running ---------------------------------------------------------------------------------
@pytest.fixture
def sandbox(request, tmp_path: Path, s3_client) -> Iterator[dict[str, str]]:
    """The folder the commands run in and their environment."""
    doc = request.node.callspec.params.get("doc")
    registry = Registry(tmp_path / ".strato" / "registry")
    s3 = Registry("s3://models/strato", s3_client=s3_client)
    s3_client.create_bucket(Bucket="models")
    for version, seed in (("1", 0), ("2", 1)):
        bundle = build_tiny_bundle(
            tmp_path / "src" / version, name="digits-mlp", version=version, seed=seed
        )
        if doc is None or doc.name not in OWN_MODELS:
            registry.publish(bundle, alias="prod" if version == "1" else None)
        s3.publish(bundle, alias="prod" if version == "1" else None)
    endpoint = s3_client.meta.endpoint_url
    env = {
        **os.environ,
        "PATH": f"{BIN}:{os.environ.get('PATH', '/usr/bin:/bin')}",
        "STRATO_S3_ENDPOINT": endpoint,
        "AWS_ACCESS_KEY_ID": "x",
        "AWS_SECRET_ACCESS_KEY": "x",
        "AWS_DEFAULT_REGION": "us-east-1",
        "STRATO_EDGE_TOKEN": "",
        "SANDBOX": str(tmp_path),
    }
    env.pop("STRATO_REGISTRY", None)
    yield env


def _substitute(text: str, root: Path, ports: dict[str, str]) -> str:
    text = text.replace("/var/lib/strato", f"{root}/var/lib/strato")
    text = text.replace("/etc/strato", f"{root}/etc/strato")
    for port, free in ports.items():
        text = re.sub(rf"(?<=[:\s]){port}\b", free, text)
    return text


def _wait_ready(process: subprocess.Popen[str], url: str, what: str) -> None:
    deadline = time.monotonic() + 90
    while time.monotonic() < deadline:
        assert process.poll() is None, f"{what} exited: {process.communicate()[0]}"
        try:
            if httpx.get(f"{url}/v2/health/ready", timeout=2).status_code == 200:
                return
        except httpx.TransportError:
            pass
        time.sleep(0.2)
    raise AssertionError(f"{what} never became ready at {url}")


def _port_of(command: str) -> str:
    found = re.search(r"--port\s+(\d+)", command)
    assert found, command
    return found.group(1)


def _check_quoted_figures(doc: Path, printed: dict[str, str]) -> None:
    """The quickstart's deterministic figures that training.md quotes (seed 0, one CPU thread:
    bit-for-bit) are the ones the run just printed, not remembered ones."""
    if doc.name != "training.md":
        return
    text = doc.read_text()
    quickstart = next(
        out for command, out in printed.items() if command.startswith("strato quickstart")
    )
    for figure in ("test accuracy", "model size"):
        quoted = re.search(rf"│ {figure}\s+│ ([^│]*?)\s+│", text)
        assert quoted, figure
        assert quoted.group(1) in quickstart, f"training.md quotes {figure} {quoted.group(1)!r}"
    accuracy = float(re.search(r"│ test accuracy\s+│ (\S+)", text).group(1))  # type: ignore[union-attr]
    assert f"the accuracy is {accuracy * 100:.1f} %" in " ".join(text.split())


@pytest.mark.parametrize("doc", RUN, ids=[d.name for d in RUN])
def test_the_commands_of_a_doc_run_as_written(doc, sandbox):
    root = Path(sandbox["SANDBOX"])
    ports = {port: str(free_port()) for port in PORTS}
    background: list[subprocess.Popen[str]] = []
    left_out, ran, took = [], 0, []
    printed: dict[str, str] = {}  # a command's stdout, by its text in the doc
    try:
        for block in blocks(doc):
            if block.skipped:
                left_out.append(f"{doc.name}:{block.line}: {block.skipped}")
                continue
            if block.python is not None:
                if doc.name not in PYTHON_RUN:
                    continue
                code = _substitute(block.python, root, ports)
                began = time.monotonic()
                done = subprocess.run(
                    [sys.executable, "-c", code],
                    cwd=root, env=sandbox, capture_output=True, text=True, timeout=120,
                )  # fmt: skip
                assert done.returncode == 0, f"{doc.name}:{block.line}\n{done.stderr}"
                took.append((time.monotonic() - began, f"{doc.name}:{block.line} (python)"))
                ran += 1
                continue
            for command in block.commands:
                if command.skipped:
                    left_out.append(f"{doc.name}:{command.line}: {command.skipped}")
                    continue
                text = _substitute(command.text, root, ports)
                where = f"{doc.name}:{command.line}: {command.text}"
                if text.startswith(BACKGROUND):  # its output goes to a file: a pipe would fill
                    words = shlex.split(text, comments=True)
                    text = shlex.join(words[:-1] if words[-1:] == ["&"] else words)
                    if "--port" not in text:  # the default port becomes a free one too
                        default = "3001" if "cloud local" in text else "8000"
                        text = f"{text} --port {ports[default]}"
                    log = (root / f"background-{len(background)}.log").open("w")
                    process = subprocess.Popen(
                        ["bash", "-c", f"exec {text}"],
                        cwd=root, env=sandbox, text=True, stdout=log, stderr=subprocess.STDOUT,
                    )  # fmt: skip
                    background.append(process)
                    _wait_ready(process, f"http://127.0.0.1:{_port_of(text)}", where)
                else:
                    began = time.monotonic()
                    done = subprocess.run(
                        ["bash", "-o", "pipefail", "-c", text],
                        cwd=root, env=sandbox, capture_output=True, text=True, timeout=300,
                    )  # fmt: skip
                    assert done.returncode == 0, f"{where}\n{done.stdout}\n{done.stderr}"
                    assert "Traceback" not in done.stderr, where
                    took.append((time.monotonic() - began, where))
                    printed[command.text] = done.stdout
                ran += 1
    finally:
        for process in background:
            process.send_signal(signal.SIGTERM)
            process.wait(timeout=30)
        for index, process in enumerate(background):
            log = (root / f"background-{index}.log").read_text()
            assert process.returncode in (0, -signal.SIGTERM), log
            assert "Traceback" not in log, log
    assert ran > 0
    _check_quoted_figures(doc, printed)
    print(f"{doc.name}: {ran} commands ran; not run here:\n  " + "\n  ".join(left_out))
    slowest = sorted(took, reverse=True)[:5]
    print("slowest:\n  " + "\n  ".join(f"{seconds:6.1f} s  {what}" for seconds, what in slowest))


def test_the_documented_lambda_build_line_resolves_a_relative_python():
    """docs/cloud.md: `make -C lambda artifact ... PYTHON=.venv/bin/python`, run from the repo
    root, must use the repository's .venv (make -C moves into lambda/)."""
    done = subprocess.run(
        ["make", "-n", "-C", "lambda", "artifact", "ARCH=x86_64", "PYTHON_VERSION=3.11",
         "PYTHON=.venv/bin/python", f"ARTIFACTS_DIR={REPO}/build/never-written"],
        cwd=REPO, capture_output=True, text=True, timeout=60,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    pip_lines = [line for line in done.stdout.splitlines() if " -m pip " in line]
    assert pip_lines and all(line.startswith(f"{REPO}/.venv/bin/python ") for line in pip_lines)
    assert (
        "make -C lambda artifact ARCH=x86_64 PYTHON_VERSION=3.11 PYTHON=.venv/bin/python"
        in (REPO / "docs" / "cloud.md").read_text()
    )


@pytest.mark.parametrize(
    "name", ["edge_server", "edge_latency", "sdk_overhead", "cold_start", "soak"]
)
def test_every_benchmark_the_readme_names_takes_quick(name):
    readme = (REPO / "README.md").read_text()
    assert f"benchmarks/{name}.py" in readme and "(each takes `--quick`)" in readme
    done = subprocess.run(
        [sys.executable, str(REPO / "benchmarks" / f"{name}.py"), "--help"],
        capture_output=True, text=True, timeout=120, cwd=REPO,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    assert "--quick" in done.stdout


def test_the_quantization_figures_of_optimization_md_come_from_benchmarks_results():
    """docs/optimization.md's tables (per model and recipe, and the goals) are rows of the
    report `benchmarks/quantization.py` wrote, copied, not typed from memory."""
    doc = (REPO / "docs" / "optimization.md").read_text()
    results = (REPO / "benchmarks" / "results" / "quantization.md").read_text()
    section = doc.split("`python benchmarks/quantization.py --quick`", 1)[1]
    rows = [
        line
        for line in section.splitlines()
        if line.startswith("| ") and re.search(r"\d", line) and "---" not in line
    ]
    assert len(rows) >= 20
    missing = [row for row in rows if row not in results.splitlines()]
    assert not missing, missing


def test_every_python_block_runs_or_says_why_not():
    """A ```python block either runs (its doc is in PYTHON_RUN, or RUN_ELSEWHERE runs the doc)
    or opens with a `not run by the docs test: <reason>` comment."""
    unmarked = [
        f"{doc.name}:{block.line}"
        for doc in DOCS
        if doc.name not in PYTHON_RUN | RUN_ELSEWHERE
        for block in blocks(doc)
        if block.python is not None and not block.skipped
    ]
    assert not unmarked, unmarked
    shell_unrun = [
        f"{doc.name}:{block.line}"
        for doc in DOCS
        if doc not in RUN and doc.name not in RUN_ELSEWHERE
        for block in blocks(doc)
        if block.commands and not block.skipped
    ]
    assert not shell_unrun, shell_unrun
