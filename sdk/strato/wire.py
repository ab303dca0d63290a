"""The Open Inference Protocol v2 body codec, for tools that speak it by hand (benchmarks, the
`strato edge predict|bench` commands, tests of other servers).

`encode_request(inputs)` gives the body and, for Triton's binary extension, the JSON header's
length to send as `Inference-Header-Content-Length` (`HEADER_LENGTH`); `decode_response(body,
header_length)` reads an answer. `dtype_of`/`datatype_of` map OIP datatypes to numpy and back.
Servers use `strato.serving`; clients that route use `strato.Client`.
"""

from __future__ import annotations

from ._codec import HEADER_LENGTH, DecodedResponse, decode_response, encode_request
from ._tensors import datatype_of, dtype_of

__all__ = [
    "HEADER_LENGTH",
    "DecodedResponse",
    "datatype_of",
    "decode_response",
    "dtype_of",
    "encode_request",
]
