"""D. rate_bound (issue 5, scenario 2): the latency-bound directory behind token buckets.

Jira and Confluence each allow a burst of 20 requests and 100 per second after it
(``--atlassian-rate 20/100/1``; the emulator adds one token every interval/fill, as Atlassian's
KB describes), with 20 ms on every request and Okta's limits off as in ``latency_bound``. No
client can finish a target faster than ``(requests it must let through - 20) / 100`` seconds,
so the floor of the whole sync is the largest of those; the engine should come within 10 % of
it and get (almost) no 429s, pacing itself by the servers' ``X-RateLimit-*`` headers.
"""

from __future__ import annotations

from benchmarks.framework import Context, Figure, Outcome, Scenario
from benchmarks.runs import Observed, emulate_args, run_engine
from benchmarks.stats import TARGETS

NAME = "rate_bound"
USERS, GROUPS, QUICK_USERS, QUICK_GROUPS = 2_000, 100, 300, 20
CI_SIZE = (60, 5)
LATENCY_MS, CAPACITY, FILL_PER_S = 20, 20, 100
WALL_TARGET, LIMITED_TARGET = 1.10, 0.01


def _emu_args(users: int, groups: int) -> list[str]:
    return emulate_args(users, groups, "--latency-ms", str(LATENCY_MS), "--okta-rate-scale", "0",
                        "--atlassian-rate", f"{CAPACITY}/{FILL_PER_S}/1")


def _needed(o: Observed, service: str) -> int:
    """Requests the server had to let through: all of them but the 429s."""
    return o.requests(service) - int(o.stats[service]["rate_limited"])


def _floor_s(o: Observed, service: str) -> float:
    return max(0, _needed(o, service) - CAPACITY) / FILL_PER_S


def _floor_figures(o: Observed) -> list[Figure]:
    figures = []
    for s in TARGETS:
        busy = o.activity[s].window_s
        figures.append(Figure(
            f"{s}: floor (needed - {CAPACITY}) / {FILL_PER_S}/s", _floor_s(o, s), "s",
            o.commands, note=f"{_needed(o, s):,} needed of {o.requests(s):,} sent; busy "
                             f"{busy:.1f} s, {busy / _floor_s(o, s):.3f}× its floor"))
    return figures


def _wall_figures(o: Observed) -> list[Figure]:
    floor = max(_floor_s(o, s) for s in TARGETS)
    target = f"<= {WALL_TARGET:.2f}×"
    return [
        Figure(f"{name} / floor", wall / floor, "×", o.commands, target,
               wall / floor <= WALL_TARGET, note=f"{wall:.1f} s / {floor:.1f} s")
        for name, wall in (("process wall", o.measured.wall_s),
                           ("engine's own wall_time_s", o.engine_wall_s()))
    ]


def _limited_figures(o: Observed) -> list[Figure]:
    limited = sum(int(o.stats[s]["rate_limited"]) for s in TARGETS)
    requests = sum(o.requests(s) for s in TARGETS)
    share = limited / requests
    return [
        Figure("429s / requests to the targets", share * 100, "%", o.commands,
               f"< {LIMITED_TARGET:.0%}", share < LIMITED_TARGET,
               note=f"{limited:,} of {requests:,}"),
        Figure("engine CPU", o.measured.cpu_s, "s", o.commands,
               note=f"emulator CPU meanwhile {o.emulator_cpu_s:.1f} s"),
    ]


def run(ctx: Context) -> Outcome:
    users, groups = ctx.pick((USERS, GROUPS), (QUICK_USERS, QUICK_GROUPS), CI_SIZE)
    o = run_engine(ctx, NAME, "default", _emu_args(users, groups), sample=True)
    details = {"users": users, "groups": groups, "latency_ms": LATENCY_MS,
               "atlassian_rate": {"capacity": CAPACITY, "fill_per_s": FILL_PER_S},
               "run": o.to_json()}
    return Outcome(_floor_figures(o) + _wall_figures(o) + _limited_figures(o), details)


SCENARIO = Scenario(NAME, "Rate-bound sync: wall time against the token buckets' floor", run)
