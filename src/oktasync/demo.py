"""`oktasync demo`: the emulators, a full sync of 5,000 users into both targets, and a check.

The demo is the product's one-command tour: it starts the same emulators the tests use,
writes a configuration pointing at them (the same format an administrator writes), runs the
real engine, prints the summary, and then checks independently of the planner that every
target account now has the status and groups Okta says it should.

With ``cli._emulate``, the only engine module that imports the emulators (a distribution of
their own, absent from a production install): the CLI imports this module only when the demo
is asked for, and says how to install them when they are missing.
"""

from __future__ import annotations

import tempfile
import time
from collections import Counter
from pathlib import Path
from typing import Any

import anyio

from oktasync.config import AppConfig, Config, TargetConfig, load_config
from oktasync.engine import SyncOptions, run_sync
from oktasync.models import ACTIVE_STATUSES, name_key
from oktasync.targets import confluence, jira
from oktasync.text import shown
from oktasync_emulators.defaults import DEFAULT_PORTS
from oktasync_emulators.runner import EmulatorOptions, running_emulators

DEMO_CONFIG = """
[[app]]
name = "demo-okta"
okta_url = "{okta}"
okta_token = "{okta_token}"
username_regex = "(.*)@.*"
username_replacement = "$1"
targets = ["jira", "confluence"]

[target.jira]
kind = "jira-dc"
url = "{jira}"
token = "{jira_token}"
default_groups = ["jira-software-users"]
protected_users = ["admin"]

[target.confluence]
kind = "confluence-dc"
url = "{confluence}"
token = "{confluence_token}"
# Confluence refuses "+" in usernames: its own rule drops a "+tag" from the local part
# ("zoe+work@corp" -> "zoe"). Two people who then share a name are reported, never merged.
username_regex = "([^+@]*)(?:\\\\+[^@]*)?@.*"
username_replacement = "$1"
default_groups = ["confluence-users"]
protected_users = ["admin"]

[state]
dir = "{state}"
"""


def expected_problems(okta: dict[str, Any], target: dict[str, Any], app: AppConfig,
                      tc: TargetConfig) -> tuple[int, list[str]]:
    """Check one target against Okta: (accounts checked, problems)."""
    kind, default_groups, rule = tc.kind, tc.default_groups, app.rule_for(tc)
    forbidden = (jira.forbidden_username if kind == "jira-dc"
                 else confluence.forbidden_username)
    group_forbidden = (jira.forbidden_group if kind == "jira-dc"
                       else confluence.forbidden_group)
    scoped = {g["id"]: app.target_group_name(g["profile"]["name"]) for g in okta["groups"]
              if app.group_in_scope(g["profile"]["name"], g["type"])
              and group_forbidden(app.target_group_name(g["profile"]["name"])) is None}
    groups_of: dict[str, set[str]] = {}
    for gid, members in okta["memberships"].items():
        for uid in members if gid in scoped else ():
            groups_of.setdefault(uid, set()).add(name_key(scoped[gid]))
    accounts = {name_key(u["name"]): u for u in target["users"]}
    member_of: dict[str, set[str]] = {}
    for group in target["groups"]:
        for member in group["members"]:
            member_of.setdefault(name_key(member), set()).add(name_key(group["name"]))
    names = {u["id"]: rule.username(u["profile"]["login"], u["profile"].get("email"))
             for u in okta["users"]}
    counts = Counter(names.values())
    checked, problems = 0, []
    for user in okta["users"]:
        name = names[user["id"]]
        if (counts[name] > 1 or not name or forbidden(name) is not None
                or name == "admin" or not user["profile"].get("email")):
            continue
        account, active = accounts.get(name), user["status"] in ACTIVE_STATUSES
        checked += 1
        if account is None:
            if active:
                problems.append(f"{name}: missing")
            continue
        if bool(account["active"]) != active:
            problems.append(f"{name}: active is {account['active']}, Okta says {active}")
        if active:
            wanted = groups_of.get(user["id"], set()) | {name_key(g) for g in default_groups}
            scope = {name_key(n) for n in scoped.values()}
            have = member_of.get(name, set())
            if wanted - have or (have & scope) - wanted:
                problems.append(f"{name}: groups differ from Okta")
    return checked, problems


def _write_config(folder: Path, running: Any) -> Path:
    info = running.info()
    path = folder / "demo.toml"
    path.write_text(DEMO_CONFIG.format(
        okta=info["okta"]["url"], okta_token=info["okta"]["token"],
        jira=info["jira"]["url"], jira_token=info["jira"]["token"],
        confluence=info["confluence"]["url"], confluence_token=info["confluence"]["token"],
        state=(folder / "state").as_posix()), encoding="utf-8")
    path.chmod(0o600)  # it holds the emulators' tokens, written in it
    return path


def _check(config: Config, running: Any) -> bool:
    app = config.apps[0]
    okta = running.okta.directory.state_json()
    ok = True
    for name, emulator in (("jira", running.jira), ("confluence", running.confluence)):
        tc = config.targets[name]
        checked, problems = expected_problems(okta, emulator.state(), app, tc)
        verdict = "matches Okta" if not problems else f"{len(problems)} MISMATCHES"
        print(f"check {name}: {checked} Okta users checked (status and groups): {verdict}")
        for problem in problems[:10]:
            print(f"  - {shown(problem)}")
        ok = ok and not problems
    return ok


def _change_a_few(running: Any) -> str:
    """What an administrator does in Okta between two syncs; the second sync reads only
    these changes (an incremental sync), and the check judges the whole directory again."""
    directory = running.okta.directory
    active = [u for u in directory.state_json()["users"] if u["status"] == "ACTIVE"]
    directory.set_status(active[0]["id"], "SUSPENDED")
    directory.update_profile(active[1]["id"], {"displayName": "Renamed In Okta"})
    directory.add_user({"login": "new.hire@example.com", "email": "new.hire@example.com",
                        "firstName": "New", "lastName": "Hire"})
    return "1 user suspended, 1 display name changed, 1 user added"


async def run_demo(users: int, groups: int, keep_running: bool) -> int:
    """Emulators up, a full sync, a check; a few changes in Okta, an incremental sync, a
    check; 0 when both targets match Okta both times."""
    ports = DEFAULT_PORTS if keep_running else (0, 0, 0)
    options = EmulatorOptions(users=users, groups=groups, ports=ports, okta_rate_scale=0)
    print(f"starting emulators: Okta with {users} users and {groups} groups, Jira, Confluence")
    with tempfile.TemporaryDirectory(prefix="oktasync-demo-") as tmp:
        async with running_emulators(options) as running:
            config = load_config(_write_config(Path(tmp), running))
            started = time.monotonic()
            result = await run_sync(config, SyncOptions())
            print(f"full sync finished in {time.monotonic() - started:.1f}s, "
                  f"exit code {result.exit_code}")
            ok = _check(config, running)
            print(f"in Okta meanwhile: {_change_a_few(running)}")
            started = time.monotonic()
            again = await run_sync(config, SyncOptions())
            print(f"incremental sync finished in {time.monotonic() - started:.1f}s, "
                  f"exit code {again.exit_code}")
            ok = _check(config, running) and ok and again.exit_code in (0, 1)
            if keep_running:
                print(f"emulators keep running: {running.info()}\n"
                      "point a config at them (see config/demo.toml) and run "
                      "`oktasync sync --config config/demo.toml`; Ctrl-C stops them")
                await anyio.sleep_forever()
    return 0 if ok and result.exit_code in (0, 1) else 1
