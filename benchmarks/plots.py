"""``python -m benchmarks.plots``: the figures people would rather look at than read, as PNGs.

Drawn from the stored results only (``benchmarks/results/*.json``), never from a new run, so a
picture always matches the README's table; each PNG carries the machine, the date and the
command in its caption. Needs matplotlib (``pip install -e '.[bench]'``).

* ``figures/throughput_vs_concurrency.png`` (``high_bar``'s sweep): requests per second per
  target against the engine's per-target concurrency, with the latency floor
  ``concurrency / latency`` drawn in.
* ``figures/memory_vs_directory.png`` (``scale``): the engine's peak RSS and CPU per 1,000 users
  against the directory's size, with the 300 MB target.
* ``figures/okta_budget.png`` (``okta_bound``): the share of the app's Okta budget each
  rate-limit window used.
"""

from __future__ import annotations

import argparse
import json
import sys
import textwrap
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import matplotlib

matplotlib.use("Agg")  # files only, no display
import matplotlib.pyplot as plt
from matplotlib.figure import Figure

from benchmarks.framework import RESULTS_DIR
from benchmarks.machine import machine_summary

FIGURES_DIR = Path(__file__).resolve().parent / "figures"
TARGET_COLOURS = {"jira": "tab:blue", "confluence": "tab:orange"}


def _load(name: str, results_dir: Path) -> dict[str, Any] | None:
    path = results_dir / f"{name}.json"
    return json.loads(path.read_text(encoding="utf-8")) if path.exists() else None


def _caption(fig: Figure, result: dict[str, Any], commands: Sequence[str]) -> None:
    """Machine, date and the commands under the plot (wrapped to the figure's width)."""
    lines = [f"Machine: {machine_summary(result['machine'])}.  Date: {result['date']}.  "
             f"Results: benchmarks/results/{result['scenario']}.json"]
    if any(s.get("foreign_processes") for s in result.get("environment", {}).values()):
        lines.append("Other busy processes shared the CPUs meanwhile (listed in the JSON): "
                     "wall times and CPU-bound rates are worse than on an idle machine.")
    for command in commands:
        lines += textwrap.wrap(command, width=150, subsequent_indent="    ")
    fig.text(0.01, 0.01, "\n".join(lines), fontsize=7, family="monospace", va="bottom",
             ha="left", color="0.25")


def throughput_vs_concurrency(result: dict[str, Any], out: Path) -> Path:
    sweep = result["details"]["sweep"]
    points = sorted(sweep["points"].values(), key=lambda p: p["concurrency"])
    xs = [p["concurrency"] for p in points]
    extra = [r["concurrency"] for r in result["details"].get("runs", {}).values()]
    latency_ms = sweep["latency_ms"]
    fig, ax = plt.subplots(figsize=(9, 6.4))
    fig.subplots_adjust(bottom=0.27, top=0.9)
    ax.plot(xs, [p["floor_rps"] for p in points], "--", color="0.4",
            label=f"latency floor: concurrency ÷ {latency_ms} ms")
    for target, colour in TARGET_COLOURS.items():
        ys = [p["throughput_rps"][target] for p in points]
        ax.plot(xs, ys, "o-", color=colour, label=f"{target} (engine)")
        for x, y, p in zip(xs, ys, points, strict=True):
            if target == "jira":
                ax.annotate(f"{y / p['floor_rps']:.0%}", (x, y), textcoords="offset points",
                            xytext=(6, -12), fontsize=8, color=colour)
    for label, run in result["details"].get("runs", {}).items():
        for target, colour in TARGET_COLOURS.items():
            ax.plot(run["concurrency"], run["throughput_rps"][target], "s", color=colour,
                    mfc="none", ms=8,
                    label=(f"10,000 users / 200,000 memberships ({target})"
                           if label == "default" else None))
    ax.set_xscale("log", base=2)
    ax.set_yscale("log")
    ax.set_xticks(sorted({*xs, *extra}), [str(x) for x in sorted({*xs, *extra})])
    ax.set_xlabel("requests in flight per target (concurrency)")
    ax.set_ylabel("requests per second per target (over its busy time)")
    ax.set_title(f"Throughput against concurrency: full sync of {sweep['users']:,} users, "
                 f"{sweep['groups']} groups, {latency_ms} ms per request\n"
                 "(percentages: Jira's share of the floor)", fontsize=11)
    ax.grid(True, which="both", alpha=0.3)
    ax.legend(loc="upper left")
    first = points[0]["commands"]
    _caption(fig, result, [first[0], first[1].split("  #")[0] + "  # concurrency = N in both "
                           "[target.*], N = " + ", ".join(str(x) for x in xs)])
    path = out / "throughput_vs_concurrency.png"
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def _users_label(n: int) -> str:
    return f"{n // 1_000_000}M" if n >= 1_000_000 else f"{n // 1000}k"


def _users_axis(ax: Any, users: list[int], values: list[float], label: str) -> None:
    """A log axis of directory sizes, each point labelled with its value."""
    for x, y in zip(users, values, strict=True):
        ax.annotate(label.format(y), (x, y), textcoords="offset points", xytext=(-10, 8),
                    fontsize=9)
    ax.set_xscale("log")
    ax.set_xticks(users, [_users_label(u) for u in users])
    ax.minorticks_off()


def memory_vs_directory(result: dict[str, Any], out: Path) -> Path:
    sizes = sorted(result["details"]["sizes"].values(), key=lambda s: s["users"])
    users = [s["users"] for s in sizes]
    rss = [s["engine_peak_rss_mb"] for s in sizes]
    cpu = [s["engine_cpu_s_per_1000_users"] for s in sizes]
    fig, (left, right) = plt.subplots(1, 2, figsize=(11, 5.6))
    fig.subplots_adjust(bottom=0.25, top=0.86, wspace=0.28)
    left.plot(users, rss, "o-", color="tab:blue", label="engine peak RSS (wait4 ru_maxrss)")
    left.axhline(300, color="tab:red", ls="--", label="target at 1,000,000 users: < 300 MB")
    by_users = dict(zip(users, rss, strict=True))
    if 100_000 in by_users:
        left.axhline(1.5 * by_users[100_000], color="tab:purple", ls=":",
                     label=f"1.5 × the 100,000 figure ({1.5 * by_users[100_000]:.0f} MB)")
    _users_axis(left, users, rss, "{:.0f} MB")
    left.set_ylim(0, max([*rss, 300]) * 1.2)
    left.set_xlabel("Okta users (2,000 groups; targets hold half)")
    left.set_ylabel("MB")
    left.set_title("Engine peak memory")
    left.legend(loc="lower right", fontsize=8)
    if max(users) < 1_000_000:
        left.text(0.02, 0.97, "no 1,000,000-user point in this result\n(see benchmarks/README.md)",
                  transform=left.transAxes, va="top", fontsize=8, color="tab:red")
    left.grid(True, which="both", alpha=0.3)
    right.plot(users, cpu, "o-", color="tab:green")
    _users_axis(right, users, cpu, "{:.2f} s")
    right.set_ylim(0, max(cpu) * 1.3)
    right.set_xlabel("Okta users")
    right.set_ylabel("engine CPU seconds per 1,000 users")
    right.set_title("Engine CPU per 1,000 users")
    right.grid(True, which="both", alpha=0.3)
    fig.suptitle("Dry run (read and plan) against directory size, Okta limits off, lazy "
                 "emulator, --preload-fraction 0.5", fontsize=11)
    largest = sizes[-1]["commands"]
    _caption(fig, result, [*largest, f"(the same with --users {', '.join(map(str, users[:-1]))})"])
    path = out / "memory_vs_directory.png"
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def okta_budget(result: dict[str, Any], out: Path) -> Path:
    details = result["details"]
    buckets = [b for b in ("users", "group") if details["buckets"].get(b, {}).get("windows_all")]
    fig, axes = plt.subplots(1, len(buckets), figsize=(11, 5.2), squeeze=False)
    fig.subplots_adjust(bottom=0.24, top=0.84, wspace=0.25)
    for ax, bucket in zip(axes[0], buckets, strict=True):
        use = details["buckets"][bucket]
        budget = use["budget_per_window"]
        shares = [n / budget * 100 for n in use["windows_all"]]
        colours = ["0.75" if i in (0, len(shares) - 1) else "tab:blue"
                   for i in range(len(shares))]
        ax.bar(range(1, len(shares) + 1), shares, color=colours)
        ax.axhline(100, color="tab:red", ls="--", label="100% of the budget (never above)")
        ax.axhline(90, color="tab:green", ls=":", label="90% (target on average)")
        others = [b for b in buckets if b != bucket]
        if bucket == "users" and others:  # both listings start together; windows line up
            span = len(details["buckets"][others[0]]["windows_all"])
            ax.axvspan(0.5, span + 0.5, color="tab:orange", alpha=0.12,
                       label=f"{others[0]} listing still running (about)")
        ax.set_ylim(0, max([*shares, 100]) * 1.35)
        ax.set_xticks(range(1, len(shares) + 1))
        ax.tick_params(axis="x", labelsize=7)
        ax.set_xlabel(f"completed {details['window_s']} s window (grey: first, last; dropped)")
        ax.set_ylabel("requests let through / floor(limit × okta_max_share), %")
        ax.set_title(f"{bucket} bucket: budget {budget}/window, mean "
                     f"{use['mean_share']:.0%}, max {use['max_share']:.0%}", fontsize=10)
        ax.legend(loc="upper left", fontsize=8, ncol=1)
    fig.suptitle(f"Okta budget used by a dry run of {details['users']:,} users, "
                 f"{details['groups']:,} groups (okta_max_share = {details['okta_max_share']}; "
                 f"429s: {details['okta_rate_limited']})", fontsize=11)
    _caption(fig, result, result["figures"][0]["commands"])
    path = out / "okta_budget.png"
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


PLOTS = {"high_bar": throughput_vs_concurrency, "scale": memory_vs_directory,
         "okta_bound": okta_budget}


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.plots", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--results", type=Path, default=RESULTS_DIR)
    parser.add_argument("--out", type=Path, default=FIGURES_DIR)
    args = parser.parse_args(argv)
    args.out.mkdir(parents=True, exist_ok=True)
    for scenario, draw in PLOTS.items():
        result = _load(scenario, args.results)
        if result is None:
            print(f"{scenario}: no stored result, skipped", file=sys.stderr)
            continue
        print(draw(result, args.out))
    return 0


if __name__ == "__main__":
    sys.exit(main())
