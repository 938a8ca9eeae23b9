"""`oktasync sync-user` (issue 12): one user synced now, by Okta login, Okta id or a target
username; run as the real command line against the emulators."""

from __future__ import annotations

import asyncio
import sys
from pathlib import Path

import pytest

from tests.engine.harness import states, write_config
from tests.engine.test_hooks import accounts, new_hire, synced_once
from tests.engine.test_sync_behaviour import TARGETS, estate


async def sync_user(path: Path, who: str) -> tuple[int, str, str]:
    process = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "oktasync", "--log-format", "human", "sync-user", "--config",
        str(path), who, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE)
    out, err = await asyncio.wait_for(process.communicate(), timeout=60)
    assert process.returncode is not None
    return process.returncode, out.decode(), err.decode()


@pytest.mark.asyncio
async def test_sync_user_by_login_id_or_target_username(tmp_path: Path) -> None:
    async with estate(users=40) as running:
        path = write_config(tmp_path, running)
        first = next(iter(running.okta.directory.users.values()))
        code, _, err = await sync_user(path, first.login)
        assert code == 2 and "no complete sync yet" in err, err
        await synced_once(path)
        new_hire(running, "one.user@example.com")
        code, out, err = await sync_user(path, "one.user@example.com")
        assert code == 0, err
        assert "events sync" in out, out
        now = await states(running)
        assert all("one.user" in accounts(now, t) for t in TARGETS)

        person = next(u for u in now["okta"]["users"] if u["status"] == "ACTIVE"
                      and u["profile"]["login"] != "one.user@example.com")
        name = person["profile"]["login"].split("@")[0].lower()
        running.okta.directory.update_profile(person["id"], {"displayName": "By Username"})
        code, _, err = await sync_user(path, name)  # a username as the targets spell it
        assert code == 0, err
        assert accounts(await states(running), "jira")[name]["displayName"] == "By Username"

        running.okta.directory.set_status(person["id"], "SUSPENDED")
        code, _, err = await sync_user(path, person["id"])  # an Okta id
        assert code == 0, err
        assert not accounts(await states(running), "jira")[name]["active"]

        code, _, err = await sync_user(path, "nobody.at.all")
        assert code == 2 and "no Okta user" in err and "Traceback" not in err, err
