"""What ``/metrics`` exposes (prometheus-client, one registry per service).

Fed from the runs' summaries (the same counts ``last-run.json`` has), so a metric and a report
never disagree: runs by kind and outcome; writes by target, operation and outcome; requests,
retries and 429s per server; the inboxes' depths; how long an event waited from being accepted
to being synced (a histogram per lane: sign-ins apart); the poller's lag; each app's last
success.
"""

from __future__ import annotations

import contextlib
from collections.abc import Mapping
from typing import Any

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest
from prometheus_client.exposition import CONTENT_TYPE_LATEST

from oktasync.errors import EXIT_OK

# fine below 2 s, where a sign-in's sync should land (the benchmark reads its percentiles
# from these, as Prometheus's histogram_quantile does)
LATENCY_BUCKETS = (0.025, 0.05, 0.075, 0.1, 0.15, 0.2, 0.25, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8, 0.9,
                   1.0, 1.25, 1.5, 1.75, 2.0, 2.5, 3.0, 4.0, 5.0, 7.5, 10.0, 15.0, 30.0, 60.0,
                   120.0, 300.0)
REQUEST_COUNTS = ("reads", "writes", "retries", "rate_limited")


class Metrics:
    def __init__(self) -> None:
        r = self.registry = CollectorRegistry()
        self._runs = Counter("oktasync_runs", "Sync runs by app, kind and outcome",
                             ["app", "kind", "outcome"], registry=r)
        self._success = Gauge("oktasync_last_success_timestamp_seconds",
                              "When each app's last successful run finished", ["app"], registry=r)
        self._seconds = Gauge("oktasync_last_run_seconds", "Wall time of each app's last run",
                              ["app", "kind"], registry=r)
        self._operations = Counter("oktasync_operations", "What runs did on each target, as "
                                   "their reports count it (users_created, memberships_added, "
                                   "failed, refused, conflict, ...)",
                                   ["app", "target", "count"], registry=r)
        self._requests = Counter("oktasync_requests", "Requests by server and what became of "
                                 "them (reads, writes, retries, rate_limited: 429s)",
                                 ["app", "server", "counter"], registry=r)
        self._accepted = Counter("oktasync_events_accepted", "Events kept in an app's inbox",
                                 ["app"], registry=r)
        self._depth = Gauge("oktasync_inbox_depth", "Events accepted and not yet synced",
                            ["app"], registry=r)
        self._latency = Histogram("oktasync_event_sync_latency_seconds",
                                  "From an event accepted to its sync done, per lane",
                                  ["app", "lane"], buckets=LATENCY_BUCKETS, registry=r)
        self._lag = Gauge("oktasync_poller_lag_seconds", "Seconds since the System Log poller "
                          "last read to the end of the log", ["app"], registry=r)
        self._key_days = Gauge("oktasync_target_key_expiry_days", "Days until a target's API "
                               "key expires (key_expires), from 30 days before", ["target"],
                               registry=r)

    def run(self, app: str, kind: str, code: int, seconds: float, summary: Mapping[str, Any],
            *, success: bool) -> None:
        self._runs.labels(app, kind, "ok" if code == EXIT_OK else f"exit {code}").inc()
        self._seconds.labels(app, kind).set(seconds)
        if success:
            self._success.labels(app).set_to_current_time()
        for server, counters in _servers(summary):
            for counter in REQUEST_COUNTS:
                amount = counters.get(counter, 0)
                if isinstance(amount, int) and amount:
                    self._requests.labels(app, server, counter).inc(amount)
        for target, entry in (summary.get("targets") or {}).items():
            for outcome, amount in (entry.get("counts") or {}).items():
                if isinstance(amount, int) and amount:
                    self._operations.labels(app, target, outcome).inc(amount)

    def events_accepted(self, app: str, count: int) -> None:
        self._accepted.labels(app).inc(count)

    def inbox_depth(self, app: str, depth: int) -> None:
        self._depth.labels(app).set(depth)

    def event_latency(self, app: str, priority: bool, seconds: float) -> None:
        self._latency.labels(app, "sign-in" if priority else "events").observe(seconds)

    def poller_lag(self, app: str, seconds: float) -> None:
        self._lag.labels(app).set(seconds)

    def key_expiry(self, target: str, days: int | None) -> None:
        """Days left on a target's key, shown from 30 days before; None: not shown."""
        if days is None:
            with contextlib.suppress(KeyError):  # never shown, or no longer
                self._key_days.remove(target)
        else:
            self._key_days.labels(target).set(days)

    def exposition(self) -> tuple[bytes, str]:
        return generate_latest(self.registry), CONTENT_TYPE_LATEST


def _servers(summary: Mapping[str, Any]) -> list[tuple[str, Mapping[str, Any]]]:
    servers: list[tuple[str, Mapping[str, Any]]] = []
    if isinstance(summary.get("okta"), Mapping):
        servers.append(("okta", summary["okta"]))
    for target, entry in (summary.get("targets") or {}).items():
        if isinstance(entry, Mapping) and isinstance(entry.get("requests"), Mapping):
            servers.append((target, entry["requests"]))
    return servers
