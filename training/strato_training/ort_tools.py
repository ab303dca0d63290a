"""ONNX Runtime's quantization tools, run safely: a private working directory, the pre-pass
with its failures reported, named nodes, failures as `strato.QuantizationError`.

ORT's tools write temporary files into the working directory on failure
(``sym_shape_infer_temp.onnx`` and a model-sized ``<uuid>.data``), so every call runs inside
`private_cwd()`; paths handed to them must be absolute.
"""

from __future__ import annotations

import contextlib
import os
import re
import tempfile
import threading
from pathlib import Path
from typing import TYPE_CHECKING

from strato import QuantizationError

if TYPE_CHECKING:
    from collections.abc import Iterator

__all__ = ["failure", "preprocessed", "private_cwd"]


_CWD_LOCK = threading.Lock()


@contextlib.contextmanager
def private_cwd() -> Iterator[Path]:
    """Run ORT's tools inside a temporary working directory, so what they drop there on failure
    never lands in the caller's. Paths given to them must be absolute."""
    with _CWD_LOCK, tempfile.TemporaryDirectory(prefix="strato-ort-") as tmp:
        previous = os.getcwd()
        os.chdir(tmp)
        try:
            yield Path(tmp)
        finally:
            os.chdir(previous)


# Where ORT says which node or input failed: "running Reshape node. Name:'r'", "Node (r)",
# "node name: r", "invalid dimensions for input: x".
_NODE = re.compile(r"Name:\s*'([^']+)'|[Nn]ode \(([^)]+)\)|[Nn]ode name:?\s*'?([\w/.:\-]+)")
_OP = re.compile(r"running (\w+) node")
_INPUT = re.compile(r"for input: ([\w/.:\-]+)")


def failure(recipe: str, source: Path, exc: Exception) -> QuantizationError:
    """`exc` from an ORT tool as a `QuantizationError` naming the recipe and, when ORT's message
    says, the node (with its op type) or the input that failed."""
    text = str(exc)
    message = text.strip().splitlines()[0] if text.strip() else type(exc).__name__
    named, op, fed = _NODE.search(text), _OP.search(text), _INPUT.search(text)
    node = next((g for g in named.groups() if g), "") if named else ""
    where = ""
    if node:
        where = f" at {op.group(1) + ' ' if op else ''}node {node!r}"
    elif fed:
        node = fed.group(1)
        where = f" at input {node!r}"
    return QuantizationError(
        f"{recipe} quantization of {source.name} failed{where}: {message}", recipe=recipe, node=node
    )


def preprocessed(fp32_path: Path, workdir: Path) -> tuple[Path, tuple[str, ...]]:
    """ORT's pre-pass (shape inference + graph folding) before quantization, cached in
    `workdir`. A symbolic-shape-inference failure is retried without it and reported."""
    from onnxruntime.quantization.shape_inference import quant_pre_process

    out = (workdir / f".{fp32_path.stem}.pre.onnx").resolve()
    note_file = out.with_suffix(".notes")
    if out.exists():
        kept = note_file.read_text().splitlines() if note_file.exists() else []
        return out, tuple(kept)
    notes: list[str] = []
    with private_cwd():
        try:
            quant_pre_process(str(fp32_path.resolve()), str(out), skip_symbolic_shape=False)
        except Exception as exc:
            notes.append(
                f"symbolic shape inference failed ({str(exc).strip() or type(exc).__name__}); "
                "quantized with ONNX shape inference only"
            )
            try:
                quant_pre_process(str(fp32_path.resolve()), str(out), skip_symbolic_shape=True)
            except Exception as again:
                raise failure("pre-process", fp32_path, again) from again
    _name_nodes(out)
    note_file.write_text("\n".join(notes))
    return out, tuple(notes)


def _name_nodes(path: Path) -> None:
    """Give every unnamed node a stable name (`<op>_<index>`): layers are excluded by name."""
    import onnx

    model = onnx.load(str(path))
    taken = {node.name for node in model.graph.node if node.name}
    renamed = False
    for index, node in enumerate(model.graph.node):
        if not node.name:
            name = f"{node.op_type}_{index}"
            while name in taken:
                name += "_"
            node.name = name
            taken.add(name)
            renamed = True
    if renamed:
        onnx.save(model, str(path))
