"""Okta -> Jira + Confluence the way an administrator would script it: one call at a time.

The official ``okta`` SDK reads the directory (users of every status, groups, members); the
``atlassian-python-api`` clients write: every Okta group (OKTA_GROUP and APP_GROUP) is created
in both products, then every active user is created in both and added to its groups and to
each product's default group. A write the server refuses ("already exists", a name it does not
accept) is logged and skipped, so one bad account does not stop the run. No existence checks
before writing (they would only add round trips): this is the lean version of the script.

    OKTA_TESTING_TESTINGDISABLEHTTPSCHECK=true python -m benchmarks.peers.sequential_sync \\
        --okta-url URL --okta-token T --jira-url URL --jira-token T \\
        --confluence-url URL --confluence-token T [--users-limit N]

The last line on stdout is a JSON summary (calls and refusals per kind, users done).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import re
import secrets
import sys
import time
from collections import Counter, defaultdict
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import quote

from atlassian import Confluence, Jira
from okta.client import Client as OktaClient
from okta.pagination import paginate_pages
from requests import HTTPError

STATUSES = ("ACTIVE", "PASSWORD_EXPIRED", "LOCKED_OUT", "RECOVERY", "STAGED", "PROVISIONED",
            "SUSPENDED", "DEPROVISIONED")
ACTIVE = frozenset(STATUSES[:4])  # the statuses in which a person may log in
ALL_STATUSES = " or ".join(f'status eq "{s}"' for s in STATUSES)
GROUP_TYPES = frozenset({"OKTA_GROUP", "APP_GROUP"})
USERNAME = re.compile(r"(.*)@.*")  # the engine's default: the login's part before the last @


@dataclass
class Person:
    username: str
    email: str
    display_name: str
    groups: list[str] = field(default_factory=list)


@dataclass
class Tally:
    calls: Counter[str] = field(default_factory=Counter)
    refused: Counter[str] = field(default_factory=Counter)

    def call(self, kind: str, fn: Callable[..., Any], *args: Any) -> None:
        """One REST call; a refusal (HTTP 4xx) is logged and counted, not fatal."""
        self.calls[kind] += 1
        try:
            fn(*args)
        except HTTPError as exc:
            self.refused[kind] += 1
            print(f"{kind} {args!r}: {exc}", file=sys.stderr)


def _value(status: Any) -> str:
    return str(getattr(status, "value", status))


def _group_name(group: Any) -> str:
    """The SDK wraps a group profile in an anyOf model: the name is on its actual instance."""
    return str(group.profile.actual_instance.name)


async def _all(method: Callable[..., Any], **kwargs: Any) -> list[Any]:
    return [item async for page, _, _ in paginate_pages(method, limit=200, **kwargs)
            for item in page]


async def read_okta(url: str, token: str) -> tuple[list[Any], dict[str, list[str]]]:
    """Every user (all statuses), and per group in scope the ids of its members."""
    client = OktaClient({"orgUrl": url, "token": token})
    users = await _all(client.list_users, search=ALL_STATUSES)
    groups = [g for g in await _all(client.list_groups) if _value(g.type) in GROUP_TYPES]
    members = {_group_name(g): [u.id for u in await _all(client.list_group_users, group_id=g.id)]
               for g in groups}
    return users, members


def people(users: list[Any], members: dict[str, list[str]]) -> list[Person]:
    """Active users with a username, each with the groups it belongs to."""
    groups_of: dict[str, list[str]] = defaultdict(list)
    for group, ids in members.items():
        for user_id in ids:
            groups_of[user_id].append(group)
    result = []
    for user in users:
        profile = user.profile
        match = USERNAME.fullmatch(profile.login or "")
        if _value(user.status) not in ACTIVE or match is None:
            continue
        name = profile.display_name or f"{profile.first_name} {profile.last_name}"
        result.append(Person(match.group(1), profile.email, name, groups_of[user.id]))
    return result


def write(args: argparse.Namespace, groups: list[str], persons: list[Person]) -> Tally:
    jira = Jira(url=args.jira_url, token=args.jira_token)
    confluence = Confluence(  # type: ignore[no-untyped-call]  # the library is untyped here
        url=args.confluence_url, token=args.confluence_token)
    tally = Tally()
    for group in groups:
        tally.call("jira create group", jira.create_group, group)
        tally.call("confluence create group", confluence.create_group, group)
    for p in persons:
        tally.call("jira create user", jira.user_create, p.username, p.email, p.display_name,
                   secrets.token_urlsafe(24), False)
        for group in [*p.groups, args.jira_default_group]:
            tally.call("jira add member", jira.add_user_to_group, p.username, group)
        tally.call("confluence create user", confluence.post, "rest/api/admin/user",
                   {"userName": p.username, "fullName": p.display_name, "email": p.email,
                    "password": secrets.token_urlsafe(24)})
        for group in [*p.groups, args.confluence_default_group]:
            tally.call("confluence add member", confluence.put,
                       f"rest/api/user/{quote(p.username, safe='')}/group/{quote(group, safe='')}")
    return tally


def parse(argv: list[str]) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    for name in ("okta-url", "okta-token", "jira-url", "jira-token", "confluence-url",
                 "confluence-token"):
        parser.add_argument(f"--{name}", required=True)
    parser.add_argument("--jira-default-group", default="jira-software-users")
    parser.add_argument("--confluence-default-group", default="confluence-users")
    parser.add_argument("--users-limit", type=int, default=0,
                        help="write only the first N active users (0: all)")
    return parser.parse_args(argv)


def main(argv: list[str]) -> int:
    args = parse(argv)
    started = time.monotonic()
    users, members = asyncio.run(read_okta(args.okta_url, args.okta_token))
    persons = people(users, members)
    if args.users_limit:
        persons = persons[: args.users_limit]
    read_s = time.monotonic() - started
    tally = write(args, list(members), persons)
    summary = {"okta_users": len(users), "groups": len(members), "persons_written": len(persons),
               "read_s": round(read_s, 3), "wall_s": round(time.monotonic() - started, 3),
               "calls": dict(tally.calls), "refused": dict(tally.refused)}
    print(json.dumps(summary))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
