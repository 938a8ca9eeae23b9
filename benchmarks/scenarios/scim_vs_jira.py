"""scim_vs_jira (issue 15): the same first import into Atlassian Cloud's SCIM API and into
Jira Data Center, side by side.

One Okta directory (the emulator, no added latency, Okta's limits off); the same engine and
settings; two runs on fresh servers: **jira** — the Jira Data Center emulator — and **scim** —
a real third-party SCIM 2.0 server (scim2-server, in a process of its own, e-mail usernames as
an atlassian-scim target has them). The figures: wall time, requests the target received and
the engine's CPU, per run; and the SCIM server's own CPU (an in-memory Python server: much of
the SCIM run's time is its).
"""

from __future__ import annotations

import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path
from typing import Any

from benchmarks.engine import SyncRun, run_sync
from benchmarks.framework import Context, Figure, Outcome, Scenario, display_command
from benchmarks.procs import EmulatorProcess, proc_status_bytes
from benchmarks.runs import emulate_args

NAME = "scim_vs_jira"
# users, groups, memberships: one membership per user on average, as scim2-server (an
# in-memory reference server) rewrites a whole group on every member added to it
SIZES = {"full": (10_000, 100, 10_000), "quick": (1_000, 40, 1_000), "ci": (40, 5, 40)}
TOKEN = "bench-scim-key"


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class ScimServer:
    """scim2-server on 127.0.0.1 in a process of its own, with a bearer token."""

    def __init__(self, folder: Path) -> None:
        self.port = _free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        exe = Path(sys.executable).parent / "scim2-server"
        self.argv = [str(exe), "--hostname", "127.0.0.1", "--port", str(self.port),
                     "--bearer-token", TOKEN]
        self._log = open(folder / "scim2-server.log", "wb")  # noqa: SIM115 - closed in stop
        self.process = subprocess.Popen(self.argv, stdout=self._log, stderr=self._log)
        deadline = time.monotonic() + 30
        while not self._answers():
            if time.monotonic() > deadline or self.process.poll() is not None:
                self.stop()
                raise RuntimeError(f"scim2-server did not start; see {folder}")
            time.sleep(0.1)

    def _answers(self) -> bool:
        request = urllib.request.Request(self.url + "/ServiceProviderConfig",
                                         headers={"Authorization": f"Bearer {TOKEN}"})
        try:
            with urllib.request.urlopen(request, timeout=2):
                return True
        except OSError:
            return False

    def cpu_s(self) -> float:
        fields = Path(f"/proc/{self.process.pid}/stat").read_text().rsplit(")", 1)[1].split()
        return (int(fields[11]) + int(fields[12])) / 100  # utime + stime, clock ticks

    def rss_mb(self) -> float:
        return proc_status_bytes(self.process.pid, "VmHWM") / 1e6

    def stop(self) -> None:
        self.process.terminate()
        self.process.wait(timeout=30)
        self._log.close()


def _jira(ctx: Context, size: tuple[int, int, int]
          ) -> tuple[SyncRun, list[str], dict[str, Any]]:
    scratch = ctx.scratch("jira")
    with EmulatorProcess(_emulate(size),
                         log_dir=scratch) as emu:
        emu.start(timeout_s=300.0)
        run = run_sync(emu, scratch, timeout_s=3600.0, extra=["--no-progress"],
                       targets='["jira"]')
        emu.stop()
    return run, [display_command(emu.argv, ctx.work_dir) + " &",
                 display_command(run.measured.argv, ctx.work_dir)], {
        "target_requests": run.requests("jira")}


def _scim(ctx: Context, size: tuple[int, int, int]
          ) -> tuple[SyncRun, list[str], dict[str, Any]]:
    scratch = ctx.scratch("scim")
    scim = ScimServer(scratch)
    try:
        with EmulatorProcess(_emulate(size),
                             log_dir=scratch) as emu:
            emu.start(timeout_s=300.0)
            section = (f'[target.cloud]\nkind = "atlassian-scim"\nurl = "{scim.url}"\n'
                       f'token = "{TOKEN}"\n')
            cpu_before = scim.cpu_s()
            run = run_sync(emu, scratch, timeout_s=3600.0, extra=["--no-progress"],
                           targets='["cloud"]', extra_sections=section)
            server_cpu = scim.cpu_s() - cpu_before
            emu.stop()
        requests = run.last_run.get("targets", {}).get("cloud", {}).get("requests", {})
        details = {"target_requests": int(requests.get("reads", 0)) + int(
            requests.get("writes", 0)), "server_cpu_s": server_cpu,
            "server_peak_rss_mb": scim.rss_mb(),
            "users_created": run.last_run.get("targets", {}).get("cloud", {}).get(
                "counts", {}).get("users_created", 0)}
    finally:
        scim.stop()
    return run, [display_command(scim.argv, ctx.work_dir).replace(str(scim.port), "$PORT")
                 + " &", display_command(emu.argv, ctx.work_dir) + " &",
                 display_command(run.measured.argv, ctx.work_dir)], details


def _emulate(size: tuple[int, int, int]) -> list[str]:
    users, groups, memberships = size
    return emulate_args(users, groups, "--memberships", str(memberships), "--okta-rate-scale",
                        "0")


def run(ctx: Context) -> Outcome:
    size = ctx.pick(SIZES["full"], SIZES["quick"], SIZES["ci"])
    figures: list[Figure] = []
    details: dict[str, Any] = {"users": size[0], "groups": size[1], "memberships": size[2]}
    for label, one in (("jira", _jira), ("scim", _scim)):
        sync, commands, extra = one(ctx, size)
        ctx.note_foreign(sync.foreign)
        if sync.measured.exit_code not in (0, 1):
            raise RuntimeError(f"{label} sync exited {sync.measured.exit_code}")
        details[label] = {"process": sync.measured.to_json(), **extra,
                          "last_run": sync.last_run}
        figures += [
            Figure(f"{label}: wall time (process)", sync.measured.wall_s, "s", commands),
            Figure(f"{label}: requests to the target", extra["target_requests"], "",
                   commands),
            Figure(f"{label}: engine CPU", sync.measured.cpu_s, "s", commands)]
        if "server_cpu_s" in extra:
            figures.append(Figure(f"{label}: the SCIM server's CPU", extra["server_cpu_s"],
                                  "s", commands,
                                  note=f"peak RSS {extra['server_peak_rss_mb']:.0f} MB"))
    return Outcome(figures, details)


SCENARIO = Scenario(NAME, "The same first import into a SCIM server and into Jira DC", run)
