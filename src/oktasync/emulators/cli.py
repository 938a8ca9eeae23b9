"""`oktasync emulate`: the three emulators as one long-running process.

Contract with scripts and benchmarks: once all three listen, the FIRST line of stdout is one
JSON object saying where they are and how to sign in, flushed; all logging goes to stderr.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from typing import TYPE_CHECKING

import structlog

from oktasync.emulators.defaults import (
    DEFAULT_HOST,
    DEFAULT_PORTS,
    DEMO_ADMIN_PASSWORD,
    DEMO_CONFLUENCE_TOKEN,
    DEMO_JIRA_TOKEN,
    DEMO_OKTA_TOKEN,
)

if TYPE_CHECKING:
    from oktasync.emulators.atlassian_base import AtlassianRate
    from oktasync.emulators.runner import EmulatorOptions

# The emulators themselves (and aiohttp.web) are imported where they are used: every
# `oktasync` command builds this parser, and `oktasync sync` should not pay for them.

log = structlog.get_logger("oktasync.emulate")


def _share(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a number between 0 and 1, got {text!r}") \
            from None
    if not 0 <= value <= 1:
        raise argparse.ArgumentTypeError(f"must be between 0 and 1, got {value}")
    return value


def _non_negative(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a number, got {text!r}") from None
    if value < 0:
        raise argparse.ArgumentTypeError(f"must not be negative, got {value}")
    return value


def _count(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a whole number, got {text!r}") from None
    if value < 0:
        raise argparse.ArgumentTypeError(f"must not be negative, got {value}")
    return value


def _ports(text: str) -> tuple[int, int, int]:
    parts = text.split(",")
    try:
        ports = tuple(int(p) for p in parts)
    except ValueError:
        ports = ()
    if len(ports) != 3 or not all(0 <= p <= 65535 for p in ports):
        raise argparse.ArgumentTypeError(
            f"expected OKTA,JIRA,CONFLUENCE ports (0 picks a free one), got {text!r}")
    return ports[0], ports[1], ports[2]


def _rate(text: str) -> AtlassianRate:
    from oktasync.emulators.atlassian_base import AtlassianRate

    try:
        return AtlassianRate.parse(text)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(
            f"expected CAPACITY/FILL/INTERVAL such as 20/100/1, got {text!r} ({exc})") from None


def add_emulate_arguments(parser: argparse.ArgumentParser) -> None:
    add = parser.add_argument
    add("--users", type=_count, default=1000, help="Okta users to generate (default 1000)")
    add("--groups", type=_count, default=40, help="Okta groups to generate (default 40)")
    add("--memberships", type=_count, default=None,
        help="total group memberships to generate (default: about 3 per user)")
    add("--seed", type=int, default=1, help="seed of the generated directory (default 1)")
    add("--latency-ms", type=_non_negative, default=0.0, help="added to every request")
    add("--okta-rate-scale", type=_non_negative, default=1.0,
        help="multiply Okta's rate limits (0 turns them off; default 1: Workforce numbers)")
    add("--okta-window-s", type=_non_negative, default=60.0,
        help="Okta rate-limit window in seconds; buckets scale with it (default 60)")
    add("--atlassian-rate", type=_rate, default=None, metavar="CAPACITY/FILL/INTERVAL",
        help="token-bucket rate limiting on Jira and Confluence (default off)")
    add("--fail-rate", type=_share, default=0.0, help="share of requests answered 503")
    add("--fail-retry-after", type=_count, default=None, metavar="SECONDS",
        help="send Retry-After: SECONDS with those 503s (default: none, as a load balancer)")
    add("--ambiguous-rate", type=_share, default=0.0,
        help="share of writes applied, then answered 504")
    add("--host", default=DEFAULT_HOST, help=f"address to bind (default {DEFAULT_HOST})")
    default_ports = ",".join(map(str, DEFAULT_PORTS))
    add("--ports", type=_ports, default=DEFAULT_PORTS, metavar="OKTA,JIRA,CONFLUENCE",
        help=f"ports (default {default_ports}; 0 picks a free one)")
    add("--okta-token", default=DEMO_OKTA_TOKEN, help="the SSWS token Okta accepts")
    add("--admin-password", default=DEMO_ADMIN_PASSWORD, help="Jira/Confluence admin password")
    add("--jira-token", default=DEMO_JIRA_TOKEN, help="Jira personal access token")
    add("--confluence-token", default=DEMO_CONFLUENCE_TOKEN,
        help="Confluence personal access token")
    add("--jira-version", default="10.3.4", help="Jira version to emulate (default 10.3.4)")
    add("--confluence-seats", type=_count, default=None, help="Confluence licence seats")
    add("--okta-search-lag-s", type=_non_negative, default=0.0,
        help="Okta search results lag changes by this much")
    add("--confluence-index-lag-s", type=_non_negative, default=0.0,
        help="Confluence's active-user listing lags changes by this much")
    add("--lazy", action="store_true",
        help="generate Okta users from the seed as they are read instead of holding them "
             "(for 1,000,000 users; the Okta directory is then read-only)")
    add("--preload-fraction", type=_share, default=0.0, metavar="F",
        help="Jira and Confluence start with this share of the active Okta users' accounts "
             "and memberships, as the demo config would sync them (default 0)")


def options_from(args: argparse.Namespace) -> EmulatorOptions:
    from oktasync.emulators.runner import EmulatorOptions

    return EmulatorOptions(
        users=args.users, groups=args.groups, seed=args.seed, memberships=args.memberships,
        latency_ms=args.latency_ms, okta_rate_scale=args.okta_rate_scale,
        okta_window_s=args.okta_window_s, atlassian_rate=args.atlassian_rate,
        fail_rate=args.fail_rate, fail_retry_after=args.fail_retry_after,
        ambiguous_rate=args.ambiguous_rate, host=args.host,
        ports=args.ports, okta_token=args.okta_token, admin_password=args.admin_password,
        jira_token=args.jira_token, confluence_token=args.confluence_token,
        jira_version=args.jira_version, confluence_seats=args.confluence_seats,
        okta_search_lag_s=args.okta_search_lag_s,
        confluence_index_lag_s=args.confluence_index_lag_s,
        lazy=args.lazy, preload_fraction=args.preload_fraction,
    )


async def run_emulate(args: argparse.Namespace) -> int:
    """Start, print the JSON line, serve until cancelled (SIGINT/SIGTERM)."""
    import anyio

    from oktasync.emulators.runner import running_emulators

    options = options_from(args)
    started = time.monotonic()
    try:
        async with running_emulators(options) as running:
            sys.stdout.write(json.dumps(running.info()) + "\n")
            sys.stdout.flush()
            log.info("emulators listening", seconds=round(time.monotonic() - started, 2),
                     okta=running.okta_url, jira=running.jira_url,
                     confluence=running.confluence_url, users=options.users,
                     lazy=options.lazy, preload_fraction=options.preload_fraction)
            await anyio.sleep_forever()
    except OSError as exc:
        print(f"oktasync emulate: cannot listen on {options.host} ports "
              f"{','.join(map(str, options.ports))}: {exc.strerror or exc}", file=sys.stderr)
        return 2
    return 0
