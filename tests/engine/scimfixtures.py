"""TEMPORARY minimal stand-in (replaced by the helper's fixture): scim2-server on loopback."""

from __future__ import annotations

import asyncio
import socket
import sys
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import aiohttp


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@asynccontextmanager
async def scim_server(folder: Path, token: str) -> AsyncIterator[str]:
    folder.mkdir(parents=True, exist_ok=True)
    port = _free_port()
    exe = str(Path(sys.executable).parent / "scim2-server")
    with open(folder / "scim.log", "wb") as log:
        proc = await asyncio.create_subprocess_exec(
            exe, "--port", str(port), "--bearer-token", token, stdout=log, stderr=log)
    url = f"http://127.0.0.1:{port}"
    try:
        for _ in range(100):
            try:
                async with aiohttp.ClientSession() as s, s.get(
                        url + "/ServiceProviderConfig",
                        headers={"Authorization": f"Bearer {token}"}) as r:
                    if r.status == 200:
                        break
            except aiohttp.ClientError:
                await asyncio.sleep(0.1)
        yield url
    finally:
        proc.terminate()
        await proc.wait()


def scim_faults(*args: Any, **kwargs: Any) -> Any:
    raise NotImplementedError


async def scim_state(url: str, token: str = "scim-directory-key-7Qp2") -> dict[str, Any]:
    headers = {"Authorization": f"Bearer {token}"}
    out: dict[str, Any] = {"users": [], "groups": []}
    async with aiohttp.ClientSession() as s:
        ids = {}
        for kind in ("Users", "Groups"):
            start = 1
            while True:
                async with s.get(f"{url}/{kind}", params={"startIndex": str(start),
                                                          "count": "100"},
                                 headers=headers) as r:
                    body = await r.json(content_type=None)
                res = body.get("Resources") or []
                for item in res:
                    if kind == "Users":
                        emails = item.get("emails") or []
                        primary = next((e["value"] for e in emails if e.get("primary")),
                                       emails[0]["value"] if emails else None)
                        ids[item["id"]] = item["userName"]
                        out["users"].append({"userName": item["userName"], "email": primary,
                                             "displayName": item.get("displayName"),
                                             "active": item.get("active", True),
                                             "externalId": item.get("externalId")})
                    else:
                        out["groups"].append({"displayName": item["displayName"], "members": [
                            ids[m["value"]] for m in item.get("members") or []]})
                start += len(res)
                if not res or start > body.get("totalResults", 0):
                    break
    return out
