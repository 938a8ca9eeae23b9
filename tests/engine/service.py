"""`oktasync serve` as a real subprocess for the tests, and the requests they send it."""

from __future__ import annotations

import asyncio
import contextlib
import signal
import socket
import ssl
import sys
import time
import uuid
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import aiohttp

HOOK_SECRET = "hook-secret-for-tests"
LOGIN_SECRET = "login-secret-for-tests"


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


@dataclass
class Running:
    base: str
    process: asyncio.subprocess.Process
    stderr: Path  # a file: a pipe nobody reads would stop the service once it is full
    trust: ssl.SSLContext | None = None  # the CA of a service on HTTPS

    async def get(self, path: str, **kwargs: Any) -> tuple[int, Any]:
        async with aiohttp.ClientSession() as session, \
                session.get(self.base + path, ssl=self.trust or True, **kwargs) as response:
            return response.status, await _body(response)

    async def post(self, path: str, **kwargs: Any) -> tuple[int, Any]:
        async with aiohttp.ClientSession() as session, \
                session.post(self.base + path, ssl=self.trust or True, **kwargs) as response:
            return response.status, await _body(response)

    async def health(self) -> Any:
        return (await self.get("/healthz"))[1]

    async def until(self, ready: Callable[[Any], bool], within_s: float = 30) -> Any:
        """/healthz once ``ready`` says so."""
        deadline = time.monotonic() + within_s
        while True:
            health = await self.health()
            if ready(health):
                return health
            if time.monotonic() > deadline:
                raise AssertionError(f"/healthz never got there: {health}")
            await asyncio.sleep(0.05)

    async def stop(self) -> str:
        """SIGTERM; the exit code must be 0. Returns stderr."""
        self.process.send_signal(signal.SIGTERM)
        await asyncio.wait_for(self.process.communicate(), timeout=60)
        err = self.stderr.read_text(encoding="utf-8", errors="replace")
        assert self.process.returncode == 0, err[-3000:]
        return err


async def _body(response: aiohttp.ClientResponse) -> Any:
    if "json" in response.content_type:
        return await response.json()
    return await response.text()


def with_serve(path: Path, port: int, extra: str = "") -> Path:
    path.write_text(path.read_text() + f'\n[serve]\nlisten = "127.0.0.1:{port}"\n{extra}\n')
    return path


@contextlib.asynccontextmanager
async def service(path: Path, port: int,
                  trust: ssl.SSLContext | None = None) -> AsyncIterator[Running]:
    """The service on ``path`` (whose [serve] listens on ``port``, over HTTPS when ``trust``
    has the CA of its certificate), killed if still running when the block ends."""
    stderr = path.with_name(f"serve-{port}-{time.monotonic_ns()}.log")
    with open(stderr, "wb") as err:
        process = await asyncio.create_subprocess_exec(
            sys.executable, "-m", "oktasync", "serve", "--config", str(path),
            stdout=asyncio.subprocess.PIPE, stderr=err)
    assert process.stdout is not None
    try:
        ready = await asyncio.wait_for(process.stdout.readline(), timeout=30)
        assert f"127.0.0.1:{port}" in ready.decode(), (ready, stderr.read_text())
        scheme = "https" if trust else "http"
        assert f"{scheme}://127.0.0.1:{port}" in ready.decode(), ready
        yield Running(f"{scheme}://127.0.0.1:{port}", process, stderr, trust)
    finally:
        if process.returncode is None:
            process.kill()
        await process.communicate()


def delivery(*events: dict[str, Any]) -> dict[str, Any]:
    """An event hook delivery as Okta sends it (okta-api.md, "Event hooks")."""
    return {"eventType": "com.okta.event_hook", "eventTypeVersion": "1.0",
            "cloudEventsVersion": "0.1", "contentType": "application/json",
            "eventId": str(uuid.uuid4()), "eventTime": "2026-12-03T10:00:00.000Z",
            "source": "https://example.okta.com/api/v1/eventHooks/who0test",
            "data": {"events": list(events)}}


def sign_in(user_id: str, login: str) -> dict[str, Any]:
    """A ``user.session.start`` LogEvent: the user is the actor, there is no target."""
    return {"uuid": str(uuid.uuid4()), "published": "2026-12-03T10:00:00.000Z",
            "eventType": "user.session.start", "version": "0", "severity": "INFO",
            "displayMessage": "User login to Okta",
            "actor": {"id": user_id, "type": "User", "alternateId": login,
                      "displayName": login},
            "outcome": {"result": "SUCCESS"}, "target": None}


def hook_headers(secret: str = HOOK_SECRET) -> dict[str, str]:
    return {"Authorization": secret, "Content-Type": "application/json"}
