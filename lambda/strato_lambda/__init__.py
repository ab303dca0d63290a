"""strato's cloud tier: the AWS Lambda handler, its model loading and the local emulator.

`strato_lambda.app.handler` is the Lambda entry point; `strato cloud …` commands live in
`strato_lambda.cli`. Importing this package loads nothing heavy.
"""

from __future__ import annotations

__all__: list[str] = []
