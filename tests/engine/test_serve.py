"""`oktasync serve` (issue 12, first part): each app synced at start and on its schedule,
/healthz and /metrics, SIGTERM stops it cleanly (exit 0). The service runs as a real
subprocess against the emulators; the end state is judged by the oracle."""

from __future__ import annotations

import asyncio
import signal
import sys
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import aiohttp
import pytest

from oktasync.config import load_config
from oktasync.serve import Service
from tests.engine.harness import states, write_config
from tests.engine.service import free_port
from tests.engine.test_sync_behaviour import APP, assert_oracle, estate


async def get(url: str) -> tuple[int, Any]:
    async with aiohttp.ClientSession() as session, session.get(url) as response:
        body = await (response.json() if "json" in response.content_type else response.text())
        return response.status, body


@pytest.mark.asyncio
async def test_serve_syncs_at_start_reports_health_and_metrics_and_stops_on_sigterm(
    tmp_path: Path,
) -> None:
    async with estate(users=60) as running:
        port = free_port()
        path = write_config(tmp_path, running, extra_app='schedule = "1m"')
        # two Cloud directories no app syncs yet: one API key expiring in 10 days, shown in
        # /metrics; one in 100 days, not yet
        today = datetime.now(UTC).date()  # as the service counts
        soon, later = (today + timedelta(days=n) for n in (10, 100))
        clouds = "".join(
            f'\n[target.{name}]\nkind = "atlassian-scim"\nurl = "https://127.0.0.1/scim"\n'
            f'token = "scim-key-{name}"\nkey_expires = "{when}"\n'
            for name, when in (("cloud", soon), ("cloud2", later)))
        path.write_text(path.read_text() + clouds + f'\n[serve]\nlisten = "127.0.0.1:{port}"\n')
        before = await states(running)
        service = await asyncio.create_subprocess_exec(
            sys.executable, "-m", "oktasync", "serve", "--config", str(path),
            stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE)
        assert service.stdout is not None
        ready = await asyncio.wait_for(service.stdout.readline(), timeout=30)
        assert f"listening on http://127.0.0.1:{port}" in ready.decode()
        base = f"http://127.0.0.1:{port}"
        for _ in range(300):
            status, health = await get(base + "/healthz")
            if health["apps"][APP]["last_exit_code"] is not None:
                break
            await asyncio.sleep(0.1)
        assert status == 200 and health["status"] == "ok", health
        entry = health["apps"][APP]
        assert entry["runs"] == 1 and entry["last_exit_code"] == 0 and entry["healthy"], entry
        assert entry["last_kind"] == "full"
        await assert_oracle(running, before)
        status, metrics = await get(base + "/metrics")
        assert status == 200
        assert f'oktasync_runs_total{{app="{APP}",kind="full",outcome="ok"}} 1.0' in metrics
        assert "oktasync_last_success_timestamp_seconds" in metrics
        assert 'oktasync_target_key_expiry_days{target="cloud"} 10.0' in metrics
        assert 'target="cloud2"' not in metrics

        # SIGHUP: a broken file is refused and the running configuration kept, said in
        # /healthz; a good one is taken
        good = path.read_text()
        path.write_text(good.replace('schedule = "1m"', 'schedule = "1 minute"'))
        service.send_signal(signal.SIGHUP)
        health = await until(base, lambda h: h["config"]["reload_error"] is not None)
        assert "schedule" in health["config"]["reload_error"], health
        assert list(health["apps"]) == [APP] and health["status"] == "ok"
        loaded = health["config"]["loaded_at"]
        path.write_text(good.replace('schedule = "1m"', 'schedule = "2m"'))
        service.send_signal(signal.SIGHUP)
        health = await until(base, lambda h: h["config"]["loaded_at"] != loaded)
        assert health["config"]["reload_error"] is None, health
        assert health["apps"][APP]["runs"] == 1  # a reload is no run

        service.send_signal(signal.SIGTERM)
        _, err = await asyncio.wait_for(service.communicate(), timeout=30)
        assert service.returncode == 0, err.decode()[-2000:]


async def until(base: str, ready: Any) -> Any:
    """/healthz once ``ready`` says so (10 s at most)."""
    for _ in range(100):
        _, health = await get(base + "/healthz")
        if ready(health):
            return health
        await asyncio.sleep(0.1)
    raise AssertionError(f"/healthz never got there: {health}")


def test_healthz_turns_unhealthy_after_three_intervals_without_success(tmp_path: Path) -> None:
    text = (Path(__file__).parents[2] / "config" / "demo.toml").read_text(encoding="utf-8")
    path = tmp_path / "oktasync.toml"
    path.write_text(text.replace('targets = ["jira", "confluence"]',
                                 'targets = ["jira", "confluence"]\nschedule = "10m"'), "utf-8")
    config = load_config(path, env={})
    service = Service(config)
    app = config.apps[0]
    name = app.name
    assert service.healthy(app, service.started + 1_799)
    assert not service.healthy(app, service.started + 1_801)
    service.health[name].last_success = service.started + 1_000
    assert service.healthy(app, service.started + 2_700)
