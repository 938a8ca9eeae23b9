"""`oktasync-emulate` (and `oktasync emulate`): the three emulators as one long-running process.

Contract with scripts and benchmarks: once all three listen, the FIRST line of stdout is one
JSON object saying where they are and how to sign in, flushed; all logging goes to stderr.
SIGINT or SIGTERM stops them, exit 0; a port that cannot be listened on exits 2, and so do
TLS files that cannot be used and a mistake on the command line (argparse's own message).

This module is the emulators' whole command line, so `oktasync emulate` only hands its
arguments over (``main(argv, prog="oktasync emulate")``): the engine and the emulators share
no code, not even a parser.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import logging
import re
import signal
import sys
import time
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

from oktasync_emulators.defaults import (
    DEFAULT_HOST,
    DEFAULT_PORTS,
    DEMO_ADMIN_PASSWORD,
    DEMO_CONFLUENCE_TOKEN,
    DEMO_JIRA_TOKEN,
    DEMO_OKTA_TOKEN,
)

if TYPE_CHECKING:
    from oktasync_emulators.atlassian_base import AtlassianRate
    from oktasync_emulators.runner import EmulatorOptions

# The emulators themselves (and aiohttp.web) are imported where they are used, so a mistake
# on the command line and `--help` are answered without loading them.

log = logging.getLogger("oktasync_emulators.emulate")
PROG = "oktasync-emulate"
# What a terminal must not receive raw from a log line (a request path is the client's text):
# C0 and C1 controls, DEL, and the text-direction controls.
_UNPRINTABLE = re.compile("[\x00-\x1f\x7f-\x9f\u200e\u200f\u202a-\u202e\u2066-\u2069]")


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
    from oktasync_emulators.atlassian_base import AtlassianRate

    try:
        return AtlassianRate.parse(text)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(
            f"expected CAPACITY/FILL/INTERVAL such as 20/100/1, got {text!r} ({exc})") from None


def build_parser(prog: str = PROG) -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog=prog, description=(
        "Emulated Okta, Jira Data Center and Confluence Data Center, for trying oktasync "
        "out and for its tests. Prints one JSON line (where they listen, how to sign in), "
        "then serves until interrupted."))
    add = parser.add_argument
    add("-v", "--verbose", action="count", default=0, help="more log lines on stderr")
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
    add("--log-delay-ms", type=_non_negative, default=0.0,
        help="Okta System Log events become readable this long after they are published "
             "(default 0; POST /_emulator/logs/delay changes it while running)")
    add("--hook-ca-file", default=None, metavar="PEM",
        help="CA certificates the event hook deliveries trust, besides the system's "
             "(hook URIs are HTTPS only, as on Okta)")
    add("--hook-duplicate", type=_share, default=0.0, metavar="F",
        help="share of event hook deliveries sent twice (default 0)")
    add("--hook-reorder", action="store_true",
        help="shuffle the events in a delivery and let deliveries overtake each other")
    add("--hook-delay-s", type=_non_negative, default=0.0,
        help="extra delay before each event hook delivery (default 0)")
    add("--confluence-index-lag-s", type=_non_negative, default=0.0,
        help="Confluence's active-user listing lags changes by this much")
    add("--lazy", action="store_true",
        help="generate Okta users from the seed as they are read instead of holding them "
             "(for 1,000,000 users; the Okta directory is then read-only)")
    add("--preload-fraction", type=_share, default=0.0, metavar="F",
        help="Jira and Confluence start with this share of the active Okta users' accounts "
             "and memberships, as the demo config would sync them (default 0)")
    add("--tls-cert", default=None, metavar="PEM",
        help="serve HTTPS with this certificate chain (default: plain HTTP)")
    add("--tls-key", default=None, metavar="PEM",
        help="the private key of --tls-cert (default: in the --tls-cert file)")
    add("--tls-client-ca", default=None, metavar="PEM",
        help="mutual TLS: require a client certificate signed by these CAs (needs --tls-cert)")
    _add_oauth_arguments(parser)
    return parser


def _add_oauth_arguments(parser: argparse.ArgumentParser) -> None:
    """One Okta service app (OAuth 2.0, private_key_jwt); more via POST /_emulator/oauth/clients."""
    group = parser.add_argument_group(
        "Okta OAuth 2.0 service app",
        "register one app whose tokens Okta accepts besides the SSWS token "
        "(--oauth-client-id and --oauth-public-key go together)")
    add = group.add_argument
    add("--oauth-client-id", default=None, metavar="ID", help="the app's client id")
    add("--oauth-public-key", default=None, metavar="FILE",
        help="the app's public key: a PEM file or a JWK (JSON) file")
    add("--oauth-kid", default=None, metavar="KID",
        help="the key id assertions must name if they name one (default: the JWK's kid)")
    add("--oauth-scopes", default="okta.users.read okta.groups.read", metavar="SCOPES",
        help="space-separated scopes granted to the app "
             "(default: okta.users.read okta.groups.read)")
    add("--oauth-dpop", action="store_true", help="the app requires DPoP-bound tokens")
    add("--oauth-token-ttl-s", type=_positive, default=3600.0, metavar="SECONDS",
        help="access token lifetime (default 3600)")


def _positive(text: str) -> float:
    value = _non_negative(text)
    if value == 0:
        raise argparse.ArgumentTypeError("must be greater than 0")
    return value


def _oauth_clients(args: argparse.Namespace, parser: argparse.ArgumentParser) -> list[Any]:
    """The app the --oauth-* arguments describe (none without them); mistakes exit 2."""
    if args.oauth_client_id is None and args.oauth_public_key is None:
        return []
    if args.oauth_client_id is None or args.oauth_public_key is None:
        parser.error("--oauth-client-id and --oauth-public-key go together")
    from oktasync_emulators.oauth import OAuthClient, load_public_key

    try:
        with open(args.oauth_public_key, encoding="utf-8") as handle:
            material = handle.read()
        load_public_key(material)
    except (OSError, ValueError) as exc:
        parser.error(f"--oauth-public-key {args.oauth_public_key}: {exc}")
    return [OAuthClient(args.oauth_client_id, material, tuple(args.oauth_scopes.split()),
                        args.oauth_kid, args.oauth_dpop, args.oauth_token_ttl_s)]


def options_from(
    args: argparse.Namespace, parser: argparse.ArgumentParser | None = None
) -> EmulatorOptions:
    from oktasync_emulators.runner import EmulatorOptions

    return EmulatorOptions(
        users=args.users, groups=args.groups, seed=args.seed, memberships=args.memberships,
        latency_ms=args.latency_ms, okta_rate_scale=args.okta_rate_scale,
        okta_window_s=args.okta_window_s, atlassian_rate=args.atlassian_rate,
        fail_rate=args.fail_rate, fail_retry_after=args.fail_retry_after,
        ambiguous_rate=args.ambiguous_rate, host=args.host,
        ports=args.ports, okta_token=args.okta_token, admin_password=args.admin_password,
        jira_token=args.jira_token, confluence_token=args.confluence_token,
        jira_version=args.jira_version, confluence_seats=args.confluence_seats,
        okta_search_lag_s=args.okta_search_lag_s, okta_log_delay_ms=args.log_delay_ms,
        confluence_index_lag_s=args.confluence_index_lag_s,
        lazy=args.lazy, preload_fraction=args.preload_fraction,
        hook_ca_file=args.hook_ca_file, hook_duplicate=args.hook_duplicate,
        hook_reorder=args.hook_reorder, hook_delay_s=args.hook_delay_s,
        tls_cert=args.tls_cert, tls_key=args.tls_key, tls_client_ca=args.tls_client_ca,
        oauth_clients=_oauth_clients(args, parser or build_parser()),
    )


def main(argv: Sequence[str] | None = None, prog: str = PROG) -> int:
    """Parse, serve until SIGINT/SIGTERM; 0 when stopped that way, 2 when it cannot listen."""
    parser = build_parser(prog)
    args = parser.parse_args(argv)
    options = options_from(args, parser)
    if args.tls_cert is None and (args.tls_key is not None or args.tls_client_ca is not None):
        parser.error("--tls-key and --tls-client-ca need --tls-cert")
    configure_logging(args.verbose)
    try:
        return asyncio.run(serve(options, prog))
    except KeyboardInterrupt:  # before the handlers were in place: stopped all the same
        return 0


class _EscapingFormatter(logging.Formatter):
    """Log lines with control and text-direction characters escaped (``\\x1b``)."""

    def formatMessage(self, record: logging.LogRecord) -> str:
        return _UNPRINTABLE.sub(lambda m: ascii(m.group())[1:-1], super().formatMessage(record))


def configure_logging(verbose: int) -> None:
    """Logs on stderr, one line each; stdout carries the JSON line and nothing else."""
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(_EscapingFormatter("%(asctime)s %(levelname)s %(name)s: %(message)s",
                                            datefmt="%H:%M:%S"))
    level = logging.WARNING - 10 * verbose if verbose else logging.INFO
    logging.basicConfig(level=level, handlers=[handler], force=True)


async def serve(options: EmulatorOptions, prog: str = PROG) -> int:
    """Start, print the JSON line, serve until SIGINT or SIGTERM arrives."""
    from oktasync_emulators.runner import running_emulators

    try:
        options.server_ssl_context()
    except (OSError, ValueError) as exc:  # ssl.SSLError is an OSError
        print(f"{prog}: cannot serve HTTPS with {options.tls_cert}: {exc}", file=sys.stderr)
        return 2
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for signum in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(signum, stop.set)
    started = time.monotonic()
    try:
        async with running_emulators(options) as running:
            sys.stdout.write(json.dumps(running.info()) + "\n")
            sys.stdout.flush()
            log.info("emulators listening in %.2f s: okta %s, jira %s, confluence %s "
                     "(users=%d lazy=%s preload_fraction=%s)",
                     time.monotonic() - started, running.okta_url, running.jira_url,
                     running.confluence_url, options.users, options.lazy,
                     options.preload_fraction)
            await stop.wait()
    except OSError as exc:
        print(f"{prog}: cannot listen on {options.host} ports "
              f"{','.join(map(str, options.ports))}: {exc.strerror or exc}", file=sys.stderr)
        return 2
    finally:
        for signum in (signal.SIGINT, signal.SIGTERM):
            loop.remove_signal_handler(signum)
    return 0
