"""Triton's system shared-memory extension on the daemon: tritonclient's own shared-memory
utilities unchanged, `Edge(..., shared_memory=True)` over TCP and a Unix socket, the bounds
checks, and the refusals (off by default, non-local peers)."""

from __future__ import annotations

import json
import os
import socket
from pathlib import Path

import numpy as np
import pytest
from strato import Edge, InferRequest, InvalidInput, Local
from strato._engines import load_engine
from support.servers import edge_server as edge_process
from support.servers import free_port

pytestmark = pytest.mark.timeout(120)

httpclient = pytest.importorskip("tritonclient.http", reason="tritonclient[http] not installed")
shm = pytest.importorskip("tritonclient.utils.shared_memory")
from tritonclient.utils import InferenceServerException  # noqa: E402


@pytest.fixture
def shm_server(tiny_registry, edge_server):
    return edge_server(Path(tiny_registry.url), allow_shm=True)


@pytest.fixture
def triton(shm_server):
    client = httpclient.InferenceServerClient(url=f"127.0.0.1:{shm_server.port}")
    yield client
    client.unregister_system_shared_memory()
    client.close()


@pytest.fixture
def regions(request):
    """tritonclient regions made in the test (key unique per test), destroyed at teardown."""
    made = []

    def make(name: str, size: int):
        key = f"/strato-test-{os.getpid()}-{request.node.name[-20:]}-{name}"
        handle = shm.create_shared_memory_region(name, key, size)
        made.append(handle)
        return handle, key

    yield make
    for handle in made:
        shm.destroy_shared_memory_region(handle)


def expected_logits(registry, batch, ref: str = "tiny:1") -> np.ndarray:
    return load_engine(registry.open(ref)).infer({"input": batch})["logits"]


def test_tritonclient_inputs_and_outputs_in_shared_memory(
    triton, regions, tiny_registry, digit_batch
):
    assert "system_shared_memory" in triton.get_server_metadata()["extensions"]
    in_handle, in_key = regions("in", digit_batch.nbytes + 128)
    out_handle, out_key = regions("out", 4 * 10 * 4)
    shm.set_shared_memory_region(in_handle, [digit_batch], offset=128)
    triton.register_system_shared_memory("in", in_key, digit_batch.nbytes + 128)
    triton.register_system_shared_memory("out", out_key, 160)
    status = {r["name"]: r for r in triton.get_system_shared_memory_status()}
    assert status["in"]["key"] == in_key and status["out"]["byte_size"] == 160
    assert triton.get_system_shared_memory_status("in")[0]["byte_size"] == digit_batch.nbytes + 128

    given = httpclient.InferInput("input", list(digit_batch.shape), "FP32")
    given.set_shared_memory("in", digit_batch.nbytes, offset=128)
    wanted = httpclient.InferRequestedOutput("logits", binary_data=True)
    wanted.set_shared_memory("out", 160)
    result = triton.infer("tiny", [given], outputs=[wanted], request_id="shm-1")
    output = result.get_output("logits")
    assert "data" not in output and "binary_data_size" not in output["parameters"]
    assert output["shape"] == [4, 10] and output["datatype"] == "FP32"
    logits = shm.get_contents_as_numpy(out_handle, np.float32, output["shape"])
    np.testing.assert_allclose(logits, expected_logits(tiny_registry, digit_batch), rtol=1e-5)
    assert result.get_response()["id"] == "shm-1"

    triton.unregister_system_shared_memory("in")
    assert [r["name"] for r in triton.get_system_shared_memory_status()] == ["out"]


def test_shared_memory_input_with_a_binary_output(triton, regions, tiny_registry, digit_batch):
    handle, key = regions("in", digit_batch.nbytes)
    shm.set_shared_memory_region(handle, [digit_batch])
    triton.register_system_shared_memory("in", key, digit_batch.nbytes)
    given = httpclient.InferInput("input", list(digit_batch.shape), "FP32")
    given.set_shared_memory("in", digit_batch.nbytes)
    result = triton.infer("tiny", [given])  # outputs come back as binary tensors
    np.testing.assert_allclose(
        result.as_numpy("logits"), expected_logits(tiny_registry, digit_batch), rtol=1e-5
    )


def _infer_from(triton, region: str, size: int, offset: int = 0, shape=(4, 1, 28, 28)):
    given = httpclient.InferInput("input", list(shape), "FP32")
    given.set_shared_memory(region, size, offset=offset)
    return triton.infer("tiny", [given])


def test_every_use_is_bounds_checked(triton, regions, shm_server, digit_batch):
    handle, key = regions("small", digit_batch.nbytes)
    shm.set_shared_memory_region(handle, [digit_batch])
    with pytest.raises(InferenceServerException, match="does not fit"):
        triton.register_system_shared_memory("too-big", key, digit_batch.nbytes + 1)
    with pytest.raises(InferenceServerException, match="does not fit"):
        triton.register_system_shared_memory("past-end", key, 64, offset=digit_batch.nbytes)
    for bad_key in ("/../etc/passwd", "/dev/shm/x", "no/slash/allowed", "/"):
        with pytest.raises(InferenceServerException, match="must name an object"):
            triton.register_system_shared_memory("evil", bad_key, 16)
    with pytest.raises(InferenceServerException, match="cannot open"):
        triton.register_system_shared_memory("missing", "/strato-no-such-object", 16)

    triton.register_system_shared_memory("small", key, digit_batch.nbytes)
    with pytest.raises(InferenceServerException, match="already registered"):
        triton.register_system_shared_memory("small", key, 16)
    with pytest.raises(InferenceServerException, match="do not fit"):
        _infer_from(triton, "small", digit_batch.nbytes, offset=4)
    with pytest.raises(InferenceServerException, match="shape"):
        _infer_from(triton, "small", digit_batch.nbytes - 4)
    with pytest.raises(InferenceServerException, match="no shared memory region"):
        _infer_from(triton, "nope", digit_batch.nbytes)

    _, out_key = regions("tiny-out", 16)
    triton.register_system_shared_memory("tiny-out", out_key, 16)
    given = httpclient.InferInput("input", list(digit_batch.shape), "FP32")
    given.set_shared_memory("small", digit_batch.nbytes)
    wanted = httpclient.InferRequestedOutput("logits")
    wanted.set_shared_memory("tiny-out", 16)
    with pytest.raises(InferenceServerException, match="160 bytes"):
        triton.infer("tiny", [given], outputs=[wanted])

    # The client shrinks the object behind the server's back: a 400, not a SIGBUS.
    with open(f"/dev/shm{key}", "r+b") as shrunk:
        shrunk.truncate(16)
    with pytest.raises(InferenceServerException, match="shrank"):
        _infer_from(triton, "small", digit_batch.nbytes)
    assert triton.is_server_live()


def test_off_unless_allowed(tiny_server, regions, digit_batch):
    client = httpclient.InferenceServerClient(url=f"127.0.0.1:{tiny_server.port}")
    try:
        assert "system_shared_memory" not in client.get_server_metadata()["extensions"]
        _, key = regions("in", digit_batch.nbytes)
        with pytest.raises(InferenceServerException, match="--allow-shm"):
            client.register_system_shared_memory("in", key, digit_batch.nbytes)
        with pytest.raises(InferenceServerException, match="--allow-shm"):
            _infer_from(client, "in", digit_batch.nbytes)
    finally:
        client.close()
    # and Edge(shared_memory=True) just sends binary tensors
    with Edge(tiny_server.url, shared_memory=True, shm_min_bytes=0) as edge:
        answer = edge.infer(InferRequest("tiny", {"input": digit_batch}))
        assert answer.outputs["logits"].shape == (4, 10) and not edge.uses_shared_memory


def _own_shm_objects() -> set[str]:
    return {name for name in os.listdir("/dev/shm") if name.startswith(f"strato-{os.getpid()}-")}


def test_edge_uses_shared_memory_over_a_unix_socket(tiny_registry, tmp_path, digit_batch):
    sock = tmp_path / "edge.sock"
    proc = edge_process(
        Path(tiny_registry.url), free_port(), tmp_path / "edge.log", "--uds", str(sock),
        "--allow-shm",
    ).start()  # fmt: skip
    try:
        local = Local(tiny_registry)
        for url in (f"unix://{sock}", proc.url):
            with Edge(url, shared_memory=True, shm_min_bytes=0) as edge:
                for batch in (digit_batch, digit_batch[:1], np.concatenate([digit_batch] * 8)):
                    answer = edge.infer(InferRequest("tiny", {"input": batch}, id="e1"))
                    expected = local.infer(InferRequest("tiny@prod", {"input": batch}))
                    np.testing.assert_allclose(
                        answer.outputs["logits"], expected.outputs["logits"], rtol=1e-5
                    )
                assert edge.uses_shared_memory and answer.model_version == "1"
                assert answer.precision == "fp32" and answer.outputs["logits"].shape == (32, 10)
                with pytest.raises(InvalidInput, match="400"):
                    edge.infer(InferRequest("tiny", {"input": digit_batch[:, :, :27]}))
                status, _, body = edge.raw("GET", "/v2/systemsharedmemory/status")
                ours = {r["name"] for r in json.loads(body)}
                assert status == 200 and ours == _own_shm_objects() and len(ours) == 2
            assert not _own_shm_objects()  # closed: unregistered and unlinked
        with Edge(f"unix://{sock}", shared_memory=True) as small:  # 3 KB: binary is cheaper
            assert small.infer(InferRequest("tiny", {"input": digit_batch[:1]})).outputs
            assert not small.uses_shared_memory and not _own_shm_objects()
        with Edge(f"unix://{sock}") as plain:  # the Unix socket without shared memory
            assert plain.infer(InferRequest("tiny", {"input": digit_batch})).outputs
            assert plain.raw("GET", "/v2/systemsharedmemory/status")[2] == b"[]"
        local.close()
    finally:
        proc.stop()
    assert not sock.exists()  # the daemon removes its socket on the way out


def _outward_address() -> str | None:
    """This machine's address on a non-loopback interface, if it has one."""
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as probe:
        try:
            probe.connect(("10.255.255.255", 1))
            address = probe.getsockname()[0]
        except OSError:
            return None
    return None if address.startswith("127.") or address == "0.0.0.0" else address


def test_non_local_peers_are_refused(tiny_registry, edge_server, regions, digit_batch):
    address = _outward_address()
    if address is None:
        pytest.skip("this machine has no non-loopback address to connect from")
    server = edge_server(Path(tiny_registry.url), allow_shm=True, host="0.0.0.0", insecure=True)
    client = httpclient.InferenceServerClient(url=f"{address}:{server.port}")
    try:
        _, key = regions("in", digit_batch.nbytes)
        with pytest.raises(InferenceServerException, match="this machine"):
            client.register_system_shared_memory("in", key, digit_batch.nbytes)
        with pytest.raises(InferenceServerException, match="this machine"):
            client.get_system_shared_memory_status()
    finally:
        client.close()
