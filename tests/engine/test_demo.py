"""`make demo` (``oktasync demo``) end to end, small: a full sync, a few changes in Okta, an
incremental sync; both checked by the demo's own check (written from the semantics page, not
from the planner)."""

from __future__ import annotations

import pytest

from oktasync.demo import run_demo


@pytest.mark.asyncio
async def test_the_demo_syncs_fully_then_incrementally_and_both_match_okta(
    capsys: pytest.CaptureFixture[str],
) -> None:
    assert await run_demo(users=80, groups=6, keep_running=False) == 0
    out = capsys.readouterr().out
    assert "full sync, " in out and "incremental sync, 3 users changed in Okta" in out, out
    assert out.count("matches Okta") == 4, out
