"""A bare aiohttp Okta client: pages through a listing the way any API client would.

Scenarios use it to load the Okta emulator without the engine in the way (the emulator's
memory after a full listing; later, a load generator to compare the engine with). It follows
``rel="next"`` Link headers, which is Okta's paging contract, and has a page cap so a server
that never stops paging cannot keep a benchmark running.
"""

from __future__ import annotations

import time
from collections import Counter
from dataclasses import dataclass, field
from urllib.parse import quote

import aiohttp

# Every user status: `filter` on status also returns DEPROVISIONED users, which a plain
# listing omits; a full listing must include them.
STATUSES = (
    "ACTIVE",
    "PASSWORD_EXPIRED",
    "LOCKED_OUT",
    "RECOVERY",
    "STAGED",
    "PROVISIONED",
    "SUSPENDED",
    "DEPROVISIONED",
)
ALL_USERS_FILTER = " or ".join(f'status eq "{s}"' for s in STATUSES)
USERS_PAGE = 200  # Okta's maximum page size for /api/v1/users
MAX_PAGES = 100_000  # 20M users at 200 a page: far beyond any scenario


@dataclass
class Listing:
    """What a full listing saw: how many items, by status, in how many pages and seconds."""

    items: int = 0
    pages: int = 0
    seconds: float = 0.0
    by_status: Counter[str] = field(default_factory=Counter)


def next_link(response: aiohttp.ClientResponse) -> str | None:
    """The ``rel="next"`` URL among the response's Link headers (Okta sends one per line)."""
    for rel in response.links.getall("next", []):
        url = rel.get("url")
        if url is not None:
            return str(url)
    return None


async def list_all_users(base_url: str, token: str, *, request_timeout_s: float = 120.0) -> Listing:
    """Page through every user (all statuses) with the SSWS token; raise on any non-200."""
    url: str | None = f"{base_url}/api/v1/users?limit={USERS_PAGE}&filter={quote(ALL_USERS_FILTER)}"
    headers = {"Authorization": f"SSWS {token}", "Accept": "application/json"}
    listing = Listing()
    started = time.monotonic()
    timeout = aiohttp.ClientTimeout(total=request_timeout_s)  # per request
    async with aiohttp.ClientSession(headers=headers, timeout=timeout) as session:
        while url is not None and listing.pages < MAX_PAGES:
            async with session.get(url) as response:
                response.raise_for_status()
                users = await response.json()
                url = next_link(response)
            listing.pages += 1
            listing.items += len(users)
            listing.by_status.update(str(u.get("status")) for u in users)
    listing.seconds = time.monotonic() - started
    return listing
