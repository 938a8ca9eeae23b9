"""The engine's requests, rebuilt for the bare load generator (``benchmarks.loadgen``).

Writes are the logical writes the engine made, read off the targets: every group, account and
membership in a target's end state that a fresh emulator did not have becomes the request the
engine sends for it (same method, path and body shape). Reads are the engine's reads per
endpoint, the same count each, on the same names (the groups in play, the usernames looked
up), in a first phase as the engine reads before it writes. Every request is tagged with its
``METHOD /route`` so the plan's counts per endpoint can be checked against the engine's.
"""

from __future__ import annotations

import secrets
from collections import Counter
from collections.abc import Callable, Iterator
from itertools import cycle, islice
from typing import Any
from urllib.parse import quote

from benchmarks.procs import EmulatorProcess, get_json
from benchmarks.stats import TARGETS

Request = dict[str, Any]
State = dict[str, Any]  # /_emulator/state of a Jira or Confluence emulator


def raw_state(emu: EmulatorProcess, service: str) -> State:
    return dict(get_json(emu.url(service) + "/_emulator/state", timeout_s=120.0))


def _seg(name: str) -> str:
    return quote(name, safe="")


def _new_users(before: State, after: State) -> list[dict[str, Any]]:
    known = {u["name"] for u in before["users"]}
    return [u for u in after["users"] if u["name"] not in known]


def _new_groups(before: State, after: State) -> list[str]:
    known = {g["name"] for g in before["groups"]}
    return [g["name"] for g in after["groups"] if g["name"] not in known]


def _new_memberships(before: State, after: State) -> list[tuple[str, str]]:
    known = {(g["name"], m) for g in before["groups"] for m in g["members"]}
    return [(g["name"], m) for g in after["groups"] for m in g["members"]
            if (g["name"], m) not in known]


def _jira_writes(before: State, after: State) -> list[list[Request]]:
    users = _new_users(before, after)
    return [
        [{"endpoint": "POST /rest/api/2/group", "method": "POST", "path": "/rest/api/2/group",
          "json": {"name": g}} for g in _new_groups(before, after)],
        [{"endpoint": "POST /rest/api/2/user", "method": "POST", "path": "/rest/api/2/user",
          "json": {"name": u["name"], "emailAddress": u["email"],
                   "displayName": u["displayName"], "password": secrets.token_urlsafe(32),
                   "notification": False}} for u in users],
        [{"endpoint": "POST /rest/api/2/group/user", "method": "POST",
          "path": "/rest/api/2/group/user", "params": {"groupname": g}, "json": {"name": m}}
         for g, m in _new_memberships(before, after)],
        [{"endpoint": "PUT /rest/api/2/user", "method": "PUT", "path": "/rest/api/2/user",
          "params": {"username": u["name"]}, "json": {"active": False}}
         for u in users if not u["active"]],
    ]


def _confluence_writes(before: State, after: State) -> list[list[Request]]:
    users = _new_users(before, after)
    return [
        [{"endpoint": "POST /rest/api/admin/group", "method": "POST",
          "path": "/rest/api/admin/group", "json": {"name": g}}
         for g in _new_groups(before, after)],
        [{"endpoint": "POST /rest/api/admin/user", "method": "POST",
          "path": "/rest/api/admin/user",
          "json": {"userName": u["name"], "fullName": u["displayName"], "email": u["email"],
                   "password": secrets.token_urlsafe(32)}} for u in users],
        [{"endpoint": "PUT /rest/api/user/{username}/group/{groupName}", "method": "PUT",
          "path": f"/rest/api/user/{_seg(m)}/group/{_seg(g)}"}
         for g, m in _new_memberships(before, after)],
        [{"endpoint": "PUT /rest/api/admin/user/{username}/disable", "method": "PUT",
          "path": f"/rest/api/admin/user/{_seg(u['name'])}/disable"}
         for u in users if not u["active"]],
    ]


def _names(first: list[str], pad: str) -> Iterator[str]:
    """The given names, then made-up ones that exist nowhere (a lookup answered 404)."""
    yield from first
    n = 0
    while True:
        n += 1
        yield f"{pad}{n}"


ReadMaker = Callable[[str], Request]

_READS: dict[str, ReadMaker] = {
    "GET /rest/api/2/serverInfo": lambda _: {"path": "/rest/api/2/serverInfo"},
    "GET /rest/api/2/user/list": lambda _: {
        "path": "/rest/api/2/user/list", "params": {"maxResults": "1000"}},
    "GET /rest/api/2/group/member": lambda g: {
        "path": "/rest/api/2/group/member",
        "params": {"groupname": g, "includeInactiveUsers": "true", "startAt": "0",
                   "maxResults": "50"}},
    "GET /rest/api/2/user": lambda u: {"path": "/rest/api/2/user", "params": {"username": u}},
    "GET /rest/api/group/{groupName}/member": lambda g: {
        "path": f"/rest/api/group/{_seg(g)}/member",
        "params": {"start": "0", "limit": "200", "expand": "status"}},
    "GET /rest/api/admin/users/list/active": lambda _: {
        "path": "/rest/api/admin/users/list/active", "params": {"start": "0", "limit": "1000"}},
    "GET /rest/api/user": lambda u: {
        "path": "/rest/api/user", "params": {"username": u, "expand": "status,email"}},
}


def _reads(endpoints: dict[str, int], before: State, after: State) -> list[Request]:
    """The engine's GETs, the same count per endpoint, on group names and usernames in play."""
    groups = [g["name"] for g in after["groups"]]
    users = [u["name"] for u in _new_users(before, after)]
    requests: list[Request] = []
    for endpoint, count in endpoints.items():
        method, _ = endpoint.split(" ", 1)
        if method != "GET":
            continue
        if endpoint not in _READS:
            raise RuntimeError(f"no replay for the engine's {endpoint}: teach benchmarks.replay")
        names = cycle(groups) if "group" in endpoint else _names(users, "absent.user")
        for name in islice(names, count):
            requests.append({"endpoint": endpoint, "method": "GET", **_READS[endpoint](name)})
    return requests


def target_phases(
    service: str, endpoints: dict[str, int], before: State, after: State
) -> list[list[Request]]:
    """Reads first, then the writes phase by phase (groups, users, memberships, disables)."""
    writes = _jira_writes if service == "jira" else _confluence_writes
    return [p for p in [_reads(endpoints, before, after), *writes(before, after)] if p]


def build_plan(
    emu: EmulatorProcess,
    engine_endpoints: dict[str, dict[str, int]],
    before: dict[str, State],
    after: dict[str, State],
    concurrency: int,
) -> dict[str, Any]:
    """The load generator's plan against ``emu`` (fresh emulators like the engine's)."""
    return {"targets": {
        service: {
            "base_url": emu.url(service),
            "headers": {"Authorization": f"Bearer {emu.info[service]['token']}",
                        "Accept": "application/json"},
            "concurrency": concurrency,
            "phases": target_phases(
                service, engine_endpoints[service], before[service], after[service]),
        }
        for service in TARGETS
    }}


def plan_counts(plan: dict[str, Any]) -> dict[str, dict[str, int]]:
    """Requests per ``METHOD /route`` per target in a plan."""
    return {
        service: dict(Counter(r["endpoint"] for phase in spec["phases"] for r in phase))
        for service, spec in plan["targets"].items()
    }
