"""ONNX graph work that needs no torch: read a model's signature, rename its outputs safely,
bake preprocessing into it as ONNX ops, save it into a bundle (with external data if it has any).

The signature is what the manifest records: names, OIP datatypes, shapes with -1 for dynamic
axes, plus the axis names (`dims`) the graph gives them (`batch`, `seq`, ...).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
from strato import ConfigError, ExportError, TensorSpec

if TYPE_CHECKING:
    import os
    from collections.abc import Mapping, Sequence

__all__ = [
    "EXTERNAL_DATA_LIMIT",
    "GraphSignature",
    "Preprocessing",
    "bake_preprocessing",
    "load_model",
    "read_signature",
    "rename_outputs",
    "save_model",
    "to_raw",
]

# ONNX protobufs cannot exceed 2 GiB; bigger models keep their weights in a side file.
EXTERNAL_DATA_LIMIT = 1 << 30

# onnx.TensorProto elem_type -> OIP datatype
_ONNX_TO_OIP = {
    1: "FP32",
    2: "UINT8",
    3: "INT8",
    4: "UINT16",
    5: "INT16",
    6: "INT32",
    7: "INT64",
    9: "BOOL",
    10: "FP16",
    11: "FP64",
    12: "UINT32",
    13: "UINT64",
}
_OIP_TO_ONNX = {v: k for k, v in _ONNX_TO_OIP.items()}


@dataclass(frozen=True)
class GraphSignature:
    """A graph's inputs and outputs, and the names of their dynamic axes."""

    inputs: tuple[TensorSpec, ...]
    outputs: tuple[TensorSpec, ...]
    dims: dict[str, dict[int, str]] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        """The signature as JSON-ready values."""
        return {
            "inputs": [s.to_dict() for s in self.inputs],
            "outputs": [s.to_dict() for s in self.outputs],
            "dims": {
                name: {str(k): v for k, v in axes.items()} for name, axes in self.dims.items()
            },
        }


def _spec(value: Any, where: str) -> tuple[TensorSpec, dict[int, str]]:
    tensor = value.type.tensor_type
    if not value.type.HasField("tensor_type"):
        raise ConfigError(f"{where} {value.name!r} is not a tensor (sequences/maps not served)")
    datatype = _ONNX_TO_OIP.get(tensor.elem_type)
    if datatype is None:
        raise ConfigError(
            f"{where} {value.name!r} has ONNX element type {tensor.elem_type}, which has no "
            f"Open Inference Protocol numeric datatype (strato serves {sorted(_OIP_TO_ONNX)})"
        )
    shape: list[int] = []
    names: dict[int, str] = {}
    for axis, dim in enumerate(tensor.shape.dim):
        if dim.HasField("dim_value") and dim.dim_value > 0:
            shape.append(int(dim.dim_value))
        else:
            shape.append(-1)
            if dim.HasField("dim_param") and dim.dim_param:
                names[axis] = dim.dim_param
    return TensorSpec(value.name, datatype, tuple(shape)), names


def read_signature(model: Any) -> GraphSignature:
    """The signature of an `onnx.ModelProto` (initializers listed as inputs are skipped)."""
    initializers = {i.name for i in model.graph.initializer}
    inputs, outputs, dims = [], [], {}
    for value in model.graph.input:
        if value.name in initializers:
            continue
        spec, names = _spec(value, "input")
        inputs.append(spec)
        if names:
            dims[spec.name] = names
    for value in model.graph.output:
        spec, names = _spec(value, "output")
        outputs.append(spec)
        if names:
            dims[spec.name] = names
    if not inputs or not outputs:
        raise ConfigError("the ONNX graph has no inputs or no outputs")
    return GraphSignature(tuple(inputs), tuple(outputs), dims)


def _rename_value(graph: Any, old: str, new: str) -> None:
    for node in graph.node:
        node.input[:] = [new if n == old else n for n in node.input]
        node.output[:] = [new if n == old else n for n in node.output]
    for collection in (graph.input, graph.output, graph.value_info):
        for value in collection:
            if value.name == old:
                value.name = new
    for initializer in graph.initializer:
        if initializer.name == old:
            initializer.name = new


def _all_names(graph: Any) -> set[str]:
    names = {i.name for i in graph.initializer} | {v.name for v in graph.input}
    for node in graph.node:
        names.update(node.input)
        names.update(node.output)
    return names


def rename_outputs(model: Any, names: Sequence[str]) -> None:
    """Give the graph's outputs `names`, first moving any internal value that already uses one
    of them out of the way (an exporter may name a node `embedding`; ORT then refuses the graph
    with "Duplicate definition")."""
    graph = model.graph
    if len(names) != len(graph.output):
        raise ExportError(f"the graph has {len(graph.output)} outputs, got names {list(names)}")
    if len(set(names)) != len(names):
        raise ConfigError(f"output names must be distinct, got {list(names)}")
    current = [o.name for o in graph.output]
    inputs = {v.name for v in graph.input}
    for wanted, old in zip(names, current, strict=True):
        if wanted == old:
            continue
        if wanted in inputs:
            raise ConfigError(f"output name {wanted!r} is also an input name")
        if wanted in _all_names(graph):
            taken = _all_names(graph)
            spare = next(
                f"{wanted}__{i}" for i in range(1, 1 << 20) if f"{wanted}__{i}" not in taken
            )
            _rename_value(graph, wanted, spare)
        _rename_value(graph, old, wanted)


# --- preprocessing ------------------------------------------------------------------------

_LAYOUTS = ("NHWC", "NCHW")
_RAW_DTYPES = ("uint8", "float32")
_KEYS = {"input", "layout", "dtype", "scale", "mean", "std"}


@dataclass(frozen=True)
class Preprocessing:
    """Raw pixels → the model's float NCHW input, as ONNX ops: cast, × scale, − mean, ÷ std,
    NHWC → NCHW. `input` names the model input it feeds (default: the only 4-D float input)."""

    layout: str = "NHWC"
    dtype: str = "uint8"
    scale: float = 1 / 255
    mean: tuple[float, ...] = ()
    std: tuple[float, ...] = ()
    input: str | None = None

    def __post_init__(self) -> None:
        if self.layout not in _LAYOUTS:
            raise ConfigError(
                f"preprocessing layout must be one of {_LAYOUTS}, got {self.layout!r}"
            )
        if self.dtype not in _RAW_DTYPES:
            raise ConfigError(
                f"preprocessing dtype must be one of {_RAW_DTYPES}, got {self.dtype!r}"
            )
        if not (math.isfinite(self.scale) and self.scale > 0):
            raise ConfigError(f"preprocessing scale must be a positive number, got {self.scale}")
        if self.std and any(s <= 0 for s in self.std):
            raise ConfigError(f"preprocessing std must be positive, got {list(self.std)}")
        if self.mean and self.std and len(self.mean) != len(self.std):
            raise ConfigError(
                f"preprocessing mean has {len(self.mean)} values but std has {len(self.std)}"
            )

    @classmethod
    def from_dict(cls, raw: Mapping[str, Any]) -> Preprocessing:
        """The recipe from its JSON form (`--preprocessing FILE.json`); unknown keys are refused."""
        unknown = set(raw) - _KEYS - {"baked", "model_input"}
        if unknown:
            raise ConfigError(
                f"unknown preprocessing key(s) {sorted(unknown)}; expected {sorted(_KEYS)}"
            )
        try:
            return cls(
                layout=str(raw.get("layout", "NHWC")).upper(),
                dtype=str(raw.get("dtype", "uint8")),
                scale=float(raw.get("scale", 1 / 255)),
                mean=tuple(float(v) for v in raw.get("mean", ())),
                std=tuple(float(v) for v in raw.get("std", ())),
                input=raw.get("input"),
            )
        except (TypeError, ValueError) as exc:
            raise ConfigError(f"malformed preprocessing: {exc}") from None

    def to_dict(self) -> dict[str, Any]:
        """The recipe as the manifest records it."""
        return {
            "input": self.input,
            "layout": self.layout,
            "dtype": self.dtype,
            "scale": self.scale,
            "mean": list(self.mean),
            "std": list(self.std),
        }

    def raw_shape(self, model_shape: tuple[int, ...]) -> tuple[int, ...]:
        """The wire shape for a model input of NCHW `model_shape`."""
        if self.layout == "NHWC":
            n, c, h, w = model_shape
            return (n, h, w, c)
        return model_shape

    def _stats(self, channels: int) -> tuple[np.ndarray[Any, Any], np.ndarray[Any, Any]]:
        mean = np.asarray(self.mean or (0.0,) * channels, np.float32)
        std = np.asarray(self.std or (1.0,) * channels, np.float32)
        if len(mean) not in (1, channels):
            raise ConfigError(
                f"preprocessing mean/std have {len(mean)} values but the input has {channels} "
                "channels"
            )
        return mean, std

    def apply(self, raw: np.ndarray[Any, Any]) -> np.ndarray[Any, Any]:
        """The same arithmetic in numpy (the parity gate's reference)."""
        if raw.ndim != 4:
            raise ConfigError(f"preprocessing takes 4-D images, got shape {list(raw.shape)}")
        x = raw.astype(np.float32) * np.float32(self.scale)
        if self.layout == "NHWC":
            x = x.transpose(0, 3, 1, 2)
        mean, std = self._stats(x.shape[1])
        return np.ascontiguousarray((x - mean[:, None, None]) / std[:, None, None], np.float32)


def to_raw(recipe: Preprocessing, x: np.ndarray[Any, Any]) -> np.ndarray[Any, Any]:
    """The raw pixels that `recipe` turns into the float NCHW `x` (rounded to the raw dtype):
    how a float test split is sent over the wire after preprocessing was baked in."""
    mean, std = recipe._stats(x.shape[1])
    pixels = (x * std[:, None, None] + mean[:, None, None]) / np.float32(recipe.scale)
    if recipe.layout == "NHWC":
        pixels = pixels.transpose(0, 2, 3, 1)
    if recipe.dtype == "uint8":
        return np.ascontiguousarray(np.clip(np.rint(pixels), 0, 255).astype(np.uint8))
    return np.ascontiguousarray(pixels, np.float32)


def _pick_input(signature: GraphSignature, wanted: str | None) -> TensorSpec:
    if wanted is not None:
        for spec in signature.inputs:
            if spec.name == wanted:
                return spec
        raise ConfigError(
            f"preprocessing input {wanted!r} is not an input of the model "
            f"{[s.name for s in signature.inputs]}"
        )
    images = [s for s in signature.inputs if s.datatype == "FP32" and len(s.shape) == 4]
    if len(images) != 1:
        raise ConfigError(
            "preprocessing needs `input` naming the image input: the model has "
            f"{len(images)} 4-D float inputs"
        )
    return images[0]


def bake_preprocessing(model: Any, recipe: Preprocessing) -> tuple[Any, TensorSpec]:
    """Put the recipe's ops ahead of the model input it feeds; the input keeps its name but
    now takes raw `recipe.dtype` pixels in `recipe.layout`. Returns the model and that input."""
    from onnx import helper, numpy_helper

    signature = read_signature(model)
    target = _pick_input(signature, recipe.input)
    if target.datatype != "FP32" or len(target.shape) != 4:
        raise ConfigError(
            f"preprocessing feeds a float NCHW input; {target.name!r} is {target.datatype} "
            f"{list(target.shape)}"
        )
    channels = target.shape[1]
    if channels == -1:
        raise ConfigError(f"input {target.name!r} has a dynamic channel axis; cannot normalise")
    graph = model.graph
    inner = f"{target.name}__preprocessed"
    _rename_value(graph, target.name, inner)
    raw_shape = recipe.raw_shape(target.shape)
    axes = signature.dims.get(target.name, {})
    nchw_to_raw = (0, 2, 3, 1) if recipe.layout == "NHWC" else (0, 1, 2, 3)
    raw_dims: list[int | str] = [
        axes.get(axis, raw_shape[i] if raw_shape[i] > 0 else f"{target.name}_{i}")
        for i, axis in enumerate(nchw_to_raw)
    ]
    mean, std = recipe._stats(channels)
    prefix = f"{target.name}__pre_"
    constants = [
        numpy_helper.from_array(np.asarray(recipe.scale, np.float32), prefix + "scale"),
        numpy_helper.from_array(mean.reshape(-1, 1, 1), prefix + "mean"),
        numpy_helper.from_array(std.reshape(-1, 1, 1), prefix + "std"),
    ]
    nodes = [
        helper.make_node("Cast", [target.name], [prefix + "float"], to=1),
        helper.make_node("Mul", [prefix + "float", prefix + "scale"], [prefix + "scaled"]),
    ]
    last = prefix + "scaled"
    if recipe.layout == "NHWC":
        nodes.append(helper.make_node("Transpose", [last], [prefix + "nchw"], perm=[0, 3, 1, 2]))
        last = prefix + "nchw"
    nodes += [
        helper.make_node("Sub", [last, prefix + "mean"], [prefix + "centred"]),
        helper.make_node("Div", [prefix + "centred", prefix + "std"], [inner]),
    ]
    wire_type = "UINT8" if recipe.dtype == "uint8" else "FP32"
    raw_input = helper.make_tensor_value_info(target.name, _OIP_TO_ONNX[wire_type], raw_dims)
    index = [v.name for v in graph.input].index(inner)
    graph.input.remove(graph.input[index])
    graph.input.insert(index, raw_input)
    old_nodes = list(graph.node)
    del graph.node[:]
    graph.node.extend(nodes + old_nodes)
    graph.initializer.extend(constants)
    return model, TensorSpec(target.name, wire_type, raw_shape)


def save_model(model: Any, directory: Path, filename: str = "model.onnx") -> list[dict[str, Any]]:
    """Check `model` and save it into `directory`; the artifact specs of what was written
    (the `.onnx`, plus `<filename>.data` when the weights are too big for one protobuf)."""
    import onnx

    directory.mkdir(parents=True, exist_ok=True)
    target = directory / filename
    large = sum(len(t.raw_data) for t in model.graph.initializer) > EXTERNAL_DATA_LIMIT
    specs: list[dict[str, Any]] = [{"path": filename, "kind": "onnx", "precision": "fp32"}]
    if large:
        data = f"{filename}.data"
        onnx.save_model(
            model, str(target), save_as_external_data=True, location=data, size_threshold=1024
        )
        if (directory / data).is_file():
            specs.append({"path": data, "kind": "file"})
    else:
        onnx.save_model(model, str(target))
    try:
        onnx.checker.check_model(str(target))
    except onnx.checker.ValidationError as exc:
        raise ExportError(f"{filename} is not valid ONNX: {exc}") from exc
    return specs


def load_model(path: str | os.PathLike[str]) -> Any:
    """An ONNX file (and its external data, found beside it) as an `onnx.ModelProto`."""
    import onnx

    path = Path(path)
    if not path.is_file():
        raise ConfigError(f"ONNX file {path} does not exist")
    try:
        return onnx.load(str(path), load_external_data=True)
    except Exception as exc:  # onnx raises DecodeError, FileNotFoundError for missing data, ...
        raise ConfigError(f"{path} is not a readable ONNX model: {exc}") from exc
