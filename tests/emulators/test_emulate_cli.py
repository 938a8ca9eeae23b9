"""`oktasync emulate` as a user runs it: a real process, its JSON line, the official Okta SDK,
SIGINT, and the mistakes a user makes on the command line. The mistakes are also checked
through the emulators' own command (`oktasync-emulate`, here `python -m oktasync_emulators`),
which `oktasync emulate` hands its arguments to."""

from __future__ import annotations

import asyncio
import base64
import json
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import aiohttp
import pytest

from oktasync_emulators.directory import STATUSES

FIRST_LINE_WITHIN_S = 5.0
STOP_WITHIN_S = 5.0
ALL_STATUSES_SEARCH = " or ".join(f'status eq "{s}"' for s in STATUSES)


COMMANDS = {"oktasync emulate": (sys.executable, "-m", "oktasync", "emulate"),
            "oktasync-emulate": (sys.executable, "-m", "oktasync_emulators")}


def emulate_command(*args: str, command: str = "oktasync emulate") -> list[str]:
    return [*COMMANDS[command], *args]


def run_emulate(*args: str, command: str, timeout: float = 30.0
                ) -> subprocess.CompletedProcess[str]:
    """Run the command to completion (for the runs that must stop by themselves)."""
    return subprocess.run(
        emulate_command(*args, command=command), capture_output=True, text=True,
        timeout=timeout,
        stdin=subprocess.DEVNULL, check=False,
    )


@pytest.mark.asyncio
async def test_json_line_then_official_sdk_lists_everyone_then_sigint_exits_0(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    from okta.client import Client as OktaClient
    from okta.pagination import paginate_pages

    # the SDK insists on https unless its testing switch is set (config key testing.*)
    monkeypatch.setenv("OKTA_TESTING_TESTINGDISABLEHTTPSCHECK", "true")
    stderr_path = tmp_path / "stderr.log"
    with stderr_path.open("wb") as stderr_file:
        started = time.monotonic()
        proc = await asyncio.create_subprocess_exec(
            *emulate_command("--users", "1000", "--groups", "40", "--ports", "0,0,0"),
            stdin=asyncio.subprocess.DEVNULL,
            stdout=asyncio.subprocess.PIPE,
            stderr=stderr_file,
        )
    assert proc.stdout is not None
    try:
        try:
            first = await asyncio.wait_for(proc.stdout.readline(), FIRST_LINE_WITHIN_S)
        except TimeoutError:
            pytest.fail(f"no JSON line on stdout within {FIRST_LINE_WITHIN_S} s; stderr: "
                        f"{stderr_path.read_text(errors='replace')}")
        elapsed = time.monotonic() - started
        print(f"time to JSON line: {elapsed:.3f} s")
        assert first, f"stdout closed early; stderr: {stderr_path.read_text(errors='replace')}"
        assert elapsed < FIRST_LINE_WITHIN_S
        # the very first byte on stdout opens the JSON object: nothing was printed before it
        assert first.startswith(b"{") and first.endswith(b"\n"), first
        info = json.loads(first)
        assert set(info) == {"okta", "jira", "confluence"}
        assert set(info["okta"]) == {"url", "token"}
        for product in ("jira", "confluence"):
            assert set(info[product]) == {"url", "username", "password", "token"}
        urls = [info[p]["url"] for p in ("okta", "jira", "confluence")]
        assert all(u.startswith("http://127.0.0.1:") for u in urls)
        assert len(set(urls)) == 3 and not any(u.endswith(":0") for u in urls)

        okta_url, okta_token = info["okta"]["url"], info["okta"]["token"]
        client = OktaClient({"orgUrl": okta_url, "token": okta_token})
        pages = [
            page
            async for page, _, _ in paginate_pages(
                client.list_users, limit=200, search=ALL_STATUSES_SEARCH
            )
        ]
        assert [len(p) for p in pages] == [200] * 5
        users = [u for p in pages for u in p]
        assert len({u.id for u in users}) == 1000
        statuses = {u.status.value if hasattr(u.status, "value") else u.status for u in users}
        assert statuses == set(STATUSES)  # every status, DEPROVISIONED included

        async with (
            aiohttp.ClientSession() as session,
            session.get(f"{okta_url}/_emulator/stats",
                        headers={"Authorization": f"SSWS {okta_token}"}) as resp,
        ):
            assert resp.status == 200
            stats: dict[str, Any] = await resp.json()
        assert stats["by_endpoint"]["GET /api/v1/users"]["requests"] == 5
        # the other two answer as well, with the credentials the line gave
        async with aiohttp.ClientSession() as session:
            for product, path in (("jira", "/rest/api/2/myself"),
                                  ("confluence", "/rest/api/user/current")):
                pair = f"{info[product]['username']}:{info[product]['password']}".encode()
                basic = {"Authorization": "Basic " + base64.b64encode(pair).decode()}
                async with session.get(info[product]["url"] + path, headers=basic) as resp:
                    assert resp.status == 200, product
                headers = {"Authorization": f"Bearer {info[product]['token']}"}
                async with session.get(info[product]["url"] + path, headers=headers) as resp:
                    assert resp.status == 200, product

        stop_sent = time.monotonic()
        proc.send_signal(signal.SIGINT)
        rest = await asyncio.wait_for(proc.stdout.read(), STOP_WITHIN_S)
        code = await asyncio.wait_for(proc.wait(), STOP_WITHIN_S)
        stopped_in = time.monotonic() - stop_sent
        print(f"stopped {stopped_in:.3f} s after SIGINT")
    finally:
        if proc.returncode is None:
            proc.kill()
            await proc.wait()
    stderr = stderr_path.read_text(errors="replace")
    assert code == 0, stderr
    assert stopped_in < STOP_WITHIN_S
    assert rest == b""  # the JSON line is all stdout ever carries
    assert "emulators listening" in stderr  # the logs went to stderr
    assert "Traceback" not in stderr


@pytest.mark.parametrize(
    "ports", ["garbage", "1,2", "1,2,3,4", "70000,0,0", "-1,0,0", "8471,,8473", ""]
)
@pytest.mark.parametrize("command", COMMANDS)
def test_garbage_ports_exit_2_with_a_clear_message(ports: str, command: str) -> None:
    result = run_emulate("--users", "5", "--groups", "1", f"--ports={ports}", command=command)
    assert result.returncode == 2, result.stderr
    assert result.stdout == ""
    assert "Traceback" not in result.stderr
    assert "--ports" in result.stderr
    assert "OKTA,JIRA,CONFLUENCE" in result.stderr
    assert repr(ports) in result.stderr  # what the user typed is quoted back
    assert f"{command}: error" in result.stderr  # named as the user called it


@pytest.mark.parametrize("position", [0, 1, 2])
@pytest.mark.parametrize("command", COMMANDS)
def test_port_in_use_exits_2_naming_the_port(position: int, command: str) -> None:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen(1)
        port = taken.getsockname()[1]
        ports = ["0", "0", "0"]
        ports[position] = str(port)
        result = run_emulate("--users", "5", "--groups", "1", "--ports", ",".join(ports),
                             command=command)
    assert result.returncode == 2, result.stderr
    assert result.stdout == ""  # no JSON line: not everything listens
    assert "Traceback" not in result.stderr
    assert str(port) in result.stderr
    assert "in use" in result.stderr.lower()
    assert result.stderr.startswith(f"{command}: cannot listen")
    assert "emulators listening" not in result.stderr

