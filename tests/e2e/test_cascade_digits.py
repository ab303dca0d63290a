"""The cascade on the digits test split: a small calibrated MLP on the edge, a CNN in the cloud."""

from __future__ import annotations

import numpy as np
import pytest
from strato import Client, Edge, Lambda, policies
from support.servers import cloud_emulator, edge_server, free_port

pytestmark = pytest.mark.timeout(300)


def test_cascade_beats_the_edge_alone_and_escalates_as_estimated(tmp_path, digits):
    edge = edge_server(digits.edge_store, free_port(), tmp_path / "edge.log").start()
    cloud = cloud_emulator(str(digits.cloud_bundle), free_port(), tmp_path / "cloud.log").start()
    try:
        client = Client(
            edge=Edge(edge.url),
            cloud=Lambda("strato-infer", endpoint_url=cloud.url),
            policy=policies.Cascade(),
        )
        edge_alone = client.predict("digits", digits.x_test, policy=policies.EdgeOnly())
        assert edge_alone.model_version == "2"  # the calibrated version
        edge_accuracy = float((edge_alone.output.argmax(axis=-1) == digits.y_test).mean())
        one_by_one = [client.predict("digits", row[None]) for row in digits.x_test]
        tiers = np.array([p.tier for p in one_by_one])
        assert set(tiers) <= {"edge", "cloud"}
        correct = np.array(
            [int(p.output.argmax()) == int(y) for p, y in zip(one_by_one, digits.y_test, strict=True)]
        )
        escalated = float((tiers == "cloud").mean())
        cascade_accuracy = float(correct.mean())
        expected = 1.0 - digits.calibration["edge_share"]
        print(
            f"edge alone {edge_accuracy:.4f}; escalated {escalated:.3f}, manifest estimate {expected:.3f}"
        )
        assert cascade_accuracy >= edge_accuracy
        assert abs(escalated - expected) <= 0.05
        threshold = digits.calibration["cascade_threshold"]
        reasons = [p.route_reason for p in one_by_one]
        assert all(r.startswith("cascade p=") and f"{threshold:.2f} (manifest)" in r for r in reasons)
        batch = client.predict("digits", digits.x_test)  # one call: low rows go up, merged back
        merged_accuracy = float((batch.output.argmax(axis=-1) == digits.y_test).mean())
        assert np.isclose(merged_accuracy, cascade_accuracy, atol=0.01)
        assert (batch.served_by, batch.tier) == ("edge+lambda", "edge+cloud")
    finally:
        edge.stop()
        cloud.stop()
