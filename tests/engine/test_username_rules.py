"""Each target may name accounts its own way: ``username_from = "email"``, or its own
``username_regex`` / ``username_replacement`` in ``[target.X]`` overriding the app's rule.

The point of a target's own rule: a target that refuses characters (Confluence: ``+``) need not
lose those users; the collisions a mapping causes are still detected and reported, never merged.
"""

from __future__ import annotations

from collections import Counter
from pathlib import Path

import pytest

from oktasync.engine import SyncOptions, run_sync
from tests.engine import oracle
from tests.engine.harness import load, states, write_config
from tests.engine.test_sync_behaviour import (
    APP,
    DEFAULT_GROUPS,
    assert_oracle,
    counts,
    estate,
    problems,
    quiet,
)

# Confluence's own rule: the local part without a "+tag" (a Java regex; "\\+" in TOML is "\+")
NO_TAG = "([^+@]*)(?:\\\\+[^@]*)?@.*"
SETTINGS = oracle.Settings(default_groups=DEFAULT_GROUPS, target_rules={
    "jira": ("email", None, "$1"),
    "confluence": ("login", "([^+@]*)(?:\\+[^@]*)?@.*", "$1"),
})


@pytest.mark.asyncio
async def test_targets_name_accounts_by_their_own_rules(tmp_path: Path) -> None:
    async with estate(users=200) as running:
        before = await states(running)
        okta = before["okta"]
        config = load(write_config(
            tmp_path, running, extra_jira='username_from = "email"',
            extra_confluence=f'username_regex = "{NO_TAG}"\nusername_replacement = "$1"'))
        result = await run_sync(config, SyncOptions(), echo=quiet)
        assert result.exit_code == 0, result.summaries[APP]["notes"]
        after = await assert_oracle(running, before, settings=SETTINGS)

        jira_names = {u["name"].lower() for u in after["jira"]["users"]}
        active = [u for u in okta["users"] if u["status"] == "ACTIVE" and u["profile"]["email"]]
        by_email = Counter(oracle.target_username(u, "jira", SETTINGS) for u in active)
        assert any(n in jira_names for n in by_email), "Jira accounts are named by e-mail"
        assert all("@" in n for n in jira_names - {"admin"})

        tagged = [u for u in active if "+" in u["profile"]["login"].split("@")[0]]
        assert tagged, "the directory has logins with a +tag"
        assert not any("contains +" in p["reason"]
                       for p in problems(result, "confluence", "skipped"))
        names = Counter(oracle.target_username(u, "confluence", SETTINGS)
                        for u in okta["users"])
        confluence_names = {u["name"].lower() for u in after["confluence"]["users"]}
        single = [u for u in tagged
                  if names[oracle.target_username(u, "confluence", SETTINGS)] == 1]
        assert single and all(oracle.target_username(u, "confluence", SETTINGS)
                              in confluence_names for u in single)
        # two people whose logins differ only by a +tag: both reported, neither written
        clashes = {n for n, c in names.items() if c > 1}
        assert clashes, "the mapping makes collisions in this directory"
        reported = {p["username"] for p in problems(result, "confluence", "collision")}
        assert clashes <= reported
        assert counts(result, "confluence")["collision"] >= 2 * len(clashes)

        again = await run_sync(config, SyncOptions(), echo=quiet)
        assert again.exit_code == 0
        for target in ("jira", "confluence"):
            assert counts(again, target)["users_created"] == 0, target
