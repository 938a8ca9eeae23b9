"""Okta's event hooks as the emulator keeps and delivers them.

What it follows (okta-developer-docs, ``docs/concepts/event-hooks``; the Event Hooks API;
the okta SDK's ``EventHook`` models):

* ``POST /api/v1/eventHooks`` registers a hook: a name, ``events`` of ``type: EVENT_TYPE`` with
  the event types it wants, and an ``HTTP`` channel (version ``1.0.0``) whose ``config`` has
  the ``uri`` (HTTPS only), an optional ``authScheme`` (``HEADER``: the header's name and the
  secret, never returned) and optional extra ``headers``. A new hook is ``ACTIVE`` but
  ``UNVERIFIED``, and an unverified hook is sent nothing.
* ``POST .../lifecycle/verify`` sends one ``GET`` to the uri with
  ``X-Okta-Verification-Challenge`` (and the configured headers) and expects
  ``{"verification": <that value>}`` within 3 s.
* Deliveries are ``POST``s of the LogEvents the System Log writes, batched when close in time,
  with the configured headers; best effort and at least once: one retry after a 5xx, a timeout
  (3 s) or a refused connection, none after a 4xx. ``DeliveryOptions`` can send a delivery
  twice, reorder events and deliveries, or delay them, as Okta may.
* At most ``MAX_HOOKS`` hooks; only an ``INACTIVE`` hook may be deleted.

Points where real Okta behaviour is not documented are marked ``# guess:``.
"""

from __future__ import annotations

import asyncio
import random
import secrets
import ssl
import time
import uuid
from collections import Counter
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import urlsplit

import aiohttp
import orjson

from oktasync_emulators.systemlog import EVENT_TYPES, LogEvent, iso_ms

# The reference says at most 10 active hooks per org (newer pages say 25): the emulator keeps
# to the stricter figure, and counts every hook, as the help pages' "25 for each org" does.
MAX_HOOKS = 10
ANSWER_S = 3.0  # a hook must answer within 3 s (documented)
BATCH_S = 0.1  # guess: how long Okta gathers events "close in time" into one delivery
BATCH_MAX = 50  # guess: most events in one delivery
RETRY_S = 1.0  # guess: how long before the one retry
CHALLENGE_HEADER = "X-Okta-Verification-Challenge"


class HookRefused(ValueError):
    """A request Okta refuses; ``okta.py`` renders it as Okta's error body."""

    def __init__(self, status: int, code: str, summary: str, causes: list[str] | None = None
                 ) -> None:
        super().__init__(summary)
        self.status, self.code, self.summary, self.causes = status, code, summary, causes or []


def invalid(*causes: str) -> HookRefused:
    # guess: the summary and cause texts; the code is Okta's for a validation failure
    return HookRefused(400, "E0000001", "Api validation failed: eventHook", list(causes))


@dataclass
class DeliveryOptions:
    """How faithfully unreliable the deliveries are; the defaults deliver each batch once."""

    duplicate: float = 0.0  # share of deliveries sent a second time (same eventId)
    reorder: bool = False  # shuffle the events of a delivery and let deliveries overtake
    delay_s: float = 0.0  # extra time before each delivery is sent
    ca_file: str | None = None  # trust these CAs for the hooks' HTTPS (the tests' own CA)
    seed: int = 0


@dataclass
class HookCounts:
    """What ``GET /_emulator/hooks`` shows of one hook's deliveries."""

    deliveries: int = 0  # batches handed to the hook (a duplicate is a second delivery)
    attempts: int = 0  # POSTs sent, retries included
    retries: int = 0
    failed: int = 0  # deliveries given up on
    events: int = 0  # events in the deliveries that were answered 2xx
    duplicates: int = 0
    statuses: Counter[str] = field(default_factory=Counter)

    def to_json(self) -> dict[str, Any]:
        return {"deliveries": self.deliveries, "attempts": self.attempts,
                "retries": self.retries, "failed": self.failed, "events": self.events,
                "duplicates": self.duplicates, "statuses": dict(self.statuses)}


@dataclass
class EventHook:
    id: str
    name: str
    description: str | None
    items: list[str]
    uri: str
    auth: tuple[str, str] | None  # (header, secret)
    headers: list[tuple[str, str]]
    created_ms: int
    updated_ms: int
    status: str = "ACTIVE"
    verification: str = "UNVERIFIED"
    source: str = ""  # the hook's URL at the org, the deliveries' ``source``
    counts: HookCounts = field(default_factory=HookCounts)
    pending: list[LogEvent] = field(default_factory=list)
    flushing: bool = False

    def sends_to(self, event_type: str) -> bool:
        return (self.status == "ACTIVE" and self.verification == "VERIFIED"
                and event_type in self.items)

    def request_headers(self) -> dict[str, str]:
        out = dict(self.headers)
        if self.auth is not None:
            out[self.auth[0]] = self.auth[1]
        return out

    def to_json(self, origin: str, created_by: str) -> dict[str, Any]:
        """The hook as Okta answers it: the secret is never returned (documented)."""
        config: dict[str, Any] = {
            "uri": self.uri, "method": "POST",
            "headers": [{"key": k, "value": v} for k, v in self.headers],
            "authScheme": (None if self.auth is None
                           else {"type": "HEADER", "key": self.auth[0]}),
        }
        lifecycle = "deactivate" if self.status == "ACTIVE" else "activate"
        href = f"{origin}/api/v1/eventHooks/{self.id}"
        return {
            "id": self.id, "status": self.status, "verificationStatus": self.verification,
            "name": self.name, "description": self.description,
            "created": iso_ms(self.created_ms), "createdBy": created_by,
            "lastUpdated": iso_ms(self.updated_ms),
            "events": {"type": "EVENT_TYPE", "items": list(self.items), "filter": None},
            "channel": {"type": "HTTP", "version": "1.0.0", "config": config},
            "_links": {
                "self": {"href": href},
                "verify": {"href": f"{href}/lifecycle/verify", "hints": {"allow": ["POST"]}},
                lifecycle: {"href": f"{href}/lifecycle/{lifecycle}",
                            "hints": {"allow": ["POST"]}},
            },
        }


def _text(value: Any, name: str, *, required: bool = True) -> str | None:
    if value is None and not required:
        return None
    if not isinstance(value, str) or not value.strip():
        raise invalid(f"{name}: must be a non-empty string")
    return value


def _https_uri(value: Any) -> str:
    uri = _text(value, "channel.config.uri")
    assert uri is not None
    parts = urlsplit(uri)
    if parts.scheme != "https" or not parts.hostname:
        raise invalid("channel.config.uri: the URI must be an absolute https:// URI")
    return uri


def _events(value: Any) -> list[str]:
    if not isinstance(value, Mapping) or value.get("type") != "EVENT_TYPE":
        raise invalid("events.type: must be EVENT_TYPE")
    if value.get("filter") is not None:
        # guess: event hook filters are an Early Access feature this org does not have
        raise invalid("events.filter: event hook filters are not enabled for this org")
    items = value.get("items")
    if not isinstance(items, list) or not items or not all(isinstance(i, str) for i in items):
        raise invalid("events.items: at least one event type is required")
    unknown = sorted({i for i in items if i not in EVENT_TYPES})
    if unknown:
        # guess: Okta names each event type that is not event-hook eligible
        raise invalid(*(f"events.items: {i} is not an event hook eligible event type"
                        for i in unknown))
    return list(dict.fromkeys(items))


def _channel(value: Any) -> tuple[str, tuple[str, str] | None, list[tuple[str, str]]]:
    if not isinstance(value, Mapping) or value.get("type") != "HTTP":
        raise invalid("channel.type: must be HTTP")
    if value.get("version") != "1.0.0":
        raise invalid("channel.version: the only supported version is 1.0.0")
    config = value.get("config")
    if not isinstance(config, Mapping):
        raise invalid("channel.config: is required")
    if config.get("method") not in (None, "POST"):
        raise invalid("channel.config.method: must be POST")
    uri = _https_uri(config.get("uri"))
    scheme, auth = config.get("authScheme"), None
    if scheme is not None:
        if not isinstance(scheme, Mapping) or scheme.get("type") != "HEADER":
            raise invalid("channel.config.authScheme.type: must be HEADER")
        auth = (str(_text(scheme.get("key"), "channel.config.authScheme.key")),
                str(_text(scheme.get("value"), "channel.config.authScheme.value")))
    headers = config.get("headers") or []
    if not isinstance(headers, list) or not all(
            isinstance(h, Mapping) and isinstance(h.get("key"), str) and h["key"]
            and isinstance(h.get("value"), str) for h in headers):
        raise invalid("channel.config.headers: each needs a key and a string value")
    return uri, auth, [(h["key"], h["value"]) for h in headers]


class EventHooks:
    """The org's hooks, their verification and their deliveries."""

    def __init__(self, options: DeliveryOptions | None = None) -> None:
        self.options = options or DeliveryOptions()
        self.hooks: dict[str, EventHook] = {}
        self._random = random.Random(self.options.seed)
        self._session: aiohttp.ClientSession | None = None
        self._tasks: set[asyncio.Task[None]] = set()

    # -- the management API ---------------------------------------------------------------------

    def create(self, body: Any, origin: str) -> EventHook:
        if len(self.hooks) >= MAX_HOOKS:
            # guess: the answer to one hook too many
            raise invalid(f"eventHook: an org may have at most {MAX_HOOKS} event hooks")
        now = int(time.time() * 1000)
        hook = self._parse(body, "who" + secrets.token_hex(9)[:17], now)
        hook.source = f"{origin}/api/v1/eventHooks/{hook.id}"
        self.hooks[hook.id] = hook
        return hook

    def replace(self, hook_id: str, body: Any) -> EventHook:
        """PUT: every field from ``body``; a changed uri must be verified again (guess)."""
        old = self.get(hook_id)
        new = self._parse(body, old.id, old.created_ms)
        new.status, new.counts, new.source = old.status, old.counts, old.source
        new.verification = old.verification if new.uri == old.uri else "UNVERIFIED"
        self.hooks[hook_id] = new
        return new

    def _parse(self, body: Any, hook_id: str, created_ms: int) -> EventHook:
        if not isinstance(body, Mapping):
            raise HookRefused(400, "E0000003", "The request body was not well-formed.")
        name = _text(body.get("name"), "name")
        description = _text(body.get("description"), "description", required=False)
        items = _events(body.get("events"))
        uri, auth, headers = _channel(body.get("channel"))
        return EventHook(hook_id, str(name), description, items, uri, auth, headers,
                         created_ms, int(time.time() * 1000))

    def get(self, hook_id: str) -> EventHook:
        hook = self.hooks.get(hook_id)
        if hook is None:
            # guess: the summary Okta gives, after its other "Not found" answers
            raise HookRefused(404, "E0000007",
                              f"Not found: Resource not found: {hook_id} (EventHook)")
        return hook

    def set_status(self, hook_id: str, status: str) -> EventHook:
        hook = self.get(hook_id)
        hook.status, hook.updated_ms = status, int(time.time() * 1000)
        return hook

    def delete(self, hook_id: str) -> None:
        hook = self.get(hook_id)
        if hook.status != "INACTIVE":
            # documented: only INACTIVE hooks may be deleted; guess: the answer otherwise
            raise invalid("eventHook: only an INACTIVE event hook can be deleted; "
                          "deactivate it first")
        del self.hooks[hook_id]

    async def verify(self, hook_id: str) -> EventHook:
        """The one-time GET with a challenge; the hook is VERIFIED when it is echoed."""
        hook = self.get(hook_id)
        challenge = secrets.token_urlsafe(24)
        headers = {**hook.request_headers(), CHALLENGE_HEADER: challenge}
        try:
            async with self.session().get(hook.uri, headers=headers,
                                          timeout=aiohttp.ClientTimeout(total=ANSWER_S)) as r:
                answer = await r.read()
                ok = r.status == 200 and _echoed(answer, challenge)
        except (TimeoutError, aiohttp.ClientError, ssl.SSLError):
            ok = False
        if not ok:
            # guess: the answer to a failed verification
            raise HookRefused(400, "E0000001", "Api validation failed: Verifying event hook",
                              ["Could not verify the event hook: the endpoint did not "
                               "return the verification value"])
        hook.verification, hook.updated_ms = "VERIFIED", int(time.time() * 1000)
        return hook

    def session(self) -> aiohttp.ClientSession:
        """One client for verifications and deliveries, trusting ``options.ca_file``."""
        if self._session is None or self._session.closed:
            context = ssl.create_default_context(cafile=self.options.ca_file)
            self._session = aiohttp.ClientSession(connector=aiohttp.TCPConnector(ssl=context))
        return self._session

    async def close(self, *_: Any) -> None:
        for task in list(self._tasks):
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        if self._session is not None:
            await self._session.close()

    def counts(self) -> dict[str, Any]:
        """``GET /_emulator/hooks``."""
        return {"hooks": [{"id": h.id, "name": h.name, "status": h.status,
                           "verificationStatus": h.verification, **h.counts.to_json()}
                          for h in self.hooks.values()]}

    # -- deliveries ------------------------------------------------------------------------------

    def written(self, event: LogEvent) -> None:
        """A System Log listener: the event joins each subscribed hook's next delivery."""
        for hook in self.hooks.values():
            if not hook.sends_to(event.event_type):
                continue
            hook.pending.append(event)
            if not hook.flushing and _in_event_loop():
                hook.flushing = True
                self._spawn(self._flush(hook))

    def _spawn(self, work: Any) -> None:
        task = asyncio.get_running_loop().create_task(work)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _flush(self, hook: EventHook) -> None:
        """Gather what comes within ``BATCH_S``, then deliver it ``BATCH_MAX`` at a time."""
        try:
            await asyncio.sleep(BATCH_S + self.options.delay_s)
            while hook.pending:
                batch, hook.pending = hook.pending[:BATCH_MAX], hook.pending[BATCH_MAX:]
                events = [e.body for e in batch]
                if self.options.reorder:
                    self._random.shuffle(events)
                    self._spawn(self._deliver_later(hook, _delivery(hook, events)))
                else:
                    await self._deliver(hook, _delivery(hook, events))
        finally:
            hook.flushing = False

    async def _deliver_later(self, hook: EventHook, body: dict[str, Any]) -> None:
        """A delivery sent at a random moment in the next 0.2 s: later ones may overtake."""
        await asyncio.sleep(self._random.uniform(0, 0.2))
        await self._deliver(hook, body)

    async def _deliver(self, hook: EventHook, body: dict[str, Any]) -> None:
        copies = 2 if self._random.random() < self.options.duplicate else 1
        hook.counts.duplicates += copies - 1
        for _ in range(copies):
            hook.counts.deliveries += 1
            outcome = await self._attempt(hook, body)
            if outcome == "retry":
                hook.counts.retries += 1
                await asyncio.sleep(RETRY_S)
                outcome = await self._attempt(hook, body)
            if outcome != "done":
                hook.counts.failed += 1

    async def _attempt(self, hook: EventHook, body: dict[str, Any]) -> str:
        """One POST: "done" (2xx), "refused" (4xx or 3xx: never retried), "retry"."""
        hook.counts.attempts += 1
        headers = {**hook.request_headers(), "Content-Type": "application/json",
                   "Accept": "application/json"}
        try:
            async with self.session().post(hook.uri, data=orjson.dumps(body), headers=headers,
                                           timeout=aiohttp.ClientTimeout(total=ANSWER_S)) as r:
                await r.read()
                status = r.status
        except (TimeoutError, aiohttp.ClientError, ssl.SSLError) as exc:
            hook.counts.statuses[type(exc).__name__] += 1
            return "retry"
        hook.counts.statuses[str(status)] += 1
        if 200 <= status < 300:
            hook.counts.events += len(body["data"]["events"])
            return "done"
        return "retry" if status >= 500 else "refused"


def _in_event_loop() -> bool:
    """A change made outside the server's loop (a script editing the directory) waits in
    ``pending`` for the next change made inside it."""
    try:
        asyncio.get_running_loop()
    except RuntimeError:
        return False
    return True


def _delivery(hook: EventHook, events: list[dict[str, Any]]) -> dict[str, Any]:
    """A delivery's body (okta-api.md, "Event hooks"); ``eventId`` names the delivery."""
    return {"eventType": "com.okta.event_hook", "eventTypeVersion": "1.0",
            "cloudEventsVersion": "0.1", "source": hook.source, "eventId": str(uuid.uuid4()),
            "eventTime": iso_ms(int(time.time() * 1000)), "contentType": "application/json",
            "data": {"events": events}}


def _echoed(answer: bytes, challenge: str) -> bool:
    try:
        body = orjson.loads(answer)
    except orjson.JSONDecodeError:
        return False
    return isinstance(body, dict) and body.get("verification") == challenge
