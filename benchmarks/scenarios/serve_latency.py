"""serve_latency (issue 12): how soon `oktasync serve` has a signed-in user in both targets,
alone and behind 10,000 other events, and whether the service's memory stays flat across
1,000 scheduled incremental runs.

10,000 users and 100 groups, 20 ms added to every request, Okta's limits off, both targets
already holding every account (a full sync first). 2,000 new hires are created in Okta (each
in one group); the scenario then acts as Okta's event hook: it delivers one
``user.session.start`` per new hire, 1,000 of them spread over a minute, to
``POST /hooks/okta/APP``.

* (a) the sign-ins alone; (b) 10,000 profile events (100 deliveries of 100) delivered first,
  then the other 1,000 sign-ins over a minute. Measured: from each event accepted (committed
  to the inbox) to its sync done (both targets written), p50 / p95 / p99, read from the
  service's own histogram (``oktasync_event_sync_latency_seconds``, per lane) by linear
  interpolation within buckets, as Prometheus's ``histogram_quantile`` does. Targets: (a) p95
  under 1 s; (b) sign-ins p95 under 2 s (the priority lane). Every new hire must exist in both
  targets afterwards.
* (c) the service in one process (``benchmarks.serve_rss``) with a schedule of 0 s, its RSS
  after run 100 and after run 1,000 of 1,000 incremental runs. Target: within 10 %.
"""

from __future__ import annotations

import asyncio
import json
import random
import re
import socket
import sys
import time
import urllib.request
import uuid
from pathlib import Path
from typing import Any

import aiohttp

from benchmarks.engine import APP, run_sync, write_config
from benchmarks.framework import Context, Figure, Outcome, Scenario, display_command
from benchmarks.procs import EmulatorProcess, Spawned, get_json, oktasync_bin, run_measured

NAME = "serve_latency"
SIZES = {"full": (10_000, 100, 1_000, 60.0, 10_000, 1_000),
         "quick": (2_000, 40, 200, 20.0, 2_000, 200),
         "ci": (300, 10, 20, 2.0, 200, 20)}  # users, groups, sign-ins, spread, backlog, runs
LATENCY_MS = 20
SECRET = "bench-hook-secret"
_DIRECT = urllib.request.build_opener(urllib.request.ProxyHandler({}))
_BUCKET = re.compile(r'^oktasync_event_sync_latency_seconds_bucket\{app="[^"]+",'
                     r'lane="(?P<lane>[^"]+)",le="(?P<le>[^"]+)"\} (?P<n>[0-9.e+]+)$')


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def _control(url: str, body: dict[str, Any] | None = None, method: str = "POST") -> Any:
    request = urllib.request.Request(url, data=json.dumps(body or {}).encode(), method=method,
                                     headers={"Content-Type": "application/json"})
    with _DIRECT.open(request, timeout=60) as response:
        return json.loads(response.read() or b"null")


def _hires(okta_url: str, count: int) -> list[tuple[str, str]]:
    """New users in Okta, each in an ordinary group: (id, login)."""
    state = get_json(okta_url + "/_emulator/state", timeout_s=300.0)
    group = next(g["id"] for g in state["groups"] if g["type"] == "OKTA_GROUP"
                 and "/" not in g["profile"]["name"])
    hires = []
    for i in range(count):
        login = f"bench.hire{i}@example.com"
        user = _control(okta_url + "/_emulator/users", {"profile": {
            "login": login, "email": login, "firstName": "Bench", "lastName": f"Hire {i}"}})
        _control(f"{okta_url}/_emulator/groups/{group}/members/{user['id']}")
        hires.append((user["id"], login))
    return hires


def _event(kind: str, user_id: str, login: str) -> dict[str, Any]:
    event: dict[str, Any] = {"uuid": str(uuid.uuid4()), "eventType": kind, "version": "0",
                             "published": time.strftime("%Y-%m-%dT%H:%M:%S.000Z",
                                                        time.gmtime()),
                             "severity": "INFO", "outcome": {"result": "SUCCESS"}}
    if kind == "user.session.start":  # the user is the actor; no target
        event["actor"] = {"id": user_id, "type": "User", "alternateId": login}
    else:
        event["actor"] = {"id": "00uadmin", "type": "User"}
        event["target"] = [{"id": user_id, "type": "User", "alternateId": login}]
    return event


def _delivery(events: list[dict[str, Any]]) -> bytes:
    return json.dumps({"eventType": "com.okta.event_hook", "eventTypeVersion": "1.0",
                       "cloudEventsVersion": "0.1", "contentType": "application/json",
                       "eventId": str(uuid.uuid4()), "data": {"events": events}}).encode()


async def _deliver(base: str, bodies: list[bytes], spread_s: float) -> None:
    """Each body at a random moment within ``spread_s`` (sorted), as Okta would."""
    rng = random.Random(7)
    moments = sorted(rng.uniform(0, spread_s) for _ in bodies)
    started = time.monotonic()
    headers = {"Authorization": SECRET, "Content-Type": "application/json"}
    async with aiohttp.ClientSession() as http:
        async def one(body: bytes, at: float) -> None:
            await asyncio.sleep(max(0.0, started + at - time.monotonic()))
            async with http.post(f"{base}/hooks/okta/{APP}", data=body,
                                 headers=headers) as answer:
                if answer.status != 200:
                    raise RuntimeError(f"delivery answered {answer.status}")
        await asyncio.gather(*(one(b, at) for b, at in zip(bodies, moments, strict=True)))


def _wait_drained(base: str, synced: int, timeout_s: float) -> dict[str, Any]:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        health = get_json(base + "/healthz")
        entry = health["apps"][APP]
        if entry["inbox_depth"] == 0 and entry["events_synced"] >= synced:
            return dict(entry)
        time.sleep(0.2)
    raise RuntimeError(f"the inbox did not drain in {timeout_s:.0f}s: {health}")


def quantiles(metrics: str, lane: str) -> dict[str, float]:
    """p50, p95, p99 of one lane, interpolated within the histogram's buckets."""
    buckets = sorted((float(m["le"]), float(m["n"])) for line in metrics.splitlines()
                     if (m := _BUCKET.match(line)) and m["lane"] == lane)
    total = buckets[-1][1] if buckets else 0.0
    found: dict[str, float] = {"count": total}
    for name, q in (("p50", 0.50), ("p95", 0.95), ("p99", 0.99)):
        rank, low, below = q * total, 0.0, 0.0
        for le, count in buckets:
            if count >= rank:
                share = (rank - below) / (count - below) if count > below else 1.0
                found[name] = round(low + (le - low) * share, 3) if le != float("inf") \
                    else low
                break
            low, below = le, count
    return found


def _phase(folder: Path, config: Path, base: str, label: str,
           bodies_first: list[bytes], sign_ins: list[bytes], spread_s: float) -> str:
    """One service process: deliveries, drain, its /metrics, SIGTERM."""
    service = Spawned([oktasync_bin(), "serve", "--config", str(config)], log_dir=folder,
                      label=f"serve-{label}")
    deadline = time.monotonic() + 60
    while True:
        try:
            get_json(base + "/healthz", timeout_s=2.0)
            break
        except OSError:
            if time.monotonic() > deadline:
                raise
            time.sleep(0.1)
    if bodies_first:
        asyncio.run(_deliver(base, bodies_first, 0.5))
    asyncio.run(_deliver(base, sign_ins, spread_s))
    backlog = sum(len(json.loads(b)["data"]["events"]) for b in bodies_first)
    _wait_drained(base, backlog + len(sign_ins), timeout_s=1800.0)
    with _DIRECT.open(base + "/metrics", timeout=30) as answer:
        metrics = answer.read().decode()
    service.terminate()
    measured = service.wait(60.0)
    if measured.exit_code != 0:
        raise RuntimeError(f"serve exited {measured.exit_code}; see {folder}")
    return metrics


def run(ctx: Context) -> Outcome:
    users, groups, sign_ins, spread, backlog, runs = ctx.pick(
        SIZES["full"], SIZES["quick"], SIZES["ci"])
    folder = ctx.scratch("runs")
    args = ["--users", str(users), "--groups", str(groups), "--seed", "1", "--latency-ms",
            str(LATENCY_MS), "--okta-rate-scale", "0", "--preload-fraction", "1"]
    with EmulatorProcess(args, log_dir=folder) as emu:
        emu.start(timeout_s=600.0)
        port = _free_port()
        base = f"http://127.0.0.1:{port}"
        hooks = (f'changes = "hooks"\nokta_hook_secret = "{SECRET}"\n'
                 'schedule = "cron:0 0 1 1 *"\nreconcile_schedule = "cron:0 0 1 1 *"')
        serve = f'\n[serve]\nlisten = "127.0.0.1:{port}"\n'
        first = run_sync(emu, folder, extra_app=hooks, pipeline=serve, timeout_s=3600.0)
        if first.measured.exit_code != 0:
            raise RuntimeError(f"the first sync exited {first.measured.exit_code}")
        config = write_config(folder, emu, extra_app=hooks, pipeline=serve)
        hires = _hires(emu.url("okta"), 2 * sign_ins)
        alone = [_delivery([_event("user.session.start", *h)]) for h in hires[:sign_ins]]
        behind = [_delivery([_event("user.session.start", *h)]) for h in hires[sign_ins:]]
        state = get_json(emu.url("okta") + "/_emulator/state", timeout_s=300.0)
        ids = [(u["id"], u["profile"]["login"]) for u in state["users"]
               if u["status"] == "ACTIVE"]
        profile = [_event("user.account.update_profile", *ids[i % len(ids)])
                   for i in range(backlog)]
        first_bodies = [_delivery(profile[i:i + 100]) for i in range(0, backlog, 100)]
        a = quantiles(_phase(folder, config, base, "a", [], alone, spread), "sign-in")
        b_metrics = _phase(folder, config, base, "b", first_bodies, behind, spread)
        b, b_events = quantiles(b_metrics, "sign-in"), quantiles(b_metrics, "events")
        missing = _missing(emu, [login for _, login in hires])
        rss = _rss(folder, config, runs)
    serve_cmd = display_command([oktasync_bin(), "serve", "--config", str(config)],
                                ctx.work_dir)
    figures = [
        Figure(f"(a) {sign_ins} sign-ins over {spread:.0f} s: p50", a.get("p50", -1), "s",
               [serve_cmd]),
        Figure("(a) p95", a.get("p95", -1), "s", [serve_cmd], target="< 1 s",
               met=a.get("p95", 99) < 1.0),
        Figure("(a) p99", a.get("p99", -1), "s", [serve_cmd]),
        Figure(f"(b) behind {backlog} events: sign-ins p50", b.get("p50", -1), "s",
               [serve_cmd]),
        Figure("(b) sign-ins p95", b.get("p95", -1), "s", [serve_cmd], target="< 2 s",
               met=b.get("p95", 99) < 2.0),
        Figure("(b) sign-ins p99", b.get("p99", -1), "s", [serve_cmd]),
        Figure("(b) the other events p95", b_events.get("p95", -1), "s", [serve_cmd]),
        Figure("new hires missing from a target afterwards", missing, "users", [serve_cmd],
               target="0", met=missing == 0),
        Figure(f"(c) RSS after run {runs} vs run {runs // 10}", rss["growth_pct"], "%",
               [rss["command"]], target="within 10 %", met=abs(rss["growth_pct"]) <= 10.0,
               note=f"{rss['first_mb']:.1f} MB -> {rss['last_mb']:.1f} MB"),
    ]
    return Outcome(figures=figures, details={"a": a, "b": b, "b_events": b_events,
                                             "rss": rss, "first_sync": first.last_run})


def _missing(emu: EmulatorProcess, logins: list[str]) -> int:
    names = {login.split("@")[0].lower() for login in logins}
    missing = 0
    for target in ("jira", "confluence"):
        state = get_json(emu.url(target) + "/_emulator/state", timeout_s=300.0)
        have = {u["name"] for u in state["users"] if u.get("active")}
        missing += len(names - have)
    return missing


def _rss(folder: Path, config: Path, runs: int) -> dict[str, Any]:
    argv = [sys.executable, "-m", "benchmarks.serve_rss", "--config", str(config),
            "--runs", str(runs), "--out", str(folder / "rss.json")]
    measured = run_measured(argv, timeout_s=7200.0, log_dir=folder, label="serve-rss")
    if measured.exit_code != 0:
        raise RuntimeError(f"serve_rss exited {measured.exit_code}; see {folder}")
    found: dict[str, Any] = json.loads((folder / "rss.json").read_text(encoding="utf-8"))
    found["command"] = display_command(argv, folder)
    return found


SCENARIO = Scenario(NAME, "oktasync serve: sign-in latency and memory over many runs", run)
