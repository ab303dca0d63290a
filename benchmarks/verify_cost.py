"""What verifying a bundle costs at load: `Bundle.load` (every sha256) beside the engine's own
read-and-hash (`read_verified`) and ONNX Runtime's session, for one MatMul model per size.

Not a test. Without `keep_served` the served model is hashed twice on a cold load (once by
`Bundle.load`, once by the engine over the very bytes it loads); with it (the device store, the
Lambda) the bytes hashed at load go to the engine. Both, alternating, in the same run.

Usage: python benchmarks/verify_cost.py [--sizes 1,64,256] [--runs 3]
Writes benchmarks/results/verify_cost.{md,json}.
"""

from __future__ import annotations

import argparse
import json
import platform
import tempfile
import time
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
RESULTS = REPO / "benchmarks" / "results"


def _bundle(folder: Path, megabytes: int) -> Any:
    import numpy as np
    import onnx
    from onnx import TensorProto, helper, numpy_helper
    from strato import TensorSpec, make_bundle

    rows = max(1, megabytes * 1_000_000 // (4 * 256))
    weights = np.random.default_rng(0).random((rows, 256), dtype=np.float32)
    graph = helper.make_graph(
        [helper.make_node("MatMul", ["input", "W"], ["logits"])],
        "matmul",
        [helper.make_tensor_value_info("input", TensorProto.FLOAT, [None, rows])],
        [helper.make_tensor_value_info("logits", TensorProto.FLOAT, [None, 256])],
        [numpy_helper.from_array(weights, "W")],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    onnx.save_model(model, str(folder / "model.onnx"))
    return make_bundle(
        folder,
        name="m",
        version="1",
        inputs=[TensorSpec("input", "FP32", (-1, rows))],
        outputs=[TensorSpec("logits", "FP32", (-1, 256))],
        artifacts=[{"path": "model.onnx", "kind": "onnx", "precision": "fp32"}],
    )


def measure(megabytes: int, runs: int) -> dict[str, float]:
    """Best-of-`runs` milliseconds of each step of a cold load of a `megabytes` model."""
    from strato import Bundle
    from strato.engines import load_engine

    with tempfile.TemporaryDirectory() as scratch:
        root = _bundle(Path(scratch), megabytes).root
        best: dict[str, float] = {}
        for _ in range(runs):  # alternating: hashed twice, then once (keep_served)
            for suffix, keep in (("", False), ("_kept", True)):
                started = time.perf_counter()
                bundle = Bundle.load(root, keep_served=keep)
                loaded = time.perf_counter()
                load_engine(bundle, threads=1)  # read_verified (read + hash) + the session
                done = time.perf_counter()
                for key, value in (("bundle_load", loaded - started), ("engine", done - loaded)):
                    key += suffix
                    best[key] = min(best.get(key, float("inf")), value * 1000)
        for suffix in ("", "_kept"):
            best["total" + suffix] = best["bundle_load" + suffix] + best["engine" + suffix]
        best["bundle_load_share"] = best["bundle_load"] / best["total"]
        best["kept_vs_twice"] = best["total_kept"] / best["total"]
        return best


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", default="1,64,256", help="model sizes in MB")
    parser.add_argument("--runs", type=int, default=3)
    args = parser.parse_args()
    rows = {int(size): measure(int(size), args.runs) for size in args.sizes.split(",")}
    lines = [
        "# Verification cost at load",
        "",
        f"Best of {args.runs} runs per size; Python {platform.python_version()} on "
        f"{platform.machine()}. `Bundle.load` hashes every artifact; the engine then reads and "
        "hashes the served model again and builds the ONNX Runtime session.",
        "",
        "| model MB | Bundle.load ms | engine ms | Bundle.load share | hashed once "
        "(keep_served) total ms | once / twice |",
        "|---|---|---|---|---|---|",
    ]
    for size, row in rows.items():
        lines.append(
            f"| {size} | {row['bundle_load']:.1f} | {row['engine']:.1f} | "
            f"{row['bundle_load_share']:.0%} | {row['total_kept']:.1f} | "
            f"{row['kept_vs_twice']:.2f}x |"
        )
    RESULTS.mkdir(parents=True, exist_ok=True)
    (RESULTS / "verify_cost.md").write_text("\n".join(lines) + "\n")
    (RESULTS / "verify_cost.json").write_text(json.dumps(rows, indent=2) + "\n")
    print("\n".join(lines))


if __name__ == "__main__":
    main()
