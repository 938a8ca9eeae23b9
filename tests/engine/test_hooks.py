"""`oktasync serve` takes changes as they happen (issue 12): Okta event hook deliveries at
``/hooks/okta/{app}``, the login hook, forged and malformed requests refused, the inbox kept
across a kill -9. The service is a real subprocess against the emulators; what lands is judged
on the emulators' state and request counts, never on the engine's planner."""

from __future__ import annotations

import asyncio
import io
import json
import sys
import time
import uuid
from collections import Counter
from pathlib import Path
from typing import Any

import aiohttp
import pytest

from oktasync.engine import SyncOptions, run_sync
from oktasync_emulators.runner import RunningEmulators
from tests.engine.harness import (
    endpoint_requests,
    load,
    read_requests,
    states,
    stats,
    write_config,
    write_requests,
)
from tests.engine.service import (
    HOOK_SECRET,
    LOGIN_SECRET,
    delivery,
    free_port,
    hook_headers,
    service,
    sign_in,
    with_serve,
)
from tests.engine.test_sync_behaviour import APP, TARGETS, assert_oracle, estate, quiet

HOOKS = (f'changes = "hooks"\nokta_hook_secret = "{HOOK_SECRET}"\n'
         f'login_hook_secret = "{LOGIN_SECRET}"\nschedule = "cron:0 0 1 1 *"')


async def synced_once(path: Path) -> None:
    """The complete sync every event sync works against (the CLI's, before the service)."""
    result = await run_sync(load(path), SyncOptions(), echo=quiet)
    assert result.exit_code == 0, result.summaries[APP]["notes"]


async def synced_service_config(tmp_path: Path, running: RunningEmulators, extra_app: str = HOOKS,
                                serve: str = "") -> tuple[Path, int]:
    """A config for the service on a free port, and the complete sync it starts from."""
    port = free_port()
    path = with_serve(write_config(tmp_path, running, extra_app=extra_app), port, serve)
    await synced_once(path)
    return path, port


def accounts(state: dict[str, Any], target: str) -> dict[str, Any]:
    return {u["name"]: u for u in state[target]["users"]}


async def wait_for_account(running: RunningEmulators, name: str, within_s: float) -> float:
    """Seconds until ``name`` exists in every target (AssertionError after ``within_s``)."""
    started = time.monotonic()
    while time.monotonic() - started < within_s:
        now = await states(running)
        if all(name in accounts(now, t) for t in TARGETS):
            return time.monotonic() - started
        await asyncio.sleep(0.05)
    raise AssertionError(f"{name} not in every target after {within_s}s")


def new_hire(running: RunningEmulators, login: str) -> str:
    okta = running.okta.directory
    user = okta.add_user({"login": login, "email": login, "firstName": "New", "lastName": "Hire"})
    group = next(g for g in okta.groups.values() if g.type == "OKTA_GROUP")
    okta.add_membership(group.id, user.id)
    return user.id


@pytest.mark.asyncio
async def test_a_sign_in_delivered_by_hook_is_synced_within_two_seconds_once(
    tmp_path: Path,
) -> None:
    async with estate(users=60) as running:
        path, port = await synced_service_config(tmp_path, running)
        async with service(path, port) as svc:
            user_id = new_hire(running, "new.hire@example.com")
            body = delivery(sign_in(user_id, "new.hire@example.com"))
            started = time.monotonic()
            status, _ = await svc.post(f"/hooks/okta/{APP}", data=json.dumps(body),
                                       headers=hook_headers())
            assert status == 200
            waited = await wait_for_account(running, "new.hire", within_s=2.0)
            assert time.monotonic() - started < 2.0, waited
            reads = endpoint_requests((await stats(running))["okta"], "GET /api/v1/users/{id}")
            # the same delivery again (Okta delivers at least once): kept once, no sync
            status, _ = await svc.post(f"/hooks/okta/{APP}", data=json.dumps(body),
                                       headers=hook_headers())
            assert status == 200
            await asyncio.sleep(0.5)
            health = await svc.health()
            assert health["apps"][APP]["events_synced"] == 1, health
            assert endpoint_requests((await stats(running))["okta"],
                                     "GET /api/v1/users/{id}") == reads
            now = await states(running)
            for target in TARGETS:
                account = accounts(now, target)["new.hire"]
                assert account["active"], (target, account)
            _, metrics = await svc.get("/metrics")
            assert (f'oktasync_event_sync_latency_seconds_count{{app="{APP}",lane="sign-in"}} '
                    "1.0") in metrics
            await svc.stop()


@pytest.mark.asyncio
async def test_forged_and_malformed_deliveries_are_refused_and_sync_nothing(
    tmp_path: Path,
) -> None:
    async with estate(users=40) as running:
        path, port = await synced_service_config(tmp_path, running)
        async with service(path, port) as svc:
            user_id = new_hire(running, "forged@example.com")
            good = json.dumps(delivery(sign_in(user_id, "forged@example.com")))
            before = await stats(running)
            cases: list[tuple[str, dict[str, Any], int]] = [
                (f"/hooks/okta/{APP}", {"data": good, "headers": hook_headers("wrong")}, 401),
                (f"/hooks/okta/{APP}", {"data": good, "headers": {
                    "Content-Type": "application/json"}}, 401),
                ("/hooks/okta/no-such-app", {"data": good, "headers": hook_headers()}, 404),
                (f"/hooks/okta/{APP}", {"data": good, "headers": {
                    "Authorization": HOOK_SECRET, "Content-Type": "text/plain"}}, 415),
                (f"/hooks/okta/{APP}", {"data": "{not json", "headers": hook_headers()}, 400),
                (f"/hooks/okta/{APP}", {"data": json.dumps({"data": {"events": [{}]}}),
                                        "headers": hook_headers()}, 400),
                (f"/hooks/okta/{APP}", {"data": io.BytesIO(b"[" + b"1," * 3_000_000 + b"1]"),
                                        "headers": hook_headers()}, 413),
            ]
            for url, request, expected in cases:
                status, body = await svc.post(url, **request)
                assert status == expected, (url, request.get("headers"), status, body)
            # the verification GET: answered to the right secret only
            challenge = {"X-Okta-Verification-Challenge": "abc-123"}
            status, body = await svc.get(f"/hooks/okta/{APP}", headers={
                **challenge, "Authorization": HOOK_SECRET})
            assert (status, body) == (200, {"verification": "abc-123"})
            status, _ = await svc.get(f"/hooks/okta/{APP}", headers={
                **challenge, "Authorization": "wrong"})
            assert status == 401
            # the login hook: a bearer secret; a username no Okta user has is a 404
            status, _ = await svc.post(f"/hooks/login/{APP}", json={"username": "forged"},
                                       headers={"Authorization": "Bearer wrong"})
            assert status == 401
            status, _ = await svc.post(f"/hooks/login/{APP}", json={"username": "nobody.here"},
                                       headers={"Authorization": f"Bearer {LOGIN_SECRET}"})
            assert status == 404
            await asyncio.sleep(0.5)
            health = await svc.health()
            assert health["apps"][APP]["events_synced"] == 0 and \
                health["apps"][APP]["inbox_depth"] == 0, health
            after = await stats(running)
            for target in TARGETS:
                assert write_requests(after[target]) == write_requests(before[target])
            assert "forged" not in accounts(await states(running), "jira")
            err = await svc.stop()
            assert HOOK_SECRET not in err and LOGIN_SECRET not in err
            assert "hook request refused" in err


@pytest.mark.asyncio
async def test_the_login_hook_syncs_the_user_and_answers_when_done(tmp_path: Path) -> None:
    async with estate(users=40) as running:
        path, port = await synced_service_config(tmp_path, running)
        before = await states(running)
        person = next(u for u in before["okta"]["users"] if u["status"] == "ACTIVE")
        name = person["profile"]["login"].split("@")[0].lower()  # the rule: (.*)@.* -> $1
        assert name in accounts(before, "jira")
        running.okta.directory.update_profile(person["id"], {"displayName": "Renamed Person"})
        async with service(path, port) as svc:
            status, body = await svc.post(f"/hooks/login/{APP}", json={"username": name},
                                          headers={"Authorization": f"Bearer {LOGIN_SECRET}"})
            assert status == 200 and body == {"status": "synced", "okta_id": person["id"]}
            now = await states(running)
            # Jira takes the new name; Confluence Data Center cannot change one (drift, said)
            assert accounts(now, "jira")[name]["displayName"] == "Renamed Person"
            await svc.stop()


@pytest.mark.asyncio
async def test_an_acknowledged_delivery_survives_a_kill_9(tmp_path: Path) -> None:
    """Stored before it is answered: the service killed right after answering, then started
    again, syncs the event (the writes are slowed so that the kill comes first)."""
    async with estate(users=40, latency_ms=400) as running:
        path, port = await synced_service_config(tmp_path, running)
        user_id = new_hire(running, "survivor@example.com")
        body = json.dumps(delivery(sign_in(user_id, "survivor@example.com")))
        async with service(path, port) as svc:
            status, _ = await svc.post(f"/hooks/okta/{APP}", data=body, headers=hook_headers())
            assert status == 200
            svc.process.kill()
            await svc.process.wait()
        assert "survivor" not in accounts(await states(running), "jira")  # killed in time
        async with service(path, port) as svc:
            await wait_for_account(running, "survivor", within_s=20)
            health = await svc.until(lambda h: h["apps"][APP]["events_synced"] == 1)
            assert health["apps"][APP]["inbox_depth"] == 0
            await svc.stop()


@pytest.mark.asyncio
async def test_the_poller_catches_up_with_what_changed_while_the_service_was_down(
    tmp_path: Path,
) -> None:
    """No hook, no scheduled run (a cron schedule far away): only the System Log poller,
    from the position it kept, brings the changes made while the service was stopped."""
    polling = 'changes = "poll"\npoll_interval = "5s"\nschedule = "cron:0 0 1 1 *"'
    async with estate(users=60) as running:
        path, port = await synced_service_config(tmp_path, running, polling)
        async with service(path, port) as svc:
            await svc.until(lambda h: h["apps"][APP]["poller_last_success"] is not None)
            await svc.stop()
        before = await states(running)
        okta = running.okta.directory
        people = [u for u in before["okta"]["users"] if u["status"] == "ACTIVE"]
        okta.update_profile(people[0]["id"], {"displayName": "Changed While Down"})
        okta.set_status(people[1]["id"], "DEPROVISIONED")
        new_hire(running, "while.down@example.com")
        async with service(path, port) as svc:
            await svc.until(lambda h: h["apps"][APP]["events_synced"] >= 3
                            and h["apps"][APP]["inbox_depth"] == 0, within_s=30)
            now = await assert_oracle(running, before)
            assert "while.down" in accounts(now, "jira")
            health = await svc.health()
            assert health["apps"][APP]["runs"] == 0, health  # the poller did it, no run
            await svc.stop()


def deactivated(user_id: str) -> dict[str, Any]:
    """A ``user.lifecycle.deactivate`` LogEvent naming the user as its target."""
    return {"uuid": str(uuid.uuid4()), "published": "2026-12-03T10:00:00.000Z",
            "eventType": "user.lifecycle.deactivate", "version": "0", "severity": "INFO",
            "actor": {"id": "00uadmin", "type": "User"}, "outcome": {"result": "SUCCESS"},
            "target": [{"id": user_id, "type": "User"}]}


async def cli(path: Path, *args: str) -> tuple[int, str]:
    process = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "oktasync", *args, "--config", str(path),
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE)
    out, err = await asyncio.wait_for(process.communicate(), timeout=60)
    assert process.returncode is not None
    return process.returncode, out.decode() + err.decode()


@pytest.mark.asyncio
async def test_deactivations_from_events_past_the_window_are_held_until_released(
    tmp_path: Path,
) -> None:
    """max_deactivations = 2 over the window: five deactivations arriving one by one, two
    land, three are held; `oktasync held` lists them, `--release` lands them."""
    async with estate(users=60) as running:
        path, port = await synced_service_config(tmp_path, running, HOOKS + (
            '\nmax_deactivations = 2\ndeactivation_window = "1h"'))
        before = await states(running)
        leavers = [u for u in before["okta"]["users"] if u["status"] == "ACTIVE"
                   and u["profile"]["login"].split("@")[0].lower() in accounts(before, "jira")
                   ][:5]
        names = {u["profile"]["login"].split("@")[0].lower() for u in leavers}
        async with service(path, port) as svc:
            for user in leavers:
                running.okta.directory.set_status(user["id"], "DEPROVISIONED")
                status, _ = await svc.post(f"/hooks/okta/{APP}", headers=hook_headers(),
                                           data=json.dumps(delivery(deactivated(user["id"]))))
                assert status == 200
                await svc.until(lambda h: h["apps"][APP]["inbox_depth"] == 0)
            await svc.until(lambda h: h["apps"][APP]["events_synced"] == 5)
            await svc.stop()
        now = await states(running)
        for target in TARGETS:
            inactive = {n for n in names if not accounts(now, target)[n]["active"]}
            assert len(inactive) == 2, (target, inactive)
        code, out = await cli(path, "held")
        assert code == 0 and "3 users' deactivations held (6 accounts)" in out, out
        code, out = await cli(path, "held", "--release")
        assert code == 0, out
        now = await states(running)
        for target in TARGETS:
            assert not any(accounts(now, target)[n]["active"] for n in names), target
        code, out = await cli(path, "held")
        assert code == 0 and "nothing held" in out, out


def profile_updated(user_id: str) -> dict[str, Any]:
    return {**deactivated(user_id), "uuid": str(uuid.uuid4()),
            "eventType": "user.account.update_profile"}


def rss_kb(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    raise AssertionError("no VmRSS")


@pytest.mark.asyncio
async def test_a_sign_in_jumps_the_queue_of_other_events(tmp_path: Path) -> None:
    """1,000 profile events queued, then a sign-in: the new hire's account exists while
    most of the backlog is still waiting (the priority lane)."""
    async with estate(users=200, latency_ms=20) as running:
        path, port = await synced_service_config(tmp_path, running)
        ids = list(running.okta.directory.users)
        backlog = [profile_updated(ids[i % len(ids)]) for i in range(1000)]
        async with service(path, port) as svc:
            status, _ = await svc.post(f"/hooks/okta/{APP}", headers=hook_headers(),
                                       data=json.dumps(delivery(*backlog)))
            assert status == 200
            user_id = new_hire(running, "first.day@example.com")
            status, _ = await svc.post(f"/hooks/okta/{APP}", headers=hook_headers(),
                                       data=json.dumps(delivery(sign_in(
                                           user_id, "first.day@example.com"))))
            assert status == 200
            waited = await wait_for_account(running, "first.day", within_s=5)
            health = await svc.health()
            assert health["apps"][APP]["inbox_depth"] >= 500, (waited, health)
            await svc.until(lambda h: h["apps"][APP]["inbox_depth"] == 0, within_s=120)
            await svc.stop()


@pytest.mark.asyncio
async def test_a_flood_of_forged_deliveries_is_bounded_and_syncs_nothing(
    tmp_path: Path,
) -> None:
    """10,000 deliveries with a wrong secret, 8 KB each, 50 at a time: all 401, the
    service's memory stays within 40 MB of where it was, nothing is read or written; and a
    delivery bigger than the inbox's room is refused whole with 503."""
    async with estate(users=40) as running:
        path, port = await synced_service_config(tmp_path, running,
                                                 serve="inbox_capacity = 100")
        ids = list(running.okta.directory.users)
        async with service(path, port) as svc:
            await svc.health()
            before_rss, before = rss_kb(svc.process.pid), await stats(running)
            body = json.dumps(delivery(*[profile_updated(ids[0]) for _ in range(30)]))
            assert len(body) > 8000
            statuses: Counter[int] = Counter()
            limit = asyncio.Semaphore(50)
            async with aiohttp.ClientSession() as http:
                async def forge() -> None:
                    async with limit, http.post(f"{svc.base}/hooks/okta/{APP}", data=body,
                                                headers=hook_headers("forged")) as answer:
                        statuses[answer.status] += 1
                await asyncio.gather(*(forge() for _ in range(10_000)))
            assert statuses == Counter({401: 10_000})
            grown = rss_kb(svc.process.pid) - before_rss
            assert grown < 40_000, f"RSS grew by {grown} KB"
            status, _ = await svc.post(f"/hooks/okta/{APP}", headers=hook_headers(),
                                       data=json.dumps(delivery(*[
                                           profile_updated(u) for u in ids[:40]] * 3)))
            assert status == 503
            health = await svc.health()
            assert health["apps"][APP]["inbox_depth"] == 0, health
            after = await stats(running)
            assert read_requests(after["okta"]) == read_requests(before["okta"])
            for target in TARGETS:
                assert write_requests(after[target]) == write_requests(before[target])
            await svc.stop()


def about_user(event_type: str, user_id: str) -> dict[str, Any]:
    """A LogEvent of ``event_type`` naming the user as its target."""
    return {**deactivated(user_id), "eventType": event_type}


@pytest.mark.asyncio
async def test_events_about_unknown_deleted_or_out_of_scope_users_write_nothing(
    tmp_path: Path,
) -> None:
    """Events are signals: what Okta says now decides. A user Okta never had, one deleted
    before anything synced them, one outside the app's scope: nothing is written anywhere,
    and the event run records what it looked at."""
    async with estate(users=60) as running:
        okta = running.okta.directory
        scoped = next(g for g in okta.groups.values() if g.type == "OKTA_GROUP")
        path, port = await synced_service_config(
            tmp_path, running, HOOKS + f'\nrequired_groups = ["{scoped.name}"]')
        members = okta.member_ids(scoped)
        outside = next(u for u in okta.iter_users()
                       if u.status == "ACTIVE" and u.id not in members)
        okta.update_profile(outside.id, {"displayName": "Out Of Scope"})
        gone = okta.add_user({"login": "gone@example.com", "email": "gone@example.com",
                              "firstName": "Gone", "lastName": "Soon"})
        okta.add_membership(scoped.id, gone.id)
        okta.delete_user(gone.id)
        okta.delete_user(gone.id)  # deactivated, then deleted
        events = [about_user("user.lifecycle.activate", "00unosuchuser0000x7"),
                  about_user("user.lifecycle.create", gone.id),
                  about_user("user.account.update_profile", outside.id)]
        before = await stats(running)
        async with service(path, port) as svc:
            status, _ = await svc.post(f"/hooks/okta/{APP}", data=json.dumps(delivery(*events)),
                                       headers=hook_headers())
            assert status == 200
            await svc.until(lambda h: h["apps"][APP]["events_synced"] == 3
                            and h["apps"][APP]["inbox_depth"] == 0)
            await svc.stop()
        after = await stats(running)
        for target in TARGETS:
            assert write_requests(after[target]) == write_requests(before[target]), target
        now = await states(running)
        for target in TARGETS:
            assert "gone" not in accounts(now, target)
            assert outside.login.split("@")[0].lower() not in accounts(now, target)
        last = json.loads((tmp_path / "state" / APP / "last-event-run.json").read_text())
        assert last["exit_code"] == 0, last
        assert sorted(last["users_not_in_okta"]) == sorted(["00unosuchuser0000x7", gone.id])
        assert outside.id in last["users_synced"]  # looked at; out of scope, so nothing written
