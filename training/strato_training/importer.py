"""`strato import`: bring an ONNX file or any `nn.Module` in as a verified bundle.

    from strato_training import import_onnx, import_module
    bundle = import_onnx("encoder.onnx", name="encoder", task="embedding")
    bundle = import_module(model, {"input_ids": ids, "attention_mask": mask},
                           name="encoder", task="embedding")

Both read (or export) the graph, bake preprocessing into it when asked, run the parity gate on
every output at two batch sizes and two lengths of every other dynamic axis, and publish the
bundle: the manifest records the wire signature (`inputs`/`outputs`), the model's own signature
before preprocessing (`model_signature`), the dynamic dims' names (`dims`), the task, labels,
preprocessing and the parity per output.
"""

from __future__ import annotations

import tempfile
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
from strato import ConfigError, Registry, make_bundle

from strato_training.graph import (
    GraphSignature,
    bake_preprocessing,
    load_model,
    read_signature,
    save_model,
)
from strato_training.import_config import (
    TASKS,
    ImportConfig,
    check_task,
    load_examples,
    read_labels,
    read_preprocessing,
)
from strato_training.parity import ParityResult, gate_outputs, onnx_runner, probe_inputs

if TYPE_CHECKING:
    import os

    from strato import Bundle
    from torch import nn

__all__ = [
    "TASKS",
    "ImportConfig",
    "check_task",
    "import_module",
    "import_onnx",
    "load_examples",
    "read_labels",
    "read_preprocessing",
]

ONNX_MODEL = "model.onnx"
OnStep = Callable[[str], None]


def _say(on_step: OnStep | None, text: str) -> None:
    if on_step is not None:
        on_step(text)


def _random_probe(signature: GraphSignature, batch: int) -> dict[str, np.ndarray[Any, Any]]:
    rng = np.random.default_rng(batch)
    probe = {}
    for spec in signature.inputs:
        shape = tuple(
            batch if i == 0 and d == -1 else (16 if d == -1 else d)
            for i, d in enumerate(spec.shape)
        )
        if spec.dtype.kind == "f":
            probe[spec.name] = rng.standard_normal(shape).astype(spec.dtype)
        elif spec.dtype.kind == "b":
            probe[spec.name] = np.ones(shape, np.bool_)
        elif spec.datatype == "UINT8":
            probe[spec.name] = rng.integers(0, 256, shape).astype(np.uint8)
        else:
            probe[spec.name] = rng.integers(0, 2, shape).astype(spec.dtype)
    return probe


def _examples_for_graph(
    signature: GraphSignature, examples: Mapping[str, np.ndarray[Any, Any]] | None
) -> tuple[dict[str, np.ndarray[Any, Any]], dict[str, dict[int, str]]]:
    """The examples (or random inputs at batch 2) and the dynamic axes to probe."""
    dynamic: dict[str, dict[int, str]] = {}
    for spec in signature.inputs:
        axes = {
            i: signature.dims.get(spec.name, {}).get(i, f"{spec.name}_{i}")
            for i, d in enumerate(spec.shape)
            if d == -1
        }
        if 0 in axes:
            axes[0] = "batch"
        if axes:
            dynamic[spec.name] = axes
    if examples is None:
        return _random_probe(signature, 2), dynamic
    names = {s.name for s in signature.inputs}
    if set(examples) != names:
        raise ConfigError(f"the examples hold {sorted(examples)}; the model takes {sorted(names)}")
    for spec in signature.inputs:
        if examples[spec.name].dtype != spec.dtype:
            raise ConfigError(
                f"example {spec.name!r} is {examples[spec.name].dtype}; the model takes "
                f"{spec.datatype}"
            )
    return dict(examples), dynamic


def _publish(
    config: ImportConfig,
    model: Any,
    wire: GraphSignature,
    native: GraphSignature,
    parity: ParityResult,
    registry: Registry,
    source: dict[str, Any],
    staging: Path,
) -> Bundle:
    version = config.version or registry.next_version(config.name)
    root = staging / version
    specs = save_model(model, root, ONNX_MODEL)
    opset = next(int(o.version) for o in model.opset_import if o.domain in ("", "ai.onnx"))
    preprocessing = {}
    if config.preprocessing is not None:
        preprocessing = config.preprocessing.to_dict() | {"baked": True}
    bundle = make_bundle(
        root,
        name=config.name,
        version=version,
        inputs=wire.inputs,
        outputs=wire.outputs,
        artifacts=specs,
        framework=_framework(source.get("exporter")),
        opset=opset,
        task=config.task,
        labels=config.labels,
        preprocessing=preprocessing,
        metrics={ONNX_MODEL: {"parity": parity.to_dict()}},
        extra={
            "source": source,
            "dims": wire.to_dict()["dims"],
            "model_signature": native.to_dict(),
        },
    )
    ref = registry.publish(bundle, alias=config.alias)
    return registry.open(ref)


def _framework(exporter: str | None) -> dict[str, str]:
    from importlib.metadata import PackageNotFoundError, version

    found = {"exporter": exporter} if exporter else {}
    for package in ("torch", "onnx", "onnxruntime", "onnxscript", "transformers", "strato"):
        try:
            found[package] = version(package)
        except PackageNotFoundError:
            continue
    return found


def _bake(
    model: Any, config: ImportConfig
) -> tuple[Any, Callable[[Mapping[str, Any]], dict[str, Any]] | None]:
    """Bake `config.preprocessing` in; the numpy transform raw → model input for the gate."""
    recipe = config.preprocessing
    if recipe is None:
        return model, None
    model, wire_input = bake_preprocessing(model, recipe)
    name = wire_input.name

    def transform(inputs: Mapping[str, Any]) -> dict[str, Any]:
        return {**inputs, name: recipe.apply(inputs[name])}

    return model, transform


def import_onnx(
    source: str | os.PathLike[str],
    config: ImportConfig,
    *,
    examples: Mapping[str, np.ndarray[Any, Any]] | None = None,
    registry: Registry | None = None,
    on_step: OnStep | None = None,
) -> Bundle:
    """Publish an ONNX file (plus its external data) as a bundle; nothing is exported.

    The gate runs the graph at two batch sizes (and two lengths of other dynamic axes) on
    `examples` (raw inputs, as the wire will carry them) or on random inputs; with
    preprocessing it compares the baked graph to the original one fed the numpy recipe.
    """
    registry = registry or Registry()
    path = Path(source)
    _say(on_step, f"read {path.name}")
    model = load_model(path)
    native = read_signature(model)
    check_task(config, native.outputs)
    with tempfile.TemporaryDirectory(prefix="strato-import-") as tmp:
        original = Path(tmp) / "original.onnx"
        save_model(load_model(path), original.parent, original.name)
        model, transform = _bake(model, config)
        wire = read_signature(model)
        candidate_file = Path(tmp) / "candidate"
        save_model(model, candidate_file, ONNX_MODEL)
        base, dynamic = _examples_for_graph(wire, examples)
        _say(on_step, "parity gate on every output")
        parity = gate_outputs(
            onnx_runner(str(original), [o.name for o in native.outputs]),
            onnx_runner(str(candidate_file / ONNX_MODEL), [o.name for o in wire.outputs]),
            probe_inputs(base, dynamic),
            [o.name for o in wire.outputs],
            atol=config.atol,
            reference_name="the ONNX file" + (" with numpy preprocessing" if transform else ""),
            transform=transform,
        )
        _say(on_step, "publish")
        info = {"kind": "onnx", "file": path.name}
        return _publish(config, model, wire, native, parity, registry, info, Path(tmp) / "bundle")


def import_module(
    module: nn.Module | str,
    examples: Mapping[str, np.ndarray[Any, Any]],
    config: ImportConfig,
    *,
    registry: Registry | None = None,
    on_step: OnStep | None = None,
) -> Bundle:
    """Export an `nn.Module` (or a `module:attr` spec) called with `examples` (one array per
    forward parameter, raw as the wire carries them), gate every output against torch, publish.
    """
    from strato_training.module_export import load_module

    registry = registry or Registry()
    spec = (
        module
        if isinstance(module, str)
        else f"{type(module).__module__}:{type(module).__qualname__}"
    )
    if isinstance(module, str):
        _say(on_step, f"load {module}")
        module = load_module(module)
    with tempfile.TemporaryDirectory(prefix="strato-import-") as tmp:
        exported, native, reference, dynamic = _export(module, examples, config, Path(tmp), on_step)
        model = load_model(exported.path)
        check_task(config, native.outputs)
        model, transform = _bake(model, config)
        wire = read_signature(model)
        candidate = Path(tmp) / "candidate"
        save_model(model, candidate, ONNX_MODEL)
        _say(on_step, "parity gate on every output")
        parity = gate_outputs(
            reference,
            onnx_runner(str(candidate / ONNX_MODEL), list(exported.output_names)),
            probe_inputs(examples, dynamic),
            list(exported.output_names),
            atol=config.atol,
            transform=transform,
        )
        _say(on_step, "publish")
        info = {"kind": "torch", "module": spec, "exporter": exported.exporter}
        if exported.fallback_reason:
            info["dynamo_error"] = exported.fallback_reason
        return _publish(config, model, wire, native, parity, registry, info, Path(tmp) / "bundle")


def _export(
    module: nn.Module,
    examples: Mapping[str, np.ndarray[Any, Any]],
    config: ImportConfig,
    workdir: Path,
    on_step: OnStep | None,
) -> tuple[Any, GraphSignature, Any, dict[str, dict[int, str]]]:
    import torch

    from strato_training.module_export import (
        check_dynamic,
        export_module,
        flatten_outputs,
        forward_names,
        infer_dynamic,
    )

    if not examples:
        raise ConfigError("import_module needs examples: one named array per forward input")
    dynamic = {k: dict(v) for k, v in (config.dynamic or infer_dynamic(examples)).items()}
    check_dynamic(dynamic, examples)
    recipe = config.preprocessing
    model_examples = dict(examples)
    if recipe is not None:
        target = recipe.input or next(iter(examples))
        if target not in examples:
            raise ConfigError(
                f"preprocessing input {target!r} is not in the examples {list(examples)}"
            )
        if examples[target].dtype != np.dtype(recipe.dtype):
            raise ConfigError(
                f"example {target!r} is {examples[target].dtype}; with preprocessing it holds "
                f"raw {recipe.dtype} {recipe.layout} pixels, as the wire will carry them"
            )
        if set(dynamic.get(target, {})) - {0}:
            raise ConfigError(
                f"a preprocessed image input ({target!r}) may be dynamic on axis 0 only"
            )
        model_examples[target] = recipe.apply(examples[target])
    names = forward_names(module, list(examples))
    # torch.export specialises axes of size 1: give every dynamic axis at least 2 for export.
    export_examples = dict(model_examples)
    for name, axes in dynamic.items():
        for axis in axes:
            array = export_examples[name]
            if array.shape[axis] == 1:
                export_examples[name] = np.take(array, np.arange(2) % 1, axis=axis)
    _say(on_step, "export to ONNX (dynamo exporter)")
    exported = export_module(
        module,
        export_examples,
        workdir / "export" / ONNX_MODEL,
        dynamic=dynamic,
        output_names=config.output_names or None,
        opset=config.opset,
        exporter=config.exporter,
    )
    native = read_signature(load_model(exported.path))

    def reference(inputs: Mapping[str, np.ndarray[Any, Any]]) -> list[np.ndarray[Any, Any]]:
        tensors = {n: torch.from_numpy(np.ascontiguousarray(inputs[n])) for n in names}
        with torch.inference_mode():
            result = module(**tensors)
        return [t.detach().cpu().numpy() for _, t in flatten_outputs(result)]

    return exported, native, reference, dynamic
