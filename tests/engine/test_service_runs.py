"""The service's runs (issue 12): scheduled incremental syncs, reconciles on their own
schedule and event syncs of one app never overlap; each kind happens. In process, with
schedules shorter than a file allows (the file's minimum is a minute), against the
emulators; judged by the runs' own times and by the oracle."""

from __future__ import annotations

import itertools
import json
from collections import Counter
from dataclasses import replace
from pathlib import Path

import aiohttp
import anyio
import pytest

from oktasync.schedules import Schedule
from oktasync.serve import Service
from tests.engine.harness import load, states, write_config
from tests.engine.service import delivery, free_port, hook_headers, with_serve
from tests.engine.test_hooks import HOOKS, new_hire, sign_in, synced_once
from tests.engine.test_sync_behaviour import APP, assert_oracle, estate


@pytest.mark.asyncio
async def test_scheduled_reconcile_and_event_runs_of_an_app_never_overlap(
    tmp_path: Path,
) -> None:
    async with estate(users=60, latency_ms=20) as running:
        port = free_port()
        path = with_serve(write_config(tmp_path, running, extra_app=HOOKS), port)
        await synced_once(path)
        before = await states(running)
        config = load(path)
        app = replace(config.apps[0], schedule=Schedule(every_s=0.3),
                      reconcile_schedule=Schedule(every_s=1.5))
        service = Service(replace(config, apps=(app,)))
        base = f"http://127.0.0.1:{port}"
        async with anyio.create_task_group() as tg, aiohttp.ClientSession() as http:
            tg.start_soon(lambda: service.serve(on_ready=lambda _: None))
            await anyio.sleep(0.3)
            for index in range(8):
                login = f"hire{index}@example.com"
                body = json.dumps(delivery(sign_in(new_hire(running, login), login)))
                async with http.post(f"{base}/hooks/okta/{APP}", data=body,
                                     headers=hook_headers()) as answer:
                    assert answer.status == 200
                await anyio.sleep(0.4)
            await anyio.sleep(1.0)
            tg.cancel_scope.cancel()
        runs = sorted(service.history, key=lambda r: r.started)
        kinds = Counter(r.kind for r in runs)
        assert kinds["incremental"] >= 3 and kinds["reconcile"] >= 1 and kinds["events"] >= 1, \
            kinds
        for earlier, later in itertools.pairwise(runs):
            assert earlier.finished <= later.started, (earlier, later)
        assert all(r.exit_code == 0 for r in runs[:-1]), runs  # the last may be cancelled
        await assert_oracle(running, before)
