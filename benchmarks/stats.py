"""What the emulators saw: requests by kind, when a target was busy, and its end state.

Everything here reads an emulator's control surface (``/_emulator/stats``, ``/_emulator/state``),
which the emulators do not count as traffic, so watching a run does not change its figures.
"""

from __future__ import annotations

import itertools
import threading
import time
from dataclasses import dataclass, field
from typing import Any

from benchmarks.procs import EmulatorProcess, get_json

SERVICES = ("okta", "jira", "confluence")
TARGETS = ("jira", "confluence")


def kind_counts(service_stats: dict[str, Any]) -> dict[str, int]:
    """Requests one server saw, split into reads (GET) and writes (POST/PUT/DELETE)."""
    counts = {"reads": 0, "writes": 0}
    for endpoint, counters in service_stats.get("by_endpoint", {}).items():
        method = endpoint.split(" ", 1)[0]
        counts["reads" if method == "GET" else "writes"] += int(counters["requests"])
    return counts


def counts_by_service(stats: dict[str, Any]) -> dict[str, dict[str, int]]:
    """``kind_counts`` for every emulator in a ``EmulatorProcess.stats()`` answer."""
    return {service: kind_counts(stats[service]) for service in SERVICES}


def endpoint_requests(service_stats: dict[str, Any]) -> dict[str, int]:
    """``METHOD /route`` -> requests, for one server."""
    return {ep: int(c["requests"]) for ep, c in service_stats.get("by_endpoint", {}).items()}


def total_requests(counts: dict[str, dict[str, int]]) -> int:
    return sum(sum(kinds.values()) for kinds in counts.values())


def target_state(emu: EmulatorProcess, service: str) -> dict[str, Any]:
    """A target's accounts and memberships, without what differs by write order (keys)."""
    return normalize_state(get_json(emu.url(service) + "/_emulator/state", timeout_s=120.0))


def normalize_state(raw: dict[str, Any]) -> dict[str, Any]:
    """``/_emulator/state`` as usernames -> active, and groups -> sorted members."""
    users = {str(u["name"]): bool(u["active"]) for u in raw["users"]}
    groups = {str(g["name"]): sorted(str(m) for m in g["members"]) for g in raw["groups"]}
    return {"users": users, "groups": groups}


def state_differences(expected: dict[str, Any], actual: dict[str, Any]) -> list[str]:
    """Every way two ``target_state``s differ (usernames, active flags, groups, members)."""
    diffs: list[str] = []
    users_e, users_a = expected["users"], actual["users"]
    diffs += [f"user {u!r} missing" for u in sorted(users_e.keys() - users_a.keys())]
    diffs += [f"user {u!r} extra" for u in sorted(users_a.keys() - users_e.keys())]
    diffs += [
        f"user {u!r} active {users_a[u]}, expected {users_e[u]}"
        for u in sorted(users_e.keys() & users_a.keys())
        if users_e[u] != users_a[u]
    ]
    groups_e, groups_a = expected["groups"], actual["groups"]
    for group in sorted(groups_e.keys() | groups_a.keys()):
        members_e, members_a = set(groups_e.get(group, [])), set(groups_a.get(group, []))
        diffs += [f"{group!r}: member {m!r} missing" for m in sorted(members_e - members_a)]
        diffs += [f"{group!r}: member {m!r} extra" for m in sorted(members_a - members_e)]
    return diffs


@dataclass
class Activity:
    """When one server's request counter first and last moved (seconds from sampling start)."""

    first_s: float | None = None
    last_s: float | None = None
    requests: int = 0
    samples: list[tuple[float, int]] = field(default_factory=list)

    @property
    def window_s(self) -> float:
        if self.first_s is None or self.last_s is None:
            return 0.0
        return max(self.last_s - self.first_s, 1e-9)


class ActivitySampler:
    """Samples each target's request counter in a thread to find when it was busy.

    The busy window of a target is from the midpoint between the last sample before its
    counter moved and the first after, to the same midpoint at the end: accurate to half the
    interval, so a target's throughput is its requests over the time it was in use.
    """

    def __init__(self, emu: EmulatorProcess, interval_s: float = 0.1) -> None:
        self._urls = {s: emu.url(s) + "/_emulator/stats" for s in TARGETS}
        self._interval = interval_s
        self._stop = threading.Event()
        self._started = time.monotonic()
        self.activity = {s: Activity() for s in TARGETS}
        self._thread = threading.Thread(target=self._loop, daemon=True)

    def __enter__(self) -> ActivitySampler:
        self._started = time.monotonic()
        self._sample()
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join(30.0)
        self._sample()
        for activity in self.activity.values():
            _find_window(activity)

    def _loop(self) -> None:
        while not self._stop.wait(self._interval):
            self._sample()

    def _sample(self) -> None:
        for service, url in self._urls.items():
            requests = int(get_json(url)["requests"])
            now = time.monotonic() - self._started
            self.activity[service].samples.append((now, requests))


def _find_window(activity: Activity) -> None:
    """First and last movement of the counter, each at the midpoint of its two samples."""
    samples = activity.samples
    if len(samples) < 2 or samples[-1][1] == samples[0][1]:
        return
    base, final = samples[0][1], samples[-1][1]
    activity.requests = final - base
    for (t0, _), (t1, n1) in itertools.pairwise(samples):
        if n1 > base:
            activity.first_s = (t0 + t1) / 2
            break
    for (t0, n0), (t1, _) in itertools.pairwise(samples):
        if n0 >= final:
            break
        activity.last_s = (t0 + t1) / 2
