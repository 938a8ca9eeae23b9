"""Input a target should never get, end to end: a 100,000-character display name reaches Jira
and Confluence shortened to what they hold (255), once, with a notice, and a second run finds
nothing to do; usernames with characters one cannot see or that reorder text are refused on
every target and reported per user. End states are the oracle's; counts are the emulators'.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import aiohttp
import pytest

from oktasync.engine import RunResult, SyncOptions, run_sync
from oktasync_emulators.runner import EmulatorOptions, running_emulators
from tests.engine import oracle
from tests.engine.harness import load, states, stats, write_config, write_counts

APP = "test-app"
TARGETS = ("jira", "confluence")
SETTINGS = oracle.Settings(default_groups={"jira": ("jira-software-users",),
                                           "confluence": ("confluence-users",)})
HUGE_NAME = "Hugh " + "Longname " * 11_111  # 100,004 characters
SPOOFING = {  # login -> what it hides
    "admin\u202e@example.com": "right-to-left override",
    "pay\u200bpal@example.com": "zero-width space",
    "ro\u2066ot\u2069@example.com": "bidi isolate",
    "mark\u200f@example.com": "right-to-left mark",
    "jo\u200dhn@example.com": "zero-width joiner",
    "c1\x9bcsi@example.com": "C1 control",
}


def quiet(*_: Any) -> None:
    """Summaries are checked through the run's result."""


async def add_okta_user(okta_url: str, profile: dict[str, str]) -> dict[str, Any]:
    async with aiohttp.ClientSession() as session, session.post(
            okta_url + "/_emulator/users", json={"profile": profile}) as response:
        assert response.status == 201, await response.text()
        answer: dict[str, Any] = await response.json()
        return answer


async def set_display_name(okta_url: str, user_id: str, name: str) -> None:
    async with aiohttp.ClientSession() as session, session.post(
            f"{okta_url}/_emulator/users/{user_id}/profile",
            json={"profile": {"displayName": name}}) as response:
        assert response.status == 200, await response.text()


def problems(result: RunResult, target: str, okta_id: str) -> list[dict[str, Any]]:
    return [p for p in result.summaries[APP]["targets"][target]["problems"]
            if p["okta_id"] == okta_id]


def failures(result: RunResult) -> list[dict[str, Any]]:
    return [p for t in TARGETS for p in result.summaries[APP]["targets"][t]["problems"]
            if p["kind"] in ("failed", "refused")]


def account(state: dict[str, Any], name: str) -> dict[str, Any] | None:
    return next((u for u in state["users"] if u["name"].lower() == name), None)


async def assert_oracle(running: Any, before: dict[str, Any]) -> dict[str, Any]:
    now = await states(running)
    for target in TARGETS:
        expected = oracle.expected_accounts(now["okta"], oracle.target_accounts(before[target]),
                                            target, SETTINGS)
        problems_found = oracle.differences(expected, oracle.target_accounts(now[target]))
        assert problems_found == [], f"{target}: {problems_found[:3]}"
    return now


@pytest.mark.asyncio
async def test_a_huge_display_name_is_written_shortened_once_and_spoofing_usernames_refused(
    tmp_path: Path,
) -> None:
    options = EmulatorOptions(users=40, groups=4, seed=11, ports=(0, 0, 0), okta_rate_scale=0)
    async with running_emulators(options) as running:
        hugh = await add_okta_user(running.okta_url, {
            "login": "hugh@example.com", "email": "hugh@example.com", "firstName": "Hugh",
            "lastName": "Longname", "displayName": HUGE_NAME})
        bell = await add_okta_user(running.okta_url, {
            "login": "bell@example.com", "email": "bell@example.com", "firstName": "Bell",
            "lastName": "Ring", "displayName": "Bell\x07 Ring\x1b[2J\nNew\x00Line"})
        spoofers = {login: await add_okta_user(running.okta_url, {
            "login": login, "email": f"spoof{i}@example.com", "firstName": "Spoof",
            "lastName": f"User{i}"}) for i, login in enumerate(SPOOFING)}
        before = await states(running)
        config = load(write_config(tmp_path, running))

        first = await run_sync(config, SyncOptions(), echo=quiet)
        assert first.exit_code == 0, failures(first)
        now = await assert_oracle(running, before)
        for target in TARGETS:
            written = account(now[target], "hugh")
            assert written is not None, target
            shown = written["displayName"]
            assert len(shown.encode("utf-16-le")) // 2 <= 255 and shown.endswith("…")
            assert HUGE_NAME.startswith(shown[:-1])
            [notice] = problems(first, target, hugh["id"])
            assert notice["kind"] == "notice" and "100,004" in notice["reason"], notice
            ring = account(now[target], "bell")
            assert ring is not None and ring["displayName"] == "Bell  Ring [2J New Line"
            for login, user in spoofers.items():
                name = oracle.username_of(login, SETTINGS.regex, SETTINGS.replacement)
                assert account(now[target], name) is None, (target, SPOOFING[login])
                [refused] = problems(first, target, user["id"])
                assert refused["kind"] == "skipped" and refused["login"] == login, refused
                assert not any(c in refused["reason"] for c in name if not c.isascii()), \
                    "the reason names the hidden character visibly"

        # a second run: nothing to write, nothing new to say about Hugh (no endless drift)
        counted = await stats(running)
        again = await run_sync(config, SyncOptions(), echo=quiet)
        assert again.exit_code == 0, failures(again)
        after = await stats(running)
        for target in TARGETS:
            assert write_counts(after[target]) == write_counts(counted[target]), target
            assert problems(again, target, hugh["id"]) == [], target
            assert problems(again, target, bell["id"]) == [], target
            assert again.summaries[APP]["targets"][target]["counts"]["drift"] == 0

        # Hugh's name changes in Okta to another huge one: Jira follows (shortened, noticed),
        # Confluence reports the drift it cannot repair
        await set_display_name(running.okta_url, hugh["id"], "Hugo " + "Other " * 20_000)
        before = await states(running)
        third = await run_sync(config, SyncOptions(), echo=quiet)
        assert third.exit_code == 0, failures(third)
        await assert_oracle(running, before)
        assert [p["kind"] for p in problems(third, "jira", hugh["id"])] == ["notice"]
        assert [p["kind"] for p in problems(third, "confluence", hugh["id"])] == ["drift"]
        assert third.summaries[APP]["targets"]["jira"]["counts"]["users_updated"] == 1
