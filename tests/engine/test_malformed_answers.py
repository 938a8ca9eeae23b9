"""A 200 answer whose body is not what the API documents is never taken for data.

An HTML maintenance page, truncated JSON, a list where an object belongs, an empty body: each
is retried like a server error; if it persists, a listing fails (exit 4, nothing that removes
access written, the checkpoint kept) and a lookup fails for its user only (exit 1). The message
names the server, the saved summary tells the truth, and no traceback is printed.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from oktasync_emulators.runner import RunningEmulators
from tests.engine.harness import break_answers, states, stats, write_config
from tests.engine.test_resume import assert_oracle_state, finish, sync
from tests.engine.test_sync_behaviour import estate, ordinary, username

CASES = [
    ("okta", "GET /api/v1/users", "html", "Okta"),
    ("okta", "GET /api/v1/groups/{id}/users", "truncated", "Okta"),
    ("jira", "GET /rest/api/2/user/list", "truncated", "jira"),
    ("jira", "GET /rest/api/2/user/list", "wrong-type", "jira"),
    ("jira", "GET /rest/api/2/user/list", "empty", "jira"),
    ("jira", "GET /rest/api/2/serverInfo", "html", "jira"),
    ("confluence", "GET /rest/api/admin/users/list/active", "html", "confluence"),
]
# Each target request gives up after 8 attempts x timeout_s: keep that short in these tests
# (Okta's listings retry for their full patience, about 20 s).
QUICK = "timeout_s = 1"


def url_of(running: RunningEmulators, server: str) -> str:
    return {"okta": running.okta_url, "jira": running.jira_url,
            "confluence": running.confluence_url}[server]


@pytest.mark.asyncio
@pytest.mark.parametrize(("server", "endpoint", "mode", "named"), CASES,
                         ids=[f"{c[0]}-{c[1].split()[1]}-{c[2]}" for c in CASES])
async def test_a_listing_answered_with_a_broken_body_fails_cleanly_and_resumes(
    tmp_path: Path, server: str, endpoint: str, mode: str, named: str,
) -> None:
    async with estate(users=60) as running:
        before = await states(running)
        config = write_config(tmp_path, running, extra_jira=QUICK, extra_confluence=QUICK)
        await break_answers(url_of(running, server), endpoint, mode, times=None)
        code, out, err = await finish(await sync(config))
        served = await stats(running)
        assert served[server]["faults"]["altered"] > 1, "the broken answer was retried"
        assert code == 4, (code, out, err)
        assert "Traceback" not in err + out and "JSONDecodeError" not in err + out, err
        report = json.loads((tmp_path / "state" / "test-app" / "last-run.json").read_text())
        assert report["exit_code"] == 4, report["outcome"]
        said = " ".join(report["notes"])
        assert named in said and ("not JSON" in said or "expected" in said), said
        for target in ("jira", "confluence"):
            deletes = sum(v["requests"] for k, v in served[target]["by_endpoint"].items()
                          if k.startswith("DELETE"))
            assert deletes == 0, target

        async with __import__("aiohttp").ClientSession() as session, session.delete(
                url_of(running, server) + "/_emulator/answers") as response:
            assert response.status == 200
        code, _, err = await finish(await sync(config, "--resume"))
        assert code in (0, 1), err
        await assert_oracle_state(running, before)


@pytest.mark.asyncio
async def test_one_broken_answer_is_retried_and_the_run_goes_on(tmp_path: Path) -> None:
    async with estate(users=60) as running:
        before = await states(running)
        config = write_config(tmp_path, running)
        await break_answers(running.okta_url, "GET /api/v1/users", "html")
        await break_answers(running.jira_url, "GET /rest/api/2/user/list", "truncated")
        code, out, err = await finish(await sync(config))
        assert code == 0, (out, err)
        served = await stats(running)
        assert served["okta"]["faults"]["altered"] == 1
        assert served["jira"]["faults"]["altered"] == 1
        await assert_oracle_state(running, before)


@pytest.mark.asyncio
async def test_a_lookup_answered_with_html_fails_that_user_only(tmp_path: Path) -> None:
    async with estate(users=60) as running:
        okta = (await states(running))["okta"]
        # three active Okta users whose Confluence accounts are deactivated: missing from the
        # active-user listing, so the engine creates, meets 409 and looks each one up
        people = ordinary(okta)[:3]
        running.confluence.preload(users=[
            {"name": username(u), "email": u["profile"]["email"], "active": False,
             "displayName": "Someone"} for u in people])
        config = write_config(tmp_path, running, extra_confluence=QUICK)
        await break_answers(running.confluence_url, "GET /rest/api/user", "html", times=None)
        code, out, err = await finish(await sync(config))
        assert code == 1, (out, err)
        assert "Traceback" not in err + out
        report = json.loads((tmp_path / "state" / "test-app" / "last-run.json").read_text())
        failed = [p for p in report["targets"]["confluence"]["problems"]
                  if p["kind"] == "failed"]
        assert {p["okta_id"] for p in failed} == {u["id"] for u in people}
        assert all("confluence" in p["reason"] and "HTML" in p["reason"] for p in failed)
        # a lookup that failed is its own outcome, not a made-up failed create
        assert all(p["operation"] == "lookup" for p in failed), failed
        assert report["targets"]["jira"]["counts"]["failed"] == 0
        assert report["targets"]["confluence"]["counts"]["users_created"] > 40
