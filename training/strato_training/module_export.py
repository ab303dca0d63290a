"""Export any `nn.Module` with named inputs, dynamic axes and named outputs to ONNX.

The module is wrapped so that both exporters see one positional tensor per input (in the
order of the module's `forward` parameters) and a flat tuple of output tensors, whatever the
module returns (a tensor, a tuple or list, a dict, a Hugging Face `ModelOutput`). The dynamo
exporter runs first; when it fails the legacy one is tried, and when both fail the error says
what the dynamo exporter said first.
"""

from __future__ import annotations

import inspect
import re
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import torch
from strato import ConfigError, ExportError
from torch import nn

from strato_training.export import quiet_exporter, strip_exporter_metadata
from strato_training.models import import_user_module

if TYPE_CHECKING:
    import os
    from collections.abc import Mapping, Sequence

__all__ = [
    "DynamicAxes",
    "ModuleExport",
    "NamedInputs",
    "export_module",
    "flatten_outputs",
    "infer_dynamic",
    "load_module",
    "parse_dynamic",
    "strip_exporter_metadata",
]

DynamicAxes = dict[str, dict[int, str]]
"""input name → {axis: dim name}; inputs sharing a dim name share its size."""

_ANSI = re.compile(r"\x1b\[[0-9;]*m")
_DYNAMIC = re.compile(r"^(\d+):([A-Za-z_][A-Za-z0-9_]*)$")


def load_module(spec: str) -> nn.Module:
    """`package.module:attr` naming an `nn.Module` instance, class or zero-argument factory."""
    module_name, _, attr = spec.partition(":")
    if not module_name or not attr:
        raise ConfigError(f"model source {spec!r}: expected 'package.module:attr' or a .onnx file")
    target: Any = import_user_module(spec, module_name)
    for part in attr.split("."):
        try:
            target = getattr(target, part)
        except AttributeError:
            raise ConfigError(f"model {spec!r}: {module_name!r} has no {attr!r}") from None
    if not isinstance(target, nn.Module):
        if not callable(target):
            raise ConfigError(f"model {spec!r} is neither an nn.Module nor a callable")
        try:
            target = target()
        except TypeError as exc:
            raise ConfigError(
                f"model {spec!r} must be an nn.Module instance, or a class / factory callable "
                f"with no arguments: {exc}"
            ) from exc
        except Exception as exc:  # the user's own constructor or factory failed
            raise ConfigError(
                f"model {spec!r}: calling {attr} failed: {type(exc).__name__}: {exc}"
            ) from exc
    if not isinstance(target, nn.Module):
        raise ConfigError(f"model {spec!r} gave a {type(target).__name__}, not an nn.Module")
    return target.eval()


def forward_names(module: nn.Module, given: Sequence[str]) -> list[str]:
    """The module's inputs in `forward`'s order; `ConfigError` when the examples do not fit."""
    try:
        parameters = list(inspect.signature(module.forward).parameters.values())
    except (TypeError, ValueError):
        return list(given)
    if any(p.kind is inspect.Parameter.VAR_POSITIONAL for p in parameters):
        return list(given)
    named = [
        p
        for p in parameters
        if p.kind in (inspect.Parameter.POSITIONAL_OR_KEYWORD, inspect.Parameter.KEYWORD_ONLY)
    ]
    takes_kwargs = any(p.kind is inspect.Parameter.VAR_KEYWORD for p in parameters)
    known = {p.name for p in named}
    unknown = [name for name in given if name not in known]
    if unknown and not takes_kwargs:
        raise ConfigError(
            f"the examples hold {unknown}, which {type(module).__name__}.forward does not take; "
            f"it takes {[p.name for p in named]}"
        )
    required = [p.name for p in named if p.default is inspect.Parameter.empty]
    missing = [name for name in required if name not in given]
    if missing:
        raise ConfigError(
            f"{type(module).__name__}.forward needs inputs {required} but the examples hold "
            f"{list(given)} (missing {missing})"
        )
    return [p.name for p in named if p.name in given] + unknown


class NamedInputs(nn.Module):
    """Positional tensors in → the wrapped module called by keyword → a flat tuple out."""

    def __init__(self, inner: nn.Module, names: Sequence[str]) -> None:
        super().__init__()
        self.inner = inner
        self.names = tuple(names)

    def forward(self, *tensors: torch.Tensor) -> tuple[torch.Tensor, ...]:
        result = self.inner(**dict(zip(self.names, tensors, strict=True)))
        return tuple(tensor for _, tensor in flatten_outputs(result))


def flatten_outputs(result: Any) -> list[tuple[str, torch.Tensor]]:
    """(name, tensor) for each output: dict keys for a dict/ModelOutput, `output_<i>` else."""
    if isinstance(result, torch.Tensor):
        return [("output", result)]
    if isinstance(result, dict) or (hasattr(result, "to_tuple") and hasattr(result, "keys")):
        items = [(str(k), v) for k, v in result.items() if v is not None]
    elif isinstance(result, (tuple, list)):
        items = [(f"output_{i}", v) for i, v in enumerate(result)]
    else:
        raise ConfigError(
            f"forward returned a {type(result).__name__}; expected a tensor, a tuple or list "
            "of tensors, or a dict of them"
        )
    for name, value in items:
        if not isinstance(value, torch.Tensor):
            raise ConfigError(
                f"output {name!r} is a {type(value).__name__}; every output must be a tensor"
            )
    return items


def parse_dynamic(specs: Sequence[str]) -> DynamicAxes:
    """`["input_ids=0:batch,1:seq", "attention_mask=0:batch,1:seq"]` → DynamicAxes."""
    axes: DynamicAxes = {}
    for spec in specs:
        name, _, rest = spec.partition("=")
        parts = [p.strip() for p in rest.split(",") if p.strip()]
        if not name or not parts:
            raise ConfigError(f"--dynamic {spec!r}: expected NAME=AXIS:DIM[,AXIS:DIM...]")
        for part in parts:
            found = _DYNAMIC.match(part)
            if found is None:
                raise ConfigError(f"--dynamic {spec!r}: {part!r} is not AXIS:DIM (e.g. 1:seq)")
            axes.setdefault(name.strip(), {})[int(found.group(1))] = found.group(2)
    return axes


def infer_dynamic(examples: Mapping[str, np.ndarray[Any, Any]]) -> DynamicAxes:
    """Axis 0 of every input is the batch; axis 1 of 2-D integer inputs (token ids, masks)
    is a sequence axis shared by all of them. Anything else stays fixed."""
    axes: DynamicAxes = {}
    for name, array in examples.items():
        if array.ndim == 0:
            raise ConfigError(f"example {name!r} is a scalar; inputs need a batch axis")
        axes[name] = {0: "batch"}
        if array.ndim == 2 and array.dtype.kind in "iub":
            axes[name][1] = "seq"
    return axes


def check_dynamic(axes: DynamicAxes, examples: Mapping[str, np.ndarray[Any, Any]]) -> None:
    """Every named axis exists, and axes sharing a name have the same size in the examples."""
    sizes: dict[str, int] = {}
    for name, by_axis in axes.items():
        if name not in examples:
            raise ConfigError(f"--dynamic names {name!r}, which is not an input {list(examples)}")
        for axis, dim in by_axis.items():
            if axis >= examples[name].ndim:
                raise ConfigError(
                    f"--dynamic {name}={axis}:{dim}: {name!r} has only {examples[name].ndim} axes"
                )
            size = int(examples[name].shape[axis])
            if sizes.setdefault(dim, size) != size:
                raise ConfigError(
                    f"dynamic dim {dim!r} is {sizes[dim]} in one example and {size} in "
                    f"{name!r}: inputs sharing a dim must agree"
                )


@dataclass(frozen=True)
class ModuleExport:
    path: Path
    exporter: str
    input_names: tuple[str, ...]
    output_names: tuple[str, ...]
    dynamic: DynamicAxes
    fallback_reason: str | None = None


def _tensors(
    names: Sequence[str], examples: Mapping[str, np.ndarray[Any, Any]]
) -> tuple[torch.Tensor, ...]:
    return tuple(torch.from_numpy(np.ascontiguousarray(examples[n])) for n in names)


def _export(
    wrapped: NamedInputs,
    args: tuple[torch.Tensor, ...],
    path: Path,
    output_names: Sequence[str],
    dynamic: DynamicAxes,
    opset: int,
    *,
    dynamo: bool,
) -> None:
    names = list(wrapped.names)
    options: dict[str, Any]
    if dynamo:
        dims = {d: torch.export.Dim(d) for axes in dynamic.values() for d in axes.values()}
        shapes = tuple({a: dims[d] for a, d in dynamic.get(n, {}).items()} or None for n in names)
        options = {"dynamic_shapes": (shapes,), "external_data": False}
    else:
        options = {"dynamic_axes": {n: dict(dynamic[n]) for n in names if n in dynamic}}
    with quiet_exporter():
        torch.onnx.export(
            wrapped,
            args,
            str(path),
            input_names=names,
            output_names=list(output_names),
            opset_version=opset,
            dynamo=dynamo,
            verbose=False,
            **options,
        )


def export_module(
    module: nn.Module,
    examples: Mapping[str, np.ndarray[Any, Any]],
    path: str | os.PathLike[str],
    *,
    dynamic: DynamicAxes,
    output_names: Sequence[str] | None = None,
    opset: int = 18,
    exporter: str = "auto",
) -> ModuleExport:
    """Export `module` called with `examples` (one array per forward parameter) to `path`.

    Outputs are named `output_names`, else after the module's return (dict keys, `output`,
    `output_<i>`); the graph's outputs are renamed after export so that no name collides with a
    value the exporter made up.
    """
    import onnx

    from strato_training.graph import rename_outputs

    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    names = forward_names(module, list(examples))
    wrapped = NamedInputs(module.eval(), names).eval()
    args = _tensors(names, examples)
    found = flatten_outputs(_run(module, names, args))
    final = list(output_names) if output_names else [name for name, _ in found]
    if len(final) != len(found):
        raise ConfigError(
            f"--output-names gives {len(final)} names but the module returns {len(found)} "
            f"outputs ({[name for name, _ in found]})"
        )
    placeholders = [f"strato_output_{i}" for i in range(len(found))]
    used, fallback = _export_with_fallback(
        wrapped, args, path, placeholders, dynamic, opset, exporter
    )
    model = onnx.load(str(path))
    graph_inputs = [v.name for v in model.graph.input]
    if graph_inputs != names:
        raise ExportError(
            f"the exported graph takes inputs {graph_inputs}, not {names}: the outputs do not "
            "depend on every input (the exporter drops unused ones)"
        )
    rename_outputs(model, final)
    strip_exporter_metadata(model.graph)
    onnx.save_model(model, str(path))
    return ModuleExport(path, used, tuple(names), tuple(final), dynamic, fallback)


def _run(module: nn.Module, names: Sequence[str], args: tuple[torch.Tensor, ...]) -> Any:
    try:
        with torch.inference_mode():
            return module(**dict(zip(names, args, strict=True)))
    except (RuntimeError, TypeError, ValueError, IndexError) as exc:
        shapes = {n: f"{a.dtype} {list(a.shape)}" for n, a in zip(names, args, strict=True)}
        raise ConfigError(
            f"{type(module).__name__}.forward fails on the examples {shapes}: {exc}"
        ) from exc


def _export_with_fallback(
    wrapped: NamedInputs,
    args: tuple[torch.Tensor, ...],
    path: Path,
    placeholders: Sequence[str],
    dynamic: DynamicAxes,
    opset: int,
    exporter: str,
) -> tuple[str, str | None]:
    dynamo_error: str | None = None
    if exporter in ("auto", "dynamo"):
        try:
            _export(wrapped, args, path, placeholders, dynamic, opset, dynamo=True)
            return "dynamo", None
        except Exception as exc:  # the dynamo exporter fails in many ways (trace, onnxscript, ...)
            dynamo_error = _ANSI.sub("", f"{type(exc).__name__}: {exc}")
            if exporter == "dynamo":
                raise ExportError(f"the dynamo ONNX exporter failed: {dynamo_error}") from exc
    try:
        _export(wrapped, args, path, placeholders, dynamic, opset, dynamo=False)
    except Exception as exc:
        first = f"the dynamo ONNX exporter failed: {dynamo_error[:2000]}\n" if dynamo_error else ""
        raise ExportError(
            f"{first}the legacy ONNX exporter failed too: "
            + _ANSI.sub("", f"{type(exc).__name__}: {exc}")[:2000]
        ) from exc
    return "legacy", dynamo_error[:500] if dynamo_error else None
