"""Hypothesis settings and strategies shared by the fuzz targets (codec, edge route, Lambda).

Example counts: `HYPOTHESIS_PROFILE=ci` (the default, 2,000 per target, derandomized so CI is
reproducible) or `HYPOTHESIS_PROFILE=fuzz` (20,000, random: `make fuzz`);
`STRATO_FUZZ_EXAMPLES=N` overrides both. Settings are applied per test, never loaded as the
global profile, so other folders' hypothesis tests keep their own budgets.
"""

from __future__ import annotations

import math
import os
from typing import Any

import numpy as np
from hypothesis import HealthCheck, settings
from hypothesis import strategies as st
from strato._codec import encode_request

PROFILE = os.environ.get("HYPOTHESIS_PROFILE", "ci")
EXAMPLES = int(os.environ.get("STRATO_FUZZ_EXAMPLES") or (20_000 if PROFILE == "fuzz" else 2_000))

FUZZ = settings(
    max_examples=EXAMPLES,
    deadline=None,
    derandomize=PROFILE != "fuzz",
    database=None,
    print_blob=True,
    suppress_health_check=list(HealthCheck),
)

# pytest-timeout per fuzz test: generous (a hang still fails), scaled with the example count.
TIMEOUT = max(300, EXAMPLES // 20)

# Secondary properties (round trips, header parsing) get a quarter of the budget.
FUZZ_LIGHT = settings(FUZZ, max_examples=max(EXAMPLES // 4, 100))

DATATYPES = ["BOOL", "UINT8", "UINT16", "UINT32", "UINT64", "INT8", "INT16", "INT32", "INT64"]
DATATYPES += ["FP16", "FP32", "FP64"]
BAD_DATATYPES = ["BYTES", "FP8", "fp32", "", "FLOAT", "INT128"]

specials = st.sampled_from([math.nan, math.inf, -math.inf, 0.0, -0.0, 1e308, -1e308, 5e-324])
scalars = st.one_of(
    st.floats(allow_nan=True, allow_infinity=True),
    st.integers(min_value=-(2**70), max_value=2**70),
    st.booleans(),
    st.none(),
    st.text(max_size=8),
    specials,
)
json_values = st.recursive(
    st.one_of(st.none(), st.booleans(), st.integers(), st.floats(allow_nan=False), st.text()),
    lambda children: (
        st.lists(children, max_size=6) | st.dictionaries(st.text(max_size=12), children, max_size=6)
    ),
    max_leaves=30,
)

shapes = st.one_of(
    st.lists(st.integers(min_value=0, max_value=6), max_size=4),
    st.lists(st.integers(min_value=-3, max_value=2**40), max_size=5),  # huge and negative
    st.just([1, 1, 28, 28]),
    st.just([2**31, 2**31]),
    # no element, but an axis numpy cannot hold: [0, 2**63] was a 500 (issue 10, item 7)
    st.tuples(st.just(0), st.integers(min_value=2**26, max_value=2**70)).map(list),
    st.lists(st.just(1), min_size=30, max_size=80),  # more axes than numpy takes
    json_values,
)


@st.composite
def tensor_entries(draw: st.DrawFn) -> dict[str, Any]:
    """One OIP tensor entry, often wrong: datatype, shape, data and binary size each may lie."""
    entry: dict[str, Any] = {}
    if draw(st.integers(0, 9)):
        entry["name"] = draw(st.sampled_from(["input", "x", ""]) | st.text(max_size=6))
    if draw(st.integers(0, 9)):
        entry["datatype"] = draw(st.sampled_from(DATATYPES + BAD_DATATYPES) | json_values)
    if draw(st.integers(0, 9)):
        entry["shape"] = draw(shapes)
    if draw(st.booleans()):
        entry["data"] = draw(
            st.lists(scalars, max_size=20)
            | st.lists(st.lists(scalars, max_size=4), max_size=4)
            | json_values
        )
    if draw(st.integers(0, 3)) == 0:
        size = draw(st.integers(-4, 4096) | json_values)
        entry["parameters"] = {"binary_data_size": size}
    elif draw(st.integers(0, 9)) == 0:
        entry["parameters"] = draw(json_values)
    return entry


@st.composite
def oip_headers(draw: st.DrawFn) -> dict[str, Any]:
    header: dict[str, Any] = {}
    if draw(st.integers(0, 9)):
        header["inputs"] = draw(st.lists(tensor_entries(), max_size=3) | json_values)
    if draw(st.booleans()):
        header["id"] = draw(json_values)
    if draw(st.integers(0, 3)) == 0:
        header["parameters"] = draw(
            st.fixed_dictionaries({"binary_data_output": json_values}) | json_values
        )
    if draw(st.integers(0, 3)) == 0:
        header["outputs"] = draw(
            st.lists(st.fixed_dictionaries({"name": json_values}), max_size=3) | json_values
        )
    return header


arrays = st.builds(
    lambda dtype, shape, seed: _random_array(dtype, shape, seed),
    st.sampled_from(DATATYPES),
    st.lists(st.integers(1, 4), min_size=1, max_size=4),
    st.integers(0, 2**32 - 1),
)


def _random_array(datatype: str, shape: list[int], seed: int) -> np.ndarray[Any, Any]:
    from strato._tensors import dtype_of

    rng = np.random.default_rng(seed)
    raw = rng.integers(0, 256, size=math.prod(shape) * dtype_of(datatype).itemsize, dtype=np.uint8)
    # raw bytes reinterpreted: floats include NaN, Inf and subnormals for free
    return raw.view(dtype_of(datatype)).reshape(shape)


@st.composite
def mutated_bodies(
    draw: st.DrawFn, inputs: st.SearchStrategy[dict[str, Any]] | None = None
) -> tuple[bytes, int | None]:
    """A valid request body (JSON or binary), then cut, flipped, padded or re-framed."""
    tensors = draw(
        inputs
        if inputs is not None
        else st.dictionaries(st.sampled_from(["input", "x", "y"]), arrays, min_size=1, max_size=2)
    )
    body, header_length = encode_request(tensors, binary=draw(st.booleans()))
    mutation = draw(
        st.sampled_from(["none"] * 5 + ["truncate", "flip", "extend", "reframe", "splice"])
    )
    if mutation == "truncate" and body:
        body = body[: draw(st.integers(0, len(body) - 1))]
    elif mutation == "flip" and body:
        raw = bytearray(body)
        for _ in range(draw(st.integers(1, 4))):
            raw[draw(st.integers(0, len(raw) - 1))] ^= draw(st.integers(1, 255))
        body = bytes(raw)
    elif mutation == "extend":
        body += draw(st.binary(min_size=1, max_size=64))
    elif mutation == "reframe":
        header_length = draw(
            st.none() | st.integers(-8, len(body) + 8) | st.sampled_from([0, 2**63])
        )
    elif mutation == "splice" and body:
        at = draw(st.integers(0, len(body)))
        body = (
            body[:at]
            + draw(st.sampled_from([b"NaN", b"-Infinity", b"1e999", b"{", b"]", b"\x00\xff"]))
            + body[at:]
        )
    return body, header_length


@st.composite
def request_bodies(draw: st.DrawFn) -> tuple[bytes, int | None]:
    """Any request body: structured-but-wrong JSON, mutated valid bodies, or random bytes."""
    kind = draw(st.sampled_from(["header", "header+binary", "mutated", "bytes", "json"]))
    if kind == "mutated":
        return draw(mutated_bodies())
    if kind == "bytes":
        return draw(st.binary(max_size=256)), draw(st.none() | st.integers(-2, 300))
    if kind == "json":
        import json

        return json.dumps(draw(json_values)).encode(), None
    import json

    header = json.dumps(draw(oip_headers())).encode()  # NaN literals included
    if kind == "header":
        return header, draw(st.none() | st.just(len(header)))
    trailer = draw(st.binary(max_size=512))
    length = draw(st.just(len(header)) | st.integers(-2, len(header) + len(trailer) + 4))
    return header + trailer, length



# Bodies shaped like the tiny model's input ("input" FP32 [-1, 1, 28, 28]) so that some cases get
# past the codec into the batcher and the engine: valid images, NaN/Inf, wrong dtype or rank.
model_images = st.builds(
    lambda batch, seed, poison, dtype: _image(batch, seed, poison, dtype),
    st.integers(1, 4),
    st.integers(0, 2**32 - 1),
    st.sampled_from(["none", "none", "none", "nan", "inf", "huge"]),
    st.sampled_from(["FP32"] * 6 + ["FP64", "FP16", "INT32"]),
)


def _image(batch: int, seed: int, poison: str, datatype: str) -> np.ndarray[Any, Any]:
    from strato._tensors import dtype_of

    rng = np.random.default_rng(seed)
    x = rng.random((batch, 1, 28, 28)).astype(dtype_of(datatype))
    if poison != "none" and x.dtype.kind == "f":
        with np.errstate(over="ignore"):  # 3e38 overflows FP16 to Inf: also a poison
            x.flat[int(rng.integers(0, x.size))] = {"nan": np.nan, "inf": np.inf, "huge": 3e38}[
                poison
            ]
    return x


def weighted(*choices: tuple[int, st.SearchStrategy[Any]]) -> st.SearchStrategy[Any]:
    """Pick a strategy by integer weight (`one_of` does not weight its branches)."""
    table = [strategy for weight, strategy in choices for _ in range(weight)]
    return st.integers(0, len(table) - 1).flatmap(lambda i: table[i])


model_bodies = mutated_bodies(
    weighted(
        (4, st.fixed_dictionaries({"input": model_images})),
        (
            1,
            st.dictionaries(
                st.sampled_from(["input", "image"]), model_images, min_size=1, max_size=2
            ),
        ),
    )
)
infer_bodies = weighted((7, model_bodies), (3, request_bodies()))
