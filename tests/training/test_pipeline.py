"""The quickstart is a list of steps over one context, so later issues can add steps."""

from __future__ import annotations

from pathlib import Path

import pytest
from strato import ConfigError, Registry
from strato_training.pipeline import (
    QUICKSTART_STEPS,
    QuickstartContext,
    Step,
    insert_step,
    run_quickstart,
)


def test_insert_step_places_a_new_step_by_name() -> None:
    step = Step("quantize", "int8 static", lambda ctx: None)
    after = insert_step(QUICKSTART_STEPS, step, after="publish")
    names = [s.name for s in after]
    assert names[names.index("publish") + 1] == "quantize"
    before = insert_step(QUICKSTART_STEPS, step, before="data")
    assert before[0] is step and len(before) == len(QUICKSTART_STEPS) + 1
    with pytest.raises(ConfigError, match="no quickstart step 'deploy'"):
        insert_step(QUICKSTART_STEPS, step, after="deploy")


def test_steps_share_the_context_and_are_timed(tmp_path: Path) -> None:
    seen: list[int] = []

    def count(ctx: QuickstartContext) -> None:
        seen.append(len(ctx.need("dataset").test))
        ctx.summary["counted"] = True

    ctx = QuickstartContext(workdir=tmp_path, registry=Registry(tmp_path / "reg"), progress=False)
    steps = (QUICKSTART_STEPS[0], Step("count", "count the test split", count))
    summary = run_quickstart(ctx, steps)
    assert seen == [360] and summary["counted"] is True
    assert set(summary["timings"]) == {"data", "count"}


def test_a_step_out_of_order_says_what_is_missing(tmp_path: Path) -> None:
    ctx = QuickstartContext(workdir=tmp_path, registry=Registry(tmp_path / "reg"), progress=False)
    load_only = tuple(s for s in QUICKSTART_STEPS if s.name == "load")
    with pytest.raises(ConfigError, match="'ref' is not set by an earlier step"):
        run_quickstart(ctx, load_only)
