"""An unreachable target, as an administrator meets it: ``oktasync sync`` as a real process.

Okta is the emulator (in-process, on loopback); Jira's ``url`` points at a server this test
starts on 127.0.0.1: a port nobody listens on (connection refused), or an asyncio server that
accepts connections and never answers. What is checked: the message names the target as the
config names it, the server's base URL and the cause in plain words; the exit code is 4 (a
target's state could not be read); no traceback, no exception repr, no secret is printed; and
the run gives up within the request deadline (``8 attempts × timeout_s``), backoff included.

Then one ``HttpClient`` at a time against raw TCP servers for the other causes (the server
closes the connection, resets it, speaks plain HTTP to a TLS client; a name that does not
resolve), that the printed URL carries no credentials or query, and the deadline on its own.
"""

from __future__ import annotations

import asyncio
import json
import socket
import struct
import sys
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from pathlib import Path

import pytest

from oktasync.errors import Backoff, Context, LookupFailed, RequestFailed, RetryPolicy
from oktasync.http import HttpClient, make_session
from oktasync.ratelimit import AtlassianLimiter
from oktasync_emulators.runner import EmulatorOptions, running_emulators
from tests.engine.harness import write_config

TIMEOUT_S = 0.5
DEADLINE_S = RetryPolicy().max_attempts * TIMEOUT_S  # 4 s
REPRS = ("Traceback", "ConnectionKey", "ClientConnectorError", "TimeoutError", "Error(",
         "OSError")


def closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@asynccontextmanager
async def silent_server() -> AsyncIterator[str]:
    """Accepts connections, reads what is sent, never answers."""
    writers: list[asyncio.StreamWriter] = []

    async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        writers.append(writer)
        while await reader.read(65536):
            pass
        writer.close()

    server = await asyncio.start_server(handle, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        server.close()
        for writer in writers:
            writer.close()
        await server.wait_closed()


async def sync_process(config: Path) -> tuple[int, str, str, float]:
    """``python -m oktasync sync --config ...`` to its end: exit code, stdout, stderr, wall."""
    started = time.monotonic()
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "oktasync", "sync", "--config", str(config),
        stdin=asyncio.subprocess.DEVNULL, stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE)
    out, err = await asyncio.wait_for(proc.communicate(), timeout=90)
    assert proc.returncode is not None
    return proc.returncode, out.decode(), err.decode(), time.monotonic() - started


async def run_against(tmp_path: Path, jira_url: str) -> tuple[int, str, float, list[str]]:
    """A sync of 20 Okta users into a Jira at ``jira_url``: exit, everything printed, the
    engine's own wall time, and the secrets that must not appear."""
    options = EmulatorOptions(users=20, groups=3, ports=(0, 0, 0), okta_rate_scale=0)
    async with running_emulators(options) as running:
        config = write_config(tmp_path, running, targets=("jira",),
                              extra_jira=f"timeout_s = {TIMEOUT_S}")
        config.write_text(config.read_text().replace(running.jira_url, jira_url))
        code, out, err, _ = await sync_process(config)
    last_run = json.loads((tmp_path / "state" / "test-app" / "last-run.json").read_text())
    return code, out + err, float(last_run["wall_time_s"]), [options.okta_token,
                                                             options.jira_token]


def assert_plain(said: str, secrets: list[str]) -> None:
    for marker in REPRS:
        assert marker not in said, f"{marker!r} printed:\n{said[-3000:]}"
    for secret in secrets:
        assert secret not in said


@pytest.mark.asyncio
async def test_connection_refused_names_target_url_and_cause(tmp_path: Path) -> None:
    url = f"http://127.0.0.1:{closed_port()}"
    code, said, wall, secrets = await run_against(tmp_path, url)
    assert code == 4, said[-3000:]
    assert f"jira: cannot connect to {url} (connection refused)" in said, said[-3000:]
    assert "attempts over" in said
    assert_plain(said, secrets)
    assert wall < DEADLINE_S + 4, f"gave up after {wall} s; deadline {DEADLINE_S} s"


@pytest.mark.asyncio
async def test_a_server_that_never_answers_is_given_up_within_the_deadline(
    tmp_path: Path,
) -> None:
    async with silent_server() as url:
        code, said, wall, secrets = await run_against(tmp_path, url)
    assert code == 4, said[-3000:]
    assert f"jira: no answer from {url} within {TIMEOUT_S} s" in said, said[-3000:]
    assert "the server accepts connections but does not answer" in said
    assert_plain(said, secrets)
    # the deadline is the request's: attempts × timeout_s, backoff included (before, 8 full
    # timeouts plus about 19 s of backoff)
    assert wall < DEADLINE_S + 4, f"gave up after {wall} s; deadline {DEADLINE_S} s"


# -- one client, each cause: the words, and the deadline ------------------------------------

@asynccontextmanager
async def tcp_server(answer: Callable[[asyncio.StreamReader, asyncio.StreamWriter],
                                      Awaitable[None]]) -> AsyncIterator[int]:
    """A raw TCP server on 127.0.0.1 doing ``answer`` with each connection; its port."""
    server = await asyncio.start_server(answer, "127.0.0.1", 0)
    try:
        yield int(server.sockets[0].getsockname()[1])
    finally:
        server.close()
        await server.wait_closed()


async def closes_without_answering(reader: asyncio.StreamReader,
                                   writer: asyncio.StreamWriter) -> None:
    await reader.read(65536)
    writer.close()


async def resets(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    await reader.read(65536)
    sock = writer.get_extra_info("socket")  # linger 0: close sends RST, not FIN
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    writer.close()


async def answers_plain_http(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    await reader.read(65536)
    writer.write(b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\n{}")
    await writer.drain()
    writer.close()


async def failure_of(base_url: str, *, timeout_s: float = 2.0,
                     policy: RetryPolicy | None = None) -> tuple[RequestFailed, float]:
    session = make_session(connections=2, timeout_s=timeout_s)
    http = HttpClient(session, name="confluence", base_url=base_url, headers={},
                      limiter=AtlassianLimiter(concurrency=2, max_rps=0),
                      policy=policy or RetryPolicy(max_attempts=2, backoff=Backoff(0.01)))
    started = time.monotonic()
    try:
        with pytest.raises(LookupFailed) as caught:  # the context says what it means
            await http.send("GET", "/rest/api/user/current", params={"q": "secret-term"},
                            context=Context.LOOKUP)
    finally:
        await session.close()
    return caught.value, time.monotonic() - started


@pytest.mark.asyncio
@pytest.mark.parametrize(("server", "scheme", "words"), [
    (closes_without_answering, "http",
     "gave no answer (the server closed the connection without answering; "
     "GET /rest/api/user/current)"),
    (resets, "http", "gave no answer (connection reset; GET /rest/api/user/current)"),
    (answers_plain_http, "https", "(TLS problem: wrong version number)"),
])
async def test_each_cause_in_plain_words(
    server: Callable[[asyncio.StreamReader, asyncio.StreamWriter], Awaitable[None]],
    scheme: str, words: str,
) -> None:
    async with tcp_server(server) as port:
        error, _ = await failure_of(f"{scheme}://127.0.0.1:{port}/")
    said = str(error)
    assert said.startswith(f"confluence: {scheme}://127.0.0.1:{port} " if scheme == "http"
                           else f"confluence: cannot connect to https://127.0.0.1:{port} ")
    assert words in said, said
    assert "gave up after 2 attempts over" in said, said
    assert "secret-term" not in said and "Error" not in said, said


@pytest.mark.asyncio
async def test_the_printed_url_has_no_credentials_and_no_query() -> None:
    port = closed_port()
    error, _ = await failure_of(f"http://admin:s3cret@127.0.0.1:{port}/wiki/?token=abc")
    said = str(error)
    assert f"cannot connect to http://127.0.0.1:{port}/wiki (connection refused)" in said, said
    assert "s3cret" not in said and "token=abc" not in said and "admin" not in said


@pytest.mark.asyncio
async def test_a_name_that_does_not_resolve() -> None:
    try:
        await asyncio.wait_for(asyncio.get_running_loop().getaddrinfo("no-such-host.invalid",
                                                                      80), 2)
        pytest.skip("this machine's resolver answers for .invalid names")
    except (OSError, TimeoutError) as exc:
        if not isinstance(exc, socket.gaierror):
            pytest.skip(f"this machine's resolver does not fail fast: {exc!r}")
    error, _ = await failure_of("https://no-such-host.invalid")
    assert "confluence: cannot connect to https://no-such-host.invalid (name not resolved)" \
        in str(error), str(error)


@pytest.mark.asyncio
async def test_the_deadline_bounds_a_request_backoff_included() -> None:
    # 4 attempts of 0.3 s and backoffs of 0.2-0.4, 0.4-0.8 and 0.8-1.6 s took 2.4-4 s; the
    # deadline is 4 × 0.3 = 1.2 s, backoff included
    policy = RetryPolicy(max_attempts=4, backoff=Backoff(base_s=0.4, factor=2.0, max_s=5.0))
    async with silent_server() as url:
        error, took = await failure_of(url, timeout_s=0.3, policy=policy)
    said = str(error)
    assert "no answer from" in said and "within 0.3 s" in said, said
    assert "at most 4 × timeout_s = 1.2 s per request" in said, said
    assert error.attempts < 4 and error.spent_s <= 1.2 + 0.05, said
    assert took < 1.2 + 0.5, f"gave up after {took:.2f} s; deadline 1.2 s"
