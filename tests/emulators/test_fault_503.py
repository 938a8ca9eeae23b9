"""The injected 503 looks like what a load balancer sends: no Retry-After unless asked for.

A proxy or load balancer in front of Jira or Confluence that has no healthy node answers 503
without a Retry-After (HAProxy's and nginx's default pages carry none); an application that
knows how long it will be unavailable (maintenance) may send one. The emulators inject the
first by default and the second with ``--fail-retry-after SECONDS``, so the engine is tested
against both.
"""

from __future__ import annotations

import aiohttp
import pytest

from oktasync_emulators.cli import build_parser, options_from
from oktasync_emulators.runner import EmulatorOptions, running_emulators


async def first_answer(url: str, headers: dict[str, str]) -> tuple[int, dict[str, str], str]:
    async with aiohttp.ClientSession() as session, session.get(url, headers=headers) as resp:
        return resp.status, dict(resp.headers), await resp.text()


def auth(running_token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {running_token}"}


@pytest.mark.asyncio
@pytest.mark.parametrize(("retry_after", "expected"), [(None, None), (3, "3")])
async def test_injected_503_carries_retry_after_only_when_asked(
    retry_after: int | None, expected: str | None,
) -> None:
    options = EmulatorOptions(users=5, groups=2, ports=(0, 0, 0), okta_rate_scale=0,
                              fail_rate=1.0, fail_retry_after=retry_after)
    async with running_emulators(options) as running:
        for url, token in ((running.jira_url + "/rest/api/2/serverInfo", options.jira_token),
                           (running.confluence_url + "/rest/api/user/current",
                            options.confluence_token)):
            status, headers, body = await first_answer(url, auth(token))
            assert status == 503, (url, status, body)
            assert headers.get("Retry-After") == expected, (url, headers)
            assert not any(h.startswith("X-RateLimit") for h in headers), headers
        status, headers, _ = await first_answer(
            running.okta_url + "/api/v1/users?limit=1",
            {"Authorization": f"SSWS {options.okta_token}"})
        assert status == 503
        assert headers.get("Retry-After") == expected
        stats = running.jira.stats.to_json()
        assert stats["faults"]["unavailable"] == 1


def test_fail_retry_after_on_the_command_line() -> None:
    parser = build_parser()
    assert options_from(parser.parse_args(["--fail-rate", "0.05"])).fail_retry_after is None
    chosen = options_from(parser.parse_args(["--fail-rate", "0.05", "--fail-retry-after", "2"]))
    assert (chosen.fail_rate, chosen.fail_retry_after) == (0.05, 2)
    with pytest.raises(SystemExit):
        parser.parse_args(["--fail-retry-after", "-1"])
