"""The tensor budget of one Lambda invoke, as docs/client.md and docs/models.md state it: the
base64 body (x4/3) inside the 6,291,456-byte payload leaves 3/4 of it for tensors (the two
pages said 4.7 MB and 4.5 MB)."""

from __future__ import annotations

from pathlib import Path

from strato._transports.aws import LAMBDA_PAYLOAD_LIMIT

DOCS = Path(__file__).resolve().parents[2] / "docs"


def test_both_pages_state_the_same_tensor_budget_as_the_code() -> None:
    budget = f"{LAMBDA_PAYLOAD_LIMIT * 3 // 4:,} bytes"
    for page in ("client.md", "models.md"):
        text = (DOCS / page).read_text()
        assert budget in text, page
        assert "4.7 MB of tensors" not in text and "about 4.5 MB" not in text, page
