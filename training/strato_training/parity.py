"""The parity gate for any model: every output, at two batch sizes and two lengths of every
other dynamic axis, the artifact (ONNX Runtime) against a reference (torch, or the ONNX file
before preprocessing was baked in).

Probes are cut from the examples by cycling along each dynamic axis, so token ids stay valid
ids and masks stay masks; inputs sharing a dim name (`batch`, `seq`) get the same size.
"""

from __future__ import annotations

import itertools
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
from strato import ConfigError, ParityError

__all__ = [
    "Arrays",
    "OutputParity",
    "ParityResult",
    "Runner",
    "gate_outputs",
    "onnx_runner",
    "probe_inputs",
]

Arrays = dict[str, np.ndarray[Any, Any]]
Runner = Callable[[Mapping[str, np.ndarray[Any, Any]]], list[np.ndarray[Any, Any]]]
_MAX_PROBES = 8


@dataclass(frozen=True)
class OutputParity:
    name: str
    max_abs_diff: float
    mean_abs_diff: float

    def to_dict(self) -> dict[str, Any]:
        """The result as JSON-ready values (for the manifest's metrics and `--json`)."""
        return {"max_abs_diff": self.max_abs_diff, "mean_abs_diff": self.mean_abs_diff}


@dataclass(frozen=True)
class ParityResult:
    """Worst difference per output over every probe; `probes` lists each probe's shapes."""

    reference: str
    atol: float
    outputs: tuple[OutputParity, ...]
    probes: tuple[dict[str, list[int]], ...]

    @property
    def max_abs_diff(self) -> float:
        """The worst absolute difference over every output."""
        return max((o.max_abs_diff for o in self.outputs), default=0.0)

    def to_dict(self) -> dict[str, Any]:
        """The result as JSON-ready values (for the manifest's metrics and `--json`)."""
        return {
            "reference": self.reference,
            "atol": self.atol,
            "max_abs_diff": self.max_abs_diff,
            "outputs": {o.name: o.to_dict() for o in self.outputs},
            "probes": list(self.probes),
        }


def _sizes(size: int, dim: str) -> tuple[int, int]:
    if dim == "batch":
        return (1, 3)
    return (size, size // 2) if size >= 4 else (size, size + 2)


def probe_inputs(
    examples: Mapping[str, np.ndarray[Any, Any]], dynamic: Mapping[str, Mapping[int, str]]
) -> list[Arrays]:
    """Inputs at every combination of two sizes per dynamic dim (at most 8 probes)."""
    base: dict[str, int] = {}
    for name, axes in dynamic.items():
        for axis, dim in axes.items():
            base.setdefault(dim, int(examples[name].shape[axis]))
    dims = sorted(base, key=lambda d: (d != "batch", d))
    choices = [_sizes(base[d], d) for d in dims]
    probes = []
    for combo in itertools.islice(itertools.product(*choices), _MAX_PROBES):
        size_of = dict(zip(dims, combo, strict=True))
        probe = {}
        for name, array in examples.items():
            for axis, dim in dynamic.get(name, {}).items():
                array = np.take(array, np.arange(size_of[dim]) % array.shape[axis], axis=axis)
            probe[name] = np.ascontiguousarray(array)
        probes.append(probe)
    return probes or [dict(examples)]


def onnx_runner(path: str, output_names: Sequence[str] | None = None) -> Runner:
    """ONNX Runtime (CPU) on `path`, outputs in the graph's (or `output_names`) order."""
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.log_severity_level = 4
    session = ort.InferenceSession(path, options, providers=["CPUExecutionProvider"])
    names = list(output_names or [o.name for o in session.get_outputs()])

    def run(inputs: Mapping[str, np.ndarray[Any, Any]]) -> list[np.ndarray[Any, Any]]:
        try:
            return list(session.run(names, dict(inputs)))
        except Exception as exc:  # ORT raises its own Fail/InvalidArgument types
            shapes = {k: list(v.shape) for k, v in inputs.items()}
            raise ParityError(
                f"ONNX Runtime cannot run the artifact on inputs shaped {shapes}: {exc}",
                max_abs_diff=float("inf"),
            ) from exc

    return run


def _diff(expected: np.ndarray[Any, Any], actual: np.ndarray[Any, Any]) -> np.ndarray[Any, Any]:
    if expected.dtype.kind in "fc" or actual.dtype.kind in "fc":
        diff = np.abs(expected.astype(np.float64) - actual.astype(np.float64))
    else:  # integer / bool outputs must match exactly
        diff = np.not_equal(expected, actual).astype(np.float64)
    return np.asarray(diff, np.float64)


def gate_outputs(
    reference: Runner,
    candidate: Runner,
    probes: Sequence[Mapping[str, np.ndarray[Any, Any]]],
    output_names: Sequence[str],
    *,
    atol: float = 1e-4,
    reference_name: str = "torch",
    transform: Callable[[Mapping[str, np.ndarray[Any, Any]]], Mapping[str, np.ndarray[Any, Any]]]
    | None = None,
) -> ParityResult:
    """Run both on every probe; `ParityError` naming the output, probe and worst difference.

    `transform` maps a probe (what the artifact takes) to what the reference takes (the numpy
    preprocessing when it was baked into the artifact).
    """
    if atol < 0:
        raise ConfigError(f"atol must be >= 0, got {atol}")
    worst = dict.fromkeys(output_names, 0.0)
    sums = dict.fromkeys(output_names, 0.0)
    counts = dict.fromkeys(output_names, 0)
    shapes = []
    for probe in probes:
        shape = {k: list(v.shape) for k, v in probe.items()}
        shapes.append(shape)
        expected = reference(transform(probe) if transform else probe)
        actual = candidate(probe)
        if len(expected) != len(output_names) or len(actual) != len(output_names):
            raise ParityError(
                f"{reference_name} returns {len(expected)} outputs, the artifact {len(actual)}, "
                f"the signature names {len(output_names)}"
            )
        for name, want, got in zip(output_names, expected, actual, strict=True):
            if want.shape != got.shape:
                raise ParityError(
                    f"output {name!r} on inputs {shape}: ONNX Runtime returned shape "
                    f"{list(got.shape)}, {reference_name} {list(want.shape)}",
                    output=name,
                    max_abs_diff=float("inf"),
                )
            diff = _diff(want, got)
            peak = float(diff.max()) if diff.size else 0.0
            if not np.isfinite(peak) or peak > atol:
                raise ParityError(
                    f"output {name!r} on inputs {shape}: ONNX Runtime differs from "
                    f"{reference_name} by up to {peak:.3g} (atol {atol:g})",
                    output=name,
                    max_abs_diff=peak,
                )
            worst[name] = max(worst[name], peak)
            sums[name] += float(diff.sum())
            counts[name] += int(diff.size)
    outputs = tuple(
        OutputParity(n, worst[n], sums[n] / counts[n] if counts[n] else 0.0) for n in output_names
    )
    return ParityResult(reference_name, atol, outputs, tuple(shapes))
