from __future__ import annotations

import numpy as np
import pytest
from strato import Client, IntegrityError, InvalidInput, Local, ModelNotFound


def test_local_predicts_from_registry(tiny_registry, digit_batch):
    client = Client(edge=Local(tiny_registry))
    pred = client.predict("tiny", digit_batch)
    assert pred.served_by == "local"
    assert pred.model_version == "2"
    assert pred.output.shape == (4, 10)
    assert client.predict("tiny@prod", digit_batch).model_version == "1"


def test_bad_input_is_invalid_input(tiny_registry, digit_batch):
    client = Client(edge=Local(tiny_registry))
    with pytest.raises(InvalidInput, match="shape"):
        client.predict("tiny", digit_batch[:, :, :27])
    with pytest.raises(InvalidInput, match="datatype FP64"):
        client.predict("tiny", digit_batch.astype(np.float64))
    with pytest.raises(ModelNotFound):
        client.predict("nope", digit_batch)


def test_flipped_byte_is_integrity_error(tiny_bundle):
    from strato import Bundle

    path = tiny_bundle.path_of("model.onnx")
    data = bytearray(path.read_bytes())
    data[100] ^= 0xFF
    path.write_bytes(bytes(data))
    with pytest.raises(IntegrityError, match=r"model\.onnx"):
        Bundle.load(tiny_bundle.root)
