"""The cascade on the digits test split: a small calibrated MLP on the edge, a CNN in the cloud."""

from __future__ import annotations

import numpy as np
import pytest
from strato import Client, Edge, Lambda, policies
from strato._route_report import format_route_table, route_split
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
        report = route_split(client, "digits", digits.x_test, digits.y_test)
        print(format_route_table(report))
        rows = {row["tier"]: row for row in report.rows()}
        escalated = rows["cloud"]["share"] if "cloud" in rows else 0.0
        expected = 1.0 - digits.calibration["edge_share"]
        print(
            f"edge alone {edge_accuracy:.4f}; escalated {escalated:.3f}, manifest estimate {expected:.3f}"
        )
        assert rows["all"]["accuracy"] >= edge_accuracy
        assert abs(escalated - expected) <= 0.05
        threshold = digits.calibration["cascade_threshold"]
        assert all(r.startswith("cascade p=") and f"{threshold:.2f}" in r for r in report.reasons)
        batch = client.predict("digits", digits.x_test)  # one call: low rows go up, merged back
        merged_accuracy = float((batch.output.argmax(axis=-1) == digits.y_test).mean())
        assert np.isclose(merged_accuracy, rows["all"]["accuracy"], atol=0.01)
        assert batch.served_by == "edge+lambda"
    finally:
        edge.stop()
        cloud.stop()
