"""Compile an ONNX artifact into a TensorRT 10 plan for the GPU this runs on, and add it to a bundle.

`compile_tensorrt` uses the TensorRT 10 Python API: `OnnxParser` (every parser error listed in the
exception), one optimization profile over the batch axis, `set_memory_pool_limit(WORKSPACE)`,
a timing cache read from and written back beside the engines, and `build_serialized_network`.
QDQ int8 models (and fp16-weight models) build as strongly typed networks: the precisions come
from the model itself, the explicit-quantization path TensorRT recommends since implicit INT8
calibration was deprecated. fp32 models built for fp16 use the FP16 builder flag where the
TensorRT version still has it (10.x; TensorRT 11 is strongly typed only).

A plan only runs on the TensorRT version and compute capability that built it, so its key is
sha256(onnx) + TensorRT version + compute capability + precision (`strato.engines`).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from strato import ConfigError, ExportError
from strato.engines import PLAN_DIR, engine_key, plan_path

from strato_training.publish import add_artifacts

if TYPE_CHECKING:
    from strato import Artifact, Bundle, ModelRef, Registry

__all__ = ["PRECISIONS", "BatchProfile", "CompiledPlan", "compile_bundle", "compile_tensorrt"]

PRECISIONS = ("fp32", "fp16", "int8")
DEFAULT_WORKSPACE = 1 << 30


@dataclass(frozen=True)
class BatchProfile:
    """The batch sizes the plan accepts (min..max) and tunes for (opt)."""

    min: int = 1
    opt: int = 32
    max: int = 256

    def __post_init__(self) -> None:
        if not 1 <= self.min <= self.opt <= self.max:
            raise ConfigError(f"batch profile needs 1 <= min <= opt <= max, got {self}")

    @classmethod
    def parse(cls, text: str) -> BatchProfile:
        """``1,32,256`` → BatchProfile(1, 32, 256)."""
        try:
            low, opt, high = (int(part) for part in text.split(","))
        except ValueError:
            raise ConfigError(f"--profile expects MIN,OPT,MAX batch sizes, got {text!r}") from None
        return cls(low, opt, high)

    def to_dict(self) -> dict[str, int]:
        return {"min": self.min, "opt": self.opt, "max": self.max}


@dataclass(frozen=True)
class CompiledPlan:
    path: Path
    key: str
    metadata: dict[str, Any]
    timing_cache: Path



def _sha256(path: Path) -> str:
    """The hex sha256 of a file, read in 1 MiB chunks (what a bundle's manifest records)."""
    import hashlib

    digest = hashlib.sha256()
    with open(path, "rb") as stream:
        while chunk := stream.read(1 << 20):
            digest.update(chunk)
    return digest.hexdigest()

def _import_tensorrt() -> Any:
    try:
        import tensorrt as trt
    except Exception as exc:  # ImportError, or OSError from a broken libnvinfer
        raise ExportError(
            "TensorRT is not available on this machine (import tensorrt failed: "
            f"{exc}). Compile on the target device: on a Jetson it comes with JetPack "
            "(python3-libnvinfer); on an x86 GPU host `pip install tensorrt`."
        ) from exc
    return trt


def _model_traits(onnx_path: Path) -> tuple[bool, bool]:
    """(has QDQ nodes, has fp16 initializers): both mean the model carries its own precisions."""
    import onnx

    model = onnx.load(str(onnx_path), load_external_data=False)
    qdq = any(n.op_type in ("QuantizeLinear", "DequantizeLinear") for n in model.graph.node)
    fp16 = any(t.data_type == onnx.TensorProto.FLOAT16 for t in model.graph.initializer)
    return qdq, fp16


def _parse(
    trt: Any, builder: Any, logger: Any, onnx_path: Path, strongly_typed: bool
) -> tuple[Any, Any]:
    # TensorRT 11 networks are strongly typed by default and may drop the flag.
    flag = getattr(trt.NetworkDefinitionCreationFlag, "STRONGLY_TYPED", None)
    flags = 1 << int(flag) if strongly_typed and flag is not None else 0
    network = builder.create_network(flags)
    parser = trt.OnnxParser(network, logger)
    if not parser.parse_from_file(str(onnx_path)):
        errors = [str(parser.get_error(i)) for i in range(parser.num_errors)]
        raise ExportError(
            f"TensorRT's ONNX parser rejected {onnx_path.name} ({len(errors)} errors):\n  "
            + "\n  ".join(errors or ["(no error recorded)"])
        )
    return network, parser


def _add_profile(builder: Any, config: Any, network: Any, profile: BatchProfile) -> None:
    opt_profile = builder.create_optimization_profile()
    for i in range(network.num_inputs):
        tensor = network.get_input(i)
        shape = list(tensor.shape)
        if any(d < 0 for d in shape[1:]):
            raise ExportError(
                f"input {tensor.name!r} has dynamic non-batch dimensions {shape}; only the batch "
                "axis may be dynamic for a TensorRT plan"
            )
        rest = shape[1:]
        opt_profile.set_shape(
            tensor.name, [profile.min, *rest], [profile.opt, *rest], [profile.max, *rest]
        )
    config.add_optimization_profile(opt_profile)


def _configure(trt: Any, config: Any, precision: str, strongly_typed: bool, workspace: int) -> None:
    config.set_memory_pool_limit(trt.MemoryPoolType.WORKSPACE, workspace)
    if strongly_typed or precision == "fp32":
        return
    if precision == "fp16":
        if not hasattr(trt.BuilderFlag, "FP16"):
            raise ExportError(
                f"TensorRT {trt.__version__} has no FP16 builder flag (strongly typed only): "
                "compile the fp16 ONNX artifact (strato quantize --mode fp16) instead"
            )
        config.set_flag(trt.BuilderFlag.FP16)
        return
    raise ExportError(
        "int8 plans are built from QDQ models (explicit quantization): quantize first with "
        "`strato quantize REF --mode int8-static` and compile its qdq artifact"
    )


def _timing_cache(config: Any, path: Path) -> Any:
    previous = path.read_bytes() if path.is_file() else b""
    cache = config.create_timing_cache(previous)
    config.set_timing_cache(cache, ignore_mismatch=False)
    return cache


def _build(
    trt: Any,
    onnx_path: Path,
    precision: str,
    profile: BatchProfile,
    workspace: int,
    strongly_typed: bool,
    cache_path: Path,
) -> bytes:
    """Parse, configure, build; the timing cache is read from and written back to `cache_path`."""
    logger = trt.Logger(trt.Logger.WARNING)
    builder = trt.Builder(logger)
    network, _parser = _parse(trt, builder, logger, onnx_path, strongly_typed)
    config = builder.create_builder_config()
    _configure(trt, config, precision, strongly_typed, workspace)
    _add_profile(builder, config, network, profile)
    _cache = _timing_cache(config, cache_path)
    serialized = builder.build_serialized_network(network, config)
    if serialized is None:
        raise ExportError(
            f"TensorRT could not build {onnx_path.name} at {precision} (see the log above)"
        )
    cache_path.parent.mkdir(parents=True, exist_ok=True)
    cache_path.write_bytes(bytes(config.get_timing_cache().serialize()))
    return bytes(serialized)


def compile_tensorrt(
    onnx_path: Path,
    precision: str = "fp16",
    profile: BatchProfile | None = None,
    workspace: int = DEFAULT_WORKSPACE,
    *,
    out_dir: Path,
    timing_cache: Path | None = None,
    compute_capability: str | None = None,
) -> CompiledPlan:
    """Build a plan for this GPU into `out_dir/engines/<key>.plan`; `ExportError` on failure."""
    if precision not in PRECISIONS:
        raise ConfigError(f"precision must be one of {PRECISIONS}, got {precision!r}")
    trt = _import_tensorrt()
    from strato.device import compute_capability as device_capability

    capability = compute_capability or device_capability()
    if not capability:
        raise ExportError("no CUDA GPU found: a TensorRT plan is built on the GPU that runs it")
    profile = profile or BatchProfile()
    qdq, fp16_weights = _model_traits(onnx_path)
    if precision == "int8" and not qdq:
        raise ExportError(
            f"{onnx_path.name} has no QuantizeLinear/DequantizeLinear nodes; int8 needs the QDQ artifact"
        )
    strongly_typed = qdq or fp16_weights
    version = str(trt.__version__)
    cache_path = timing_cache or out_dir / PLAN_DIR / f"timing-{version}-sm{capability}.cache"
    serialized = _build(trt, onnx_path, precision, profile, workspace, strongly_typed, cache_path)
    onnx_sha256 = _sha256(onnx_path)
    key = engine_key(onnx_sha256, version, capability, precision)
    plan = out_dir / plan_path(key)
    plan.parent.mkdir(parents=True, exist_ok=True)
    plan.write_bytes(serialized)
    metadata = {
        "key": key,
        "onnx_sha256": onnx_sha256,
        "onnx": onnx_path.name,
        "version": version,
        "compute_capability": capability,
        "precision": precision,
        "strongly_typed": strongly_typed,
        "profile": {"input_batch": profile.to_dict()},
        "workspace": workspace,
    }
    return CompiledPlan(plan, key, metadata, cache_path)


def source_artifact(
    bundle: Bundle, precision: str, *, tensorrt_has_fp16_flag: bool = True
) -> Artifact:
    """The ONNX a plan of `precision` is built from: int8 → the QDQ artifact; fp16 → fp32 with
    the FP16 flag (or the fp16 artifact where the flag is gone); fp32 → fp32."""
    onnx_models = bundle.models("onnx")
    Want = list[tuple[str | None, str | None]]
    fp32: Want = [("fp32", None), (None, None)]
    fp16: Want = fp32 if tensorrt_has_fp16_flag else [("fp16", None)]
    int8: Want = [("int8", "qdq")]
    wanted = {"int8": int8, "fp16": fp16, "fp32": fp32}[precision]
    for want_precision, want_format in wanted:
        for artifact in onnx_models:
            if artifact.precision == want_precision and want_format in (None, artifact.format):
                return artifact
    hint = " (run `strato quantize REF --mode int8-static` first)" if precision == "int8" else ""
    raise ExportError(f"{bundle.ref} has no ONNX artifact to build a {precision} plan from{hint}")


def compile_bundle(
    registry: Registry,
    ref: str | ModelRef,
    precision: str = "fp16",
    *,
    profile: BatchProfile | None = None,
    workspace: int = DEFAULT_WORKSPACE,
) -> tuple[ModelRef, CompiledPlan]:
    """Compile `ref` for this GPU and publish the next version with the plan under `engines/`."""
    import tempfile

    trt = _import_tensorrt()
    bundle = registry.open(ref)
    source = source_artifact(
        bundle, precision, tensorrt_has_fp16_flag=hasattr(trt.BuilderFlag, "FP16")
    )
    with tempfile.TemporaryDirectory(prefix="strato-trt-") as tmp:
        out_dir = Path(tmp)
        from strato.device import compute_capability

        capability = compute_capability()
        cache_rel = f"{PLAN_DIR}/timing-{trt.__version__}-sm{capability}.cache"
        cache = out_dir / cache_rel
        if bundle.path_of(cache_rel).is_file():  # a rebuild on the same device reuses the timings
            cache.parent.mkdir(parents=True, exist_ok=True)
            cache.write_bytes(bundle.path_of(cache_rel).read_bytes())
        plan = compile_tensorrt(
            bundle.path_of(source),
            precision,
            profile,
            workspace,
            out_dir=out_dir,
            timing_cache=cache,
            compute_capability=capability,
        )
        spec = {
            "path": plan_path(plan.key),
            "kind": "tensorrt",
            "precision": precision,
            "tensorrt": plan.metadata,
        }
        new_ref = add_artifacts(
            registry,
            bundle.ref,
            [(plan.path, spec), (cache, {"path": cache_rel, "kind": "file"})],
            note=f"compile tensorrt {precision} sm{capability}",
        )
    return new_ref, plan
