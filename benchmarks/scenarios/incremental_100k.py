"""incremental_100k (issue 11): an incremental sync after 100 changes, next to a full sync of
the same directory, in one run on the same emulators.

100,000 users and 2,000 groups, 20 ms added to every request, Okta's limits off, both targets
already holding every account and membership (``--preload-fraction 1``: the first sync is a
full read that adopts them). Then, through the Okta emulator's control endpoints, the issue's
fixed mix of 100 changes: 40 profile edits, 20 status changes (10 deprovisioned, 10
suspended), 20 membership changes (10 added, 10 removed) in groups of more than 1,000
members, 10 renamed logins and 10 new users (each in one of those groups). Measured: the
incremental sync that follows (reads, writes, wall time); one more with nothing changed; and a
full sync afterwards, which must find nothing left to write (the incremental one wrote exactly
what the changes needed). Targets: under 1 % of the full sync's requests; exactly the writes
needed; under 10 s; nothing changed: at most 3 Okta requests and none to a target.
"""

from __future__ import annotations

import json
import re
import urllib.request
from pathlib import Path
from typing import Any

from benchmarks.engine import SyncRun, run_sync
from benchmarks.framework import Context, Figure, Outcome, Scenario, display_command
from benchmarks.procs import EmulatorProcess, get_json
from benchmarks.stats import SERVICES, kind_counts

NAME = "incremental_100k"
SIZES = {"full": (100_000, 2_000), "quick": (5_000, 100), "ci": (400, 8)}
LATENCY_MS = 20
BIG_GROUP = 1_000  # membership changes happen in groups larger than this (the largest at CI size)
_PLAIN = re.compile(r"^[a-z0-9._-]+$")
_DIRECT = urllib.request.build_opener(urllib.request.ProxyHandler({}))


def emulate_args(users: int, groups: int) -> list[str]:
    return ["--users", str(users), "--groups", str(groups), "--seed", "1",
            "--latency-ms", str(LATENCY_MS), "--okta-rate-scale", "0",
            "--preload-fraction", "1"]


def _control(url: str, method: str, body: dict[str, Any] | None = None) -> Any:
    data = json.dumps(body or {}).encode()
    request = urllib.request.Request(url, data=data, method=method,
                                     headers={"Content-Type": "application/json"})
    with _DIRECT.open(request, timeout=60) as response:
        return json.loads(response.read() or b"null")


def _ordinary(okta: dict[str, Any]) -> list[dict[str, Any]]:
    """Active users with a plain, unique username and an e-mail: every change lands alike on
    both targets."""
    names: dict[str, int] = {}
    for user in okta["users"]:
        name = user["profile"]["login"].split("@")[0].lower()
        names[name] = names.get(name, 0) + 1
    return [u for u in okta["users"] if u["status"] == "ACTIVE" and u["profile"].get("email")
            and names[u["profile"]["login"].split("@")[0].lower()] == 1
            and _PLAIN.match(u["profile"]["login"].split("@")[0].lower())]


def apply_mix(okta_url: str) -> dict[str, Any]:
    """The issue's 100 changes, made the way an administrator would (Okta's own APIs are
    emulated by the control endpoints, which write the System Log events Okta writes)."""
    okta = get_json(okta_url + "/_emulator/state", timeout_s=300.0)
    people = _ordinary(okta)
    groups = {g["id"]: g for g in okta["groups"]}
    big = sorted((gid for gid, members in okta["memberships"].items()
                  if groups.get(gid, {}).get("type") == "OKTA_GROUP"
                  and "/" not in groups[gid]["profile"]["name"]),
                 key=lambda gid: -len(okta["memberships"][gid]))[:4]
    big = [gid for gid in big if len(okta["memberships"][gid]) > BIG_GROUP] or big[:1]
    members = {gid: set(okta["memberships"][gid]) for gid in big}
    step = max(1, len(people) // 120)
    picked = people[::step]
    edits, statuses, movers = picked[0:40], picked[40:60], picked[60:70]
    chosen = {u["id"] for u in picked[0:70]}
    free = sorted(u["id"] for u in people if u["id"] not in chosen)
    for i, user in enumerate(edits):
        _control(f"{okta_url}/_emulator/users/{user['id']}/profile", "POST",
                 {"displayName": f"Edited Person {i}"})
    for i, user in enumerate(statuses):
        status = "DEPROVISIONED" if i < 10 else "SUSPENDED"
        _control(f"{okta_url}/_emulator/users/{user['id']}/status", "POST", {"status": status})
    for i, user in enumerate(movers):
        _control(f"{okta_url}/_emulator/users/{user['id']}/profile", "POST",
                 {"login": f"moved.person{i}@example.com"})
    for i in range(20):  # 10 leave a big group, 10 join one; each user changes once
        group = big[i % len(big)]
        leaving = i < 10
        user_id = next(u for u in free if (u in members[group]) == leaving)
        free.remove(user_id)
        _control(f"{okta_url}/_emulator/groups/{group}/members/{user_id}",
                 "DELETE" if leaving else "POST")
    added = removed = 10
    for i in range(10):
        new = _control(f"{okta_url}/_emulator/users", "POST", {"profile": {
            "login": f"new.hire{i}@example.com", "email": f"new.hire{i}@example.com",
            "firstName": "New", "lastName": f"Hire {i}"}})
        _control(f"{okta_url}/_emulator/groups/{big[i % len(big)]}/members/{new['id']}", "POST")
    return {"profile_edits": len(edits), "status_changes": len(statuses),
            "deprovisioned": 10, "memberships_added": added, "memberships_removed": removed,
            "logins_renamed": len(movers), "new_users": 10,
            "renamed": {u["id"]: u["profile"]["login"].split("@")[0].lower() for u in movers},
            "smallest_changed_group": min(len(members[g]) for g in big)}


def _spent(before: dict[str, Any], after: dict[str, Any]) -> dict[str, dict[str, int]]:
    spent = {}
    for service in SERVICES:
        a, b = kind_counts(after[service]), kind_counts(before[service])
        spent[service] = {k: a[k] - b[k] for k in a}
    return spent


def _total(spent: dict[str, dict[str, int]]) -> int:
    return sum(v for kinds in spent.values() for v in kinds.values())


def _landed(run: SyncRun) -> int:
    targets = run.last_run.get("targets", {})
    return sum(v for t in targets.values() for k, v in t["counts"].items()
               if k.startswith(("users_", "memberships_", "groups_")))


def _sync(emu: EmulatorProcess, folder: Path, before: dict[str, Any], *extra: str,
          small: bool = False) -> tuple[SyncRun, dict[str, dict[str, int]]]:
    """One sync; at the small sizes 100 changes are over the default full_sync_threshold
    (20 % of the users), which is raised so that they still run incremental."""
    threshold = 'full_sync_threshold = "60%"' if small else ""
    run = run_sync(emu, folder, extra=list(extra), timeout_s=3600.0, extra_app=threshold)
    if run.measured.exit_code != 0:
        raise RuntimeError(f"sync {extra} exited {run.measured.exit_code}; see {folder}")
    return run, _spent(before, run.stats)


def run(ctx: Context) -> Outcome:
    users, groups = ctx.pick(SIZES["full"], SIZES["quick"], SIZES["ci"])
    folder = ctx.scratch("runs")
    with EmulatorProcess(emulate_args(users, groups), log_dir=folder) as emu:
        emu.start(timeout_s=600.0)
        start = emu.stats()
        small = users < SIZES["full"][0]
        full, full_spent = _sync(emu, folder, start, small=small)
        cmd_full = display_command(full.measured.argv, ctx.work_dir)
        mix = apply_mix(emu.url("okta"))
        inc, inc_spent = _sync(emu, folder, full.stats, small=small)
        idle, idle_spent = _sync(emu, folder, inc.stats, small=small)
        check, check_spent = _sync(emu, folder, idle.stats, "--full", small=small)
        emu.stop()
    commands = [display_command(emu.argv, ctx.work_dir) + " &", cmd_full + "  # the first: full",
                "(100 changes through the Okta emulator's control endpoints)",
                cmd_full + "  # incremental (the default once a complete sync exists)"]
    full_total, inc_total = _total(full_spent), _total(inc_spent)
    share = inc_total / full_total if full_total else 0.0
    inc_writes = sum(inc_spent[t]["writes"] for t in ("jira", "confluence"))
    inc_reads = sum(k["reads"] for k in inc_spent.values())
    full_reads = sum(k["reads"] for k in full_spent.values())
    reads_share = inc_reads / full_reads if full_reads else 0.0
    figures = [
        Figure(f"full sync of {users:,} users: wall time", full.measured.wall_s, "s",
               commands[:2], note=_per_service(full_spent)),
        Figure("incremental sync after 100 changes: wall time", inc.measured.wall_s, "s",
               commands, "< 10 s", inc.measured.wall_s < 10.0, note=_per_service(inc_spent)),
        Figure("incremental sync: requests, share of the full sync's", share * 100, "%",
               commands, "< 1 %", share < 0.01,
               note=f"{inc_total:,} of {full_total:,} requests"),
        Figure("incremental sync: reads, share of the full sync's reads",
               reads_share * 100, "%", commands,
               note=f"{inc_reads:,} of {full_reads:,} reads; the writes are the same in both "
                    "kinds of run (the changes need them)"),
        Figure("incremental sync: writes sent beyond those that landed",
               inc_writes - _landed(inc), "writes", commands, "0", inc_writes == _landed(inc),
               note=f"{inc_writes} writes sent, {_landed(inc)} landed"),
        Figure("full sync afterwards: writes (what the incremental one left undone)",
               sum(check_spent[t]["writes"] for t in ("jira", "confluence")), "writes",
               [*commands, cmd_full + " --full"], "0",
               sum(check_spent[t]["writes"] for t in ("jira", "confluence")) == 0),
        Figure("incremental sync with nothing changed: Okta requests",
               idle_spent["okta"]["reads"] + idle_spent["okta"]["writes"], "requests",
               commands, "<= 3", idle_spent["okta"]["reads"] <= 3,
               note=f"target requests {_total(idle_spent) - sum(idle_spent['okta'].values())}"),
        Figure("incremental sync with nothing changed: wall time", idle.measured.wall_s, "s",
               commands),
    ]
    details = {"users": users, "groups": groups, "latency_ms": LATENCY_MS, "mix": mix,
               "requests": {"full": full_spent, "incremental": inc_spent, "idle": idle_spent,
                            "full_after": check_spent},
               "last_run": {"full": full.last_run, "incremental": inc.last_run,
                            "idle": idle.last_run, "full_after": check.last_run},
               "engine": {"full": full.measured.to_json(), "incremental": inc.measured.to_json(),
                          "idle": idle.measured.to_json()}}
    return Outcome(figures, details)


def _per_service(spent: dict[str, dict[str, int]]) -> str:
    return "; ".join(f"{s} {k['reads']:,} reads / {k['writes']:,} writes"
                     for s, k in spent.items())


SCENARIO = Scenario(NAME, "Incremental sync after 100 changes in 100,000 users, next to a full "
                          "sync, at 20 ms", run)
