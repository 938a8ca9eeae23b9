"""Processes measured from outside: the emulators, the engine, and any later client.

The engine and the emulators never share a process with the benchmark (or with each other), so
their figures are their own: CPU seconds and peak RSS come from ``wait4`` on the exact child
(not ``RUSAGE_CHILDREN``, which would mix the emulator in), and the emulator's peak RSS while it
runs comes from ``VmHWM`` in ``/proc/<pid>/status``. Every wait has a deadline, and a process
that outlives it is killed, so a benchmark always stops by itself.
"""

from __future__ import annotations

import contextlib
import json
import os
import select
import signal
import subprocess
import sys
import threading
import time
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Self

HOST = "127.0.0.1"
BIN = Path(sys.executable).parent
LAUNCHER = Path(__file__).with_name("launch.py")  # runs a measured command; see there
JSON_LINE_LIMIT = 64 * 1024  # the emulators' JSON line is a few hundred bytes
# urllib honours http_proxy; the emulators are on loopback and must be reached directly.
_DIRECT = urllib.request.build_opener(urllib.request.ProxyHandler({}))


class BenchError(RuntimeError):
    """A benchmark could not measure what it meant to (a process failed or hung)."""


def oktasync_bin() -> str:
    """The ``oktasync`` script next to the running interpreter (the project's venv)."""
    path = BIN / "oktasync"
    if not path.exists():
        raise BenchError(f"{path} not found: run with the project's venv (make bench)")
    return str(path)


def emulate_bin() -> str:
    """The ``oktasync-emulate`` script next to the running interpreter: the emulators'
    own distribution, so the measured servers load none of the engine."""
    path = BIN / "oktasync-emulate"
    if not path.exists():
        raise BenchError(f"{path} not found: the emulators are a distribution of their own; "
                         "make bench installs both (or pip install -e ./emulators)")
    return str(path)


@dataclass
class Measured:
    """What one finished child process cost: wall, CPU and peak RSS as the kernel counted."""

    argv: list[str]
    exit_code: int
    wall_s: float
    user_s: float
    sys_s: float
    max_rss_bytes: int

    @property
    def cpu_s(self) -> float:
        return self.user_s + self.sys_s

    def to_json(self) -> dict[str, Any]:
        return {
            "argv": self.argv,
            "exit_code": self.exit_code,
            "wall_s": round(self.wall_s, 3),
            "cpu_user_s": round(self.user_s, 3),
            "cpu_sys_s": round(self.sys_s, 3),
            "cpu_s": round(self.cpu_s, 3),
            "max_rss_bytes": self.max_rss_bytes,
        }


def _exit_code(status: int) -> int:
    """A wait status as subprocess reports it: the exit code, or minus the signal number."""
    return os.waitstatus_to_exitcode(status)


@dataclass
class _Reaper:
    """Blocks in ``wait4`` on one child in a thread, so the caller can wait with a deadline."""

    pid: int
    started: float
    result: tuple[int, float, Any] | None = None
    thread: threading.Thread = field(init=False)

    def __post_init__(self) -> None:
        self.thread = threading.Thread(target=self._wait, daemon=True)
        self.thread.start()

    def _wait(self) -> None:
        _, status, usage = os.wait4(self.pid, 0)
        self.result = (status, time.monotonic() - self.started, usage)

    def join(self, timeout_s: float) -> bool:
        self.thread.join(timeout_s)
        return self.result is not None


def _reap(
    proc: subprocess.Popen[bytes], reaper: _Reaper, argv: list[str], timeout_s: float
) -> Measured:
    """Wait for the child; past the deadline send SIGTERM, then SIGKILL, and raise."""
    if not reaper.join(timeout_s):
        for sig, grace in ((signal.SIGTERM, 10.0), (signal.SIGKILL, 10.0)):
            proc.send_signal(sig)
            if reaper.join(grace):
                break
        raise BenchError(f"timed out after {timeout_s:.0f}s: {' '.join(argv)}")
    assert reaper.result is not None
    status, wall, usage = reaper.result
    proc.returncode = _exit_code(status)  # reaped by wait4: tell Popen not to wait again
    return Measured(
        argv=argv,
        exit_code=proc.returncode,
        wall_s=wall,
        user_s=usage.ru_utime,
        sys_s=usage.ru_stime,
        max_rss_bytes=usage.ru_maxrss * 1024,
    )


def run_measured(
    argv: list[str],
    *,
    timeout_s: float,
    log_dir: Path,
    label: str,
    cwd: Path | None = None,
    env: dict[str, str] | None = None,
    terminal: bool = False,
) -> Measured:
    """Run a command to its end with stdout/stderr in ``log_dir``; measure it with wait4.
    ``terminal``: its stderr is a pseudo-terminal (160 columns), drained into the log as the
    command writes, so it behaves as at a terminal (oktasync's live progress display).

    The command runs under ``launch.py``, which reaps it and reports its own CPU and peak RSS
    (started from this process, its peak RSS would be at least this process's; see there).
    ``env`` adds variables to this process's environment for the child."""
    log_dir.mkdir(parents=True, exist_ok=True)
    child_env = {**os.environ, **env} if env else None
    report = log_dir / f"{label}.usage.json"
    report.unlink(missing_ok=True)
    launcher = [sys.executable, "-S", str(LAUNCHER), str(report), "--", *argv]
    with (log_dir / f"{label}.out").open("wb") as out, (log_dir / f"{label}.err").open("wb") as err:
        pty = _Pty(err) if terminal else None
        started = time.monotonic()
        proc = subprocess.Popen(
            launcher, stdout=out, stderr=pty.slave if pty else err, stdin=subprocess.DEVNULL,
            cwd=cwd, env=child_env
        )
        if pty is not None:
            pty.started()
        try:
            _reap(proc, _Reaper(proc.pid, started), argv, timeout_s)  # the launcher's end
        finally:
            if pty is not None:
                pty.close()
    if not report.exists():
        raise BenchError(f"the launcher reported nothing for {' '.join(argv)} (see {log_dir})")
    usage = json.loads(report.read_text(encoding="utf-8"))
    return Measured(argv=argv, exit_code=int(usage["exit_code"]), wall_s=float(usage["wall_s"]),
                    user_s=float(usage["user_s"]), sys_s=float(usage["sys_s"]),
                    max_rss_bytes=int(usage["max_rss_bytes"]))


class _Pty:
    """A pseudo-terminal for a child's stderr, its output copied to ``sink`` by a thread."""

    def __init__(self, sink: Any) -> None:
        import fcntl
        import struct
        import termios

        self.master, self.slave = os.openpty()
        fcntl.ioctl(self.slave, termios.TIOCSWINSZ, struct.pack("HHHH", 40, 160, 0, 0))
        self._sink = sink
        self._thread = threading.Thread(target=self._copy, daemon=True)

    def started(self) -> None:
        os.close(self.slave)  # the child holds it now: EOF on the master when it exits
        self._thread.start()

    def _copy(self) -> None:
        while True:
            try:
                data = os.read(self.master, 65536)
            except OSError:
                return
            if not data:
                return
            self._sink.write(data)

    def close(self) -> None:
        self._thread.join(10.0)
        os.close(self.master)


class Spawned:
    """A child started now and reaped later: lets a scenario act on it meanwhile (SIGKILL)."""

    def __init__(self, argv: list[str], *, log_dir: Path, label: str) -> None:
        log_dir.mkdir(parents=True, exist_ok=True)
        self.argv = argv
        with (log_dir / f"{label}.out").open("wb") as out, (log_dir / f"{label}.err").open(
            "wb"
        ) as err:
            started = time.monotonic()
            self._proc = subprocess.Popen(
                argv, stdout=out, stderr=err, stdin=subprocess.DEVNULL
            )
        self._reaper = _Reaper(self._proc.pid, started)

    @property
    def running(self) -> bool:
        return self._reaper.result is None

    def terminate(self) -> None:
        """SIGTERM: the child stops as it would under systemd."""
        if self.running:
            self._proc.send_signal(signal.SIGTERM)

    def kill(self) -> None:
        """SIGKILL, as ``kill -9`` would: no handler in the child runs."""
        if self.running:
            self._proc.send_signal(signal.SIGKILL)

    def wait(self, timeout_s: float) -> Measured:
        """Reap it (SIGTERM, then SIGKILL past the deadline, and raise)."""
        return _reap(self._proc, self._reaper, self.argv, timeout_s)


def proc_status_bytes(pid: int, key: str) -> int:
    """A ``kB`` line of /proc/<pid>/status (VmHWM, VmRSS) in bytes; 0 when gone."""
    try:
        for line in Path(f"/proc/{pid}/status").read_text(encoding="utf-8").splitlines():
            if line.startswith(key + ":"):
                return int(line.split()[1]) * 1024
    except (OSError, ValueError, IndexError):
        pass
    return 0


def proc_cpu_seconds(pid: int) -> float:
    """User + system CPU seconds a running process has used so far (/proc/<pid>/stat)."""
    try:
        raw = Path(f"/proc/{pid}/stat").read_text(encoding="utf-8")
    except OSError:
        return 0.0
    fields = raw.rsplit(")", 1)[1].split()  # after "(comm)"; fields[11:13] are utime, stime
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def _process_table() -> dict[int, tuple[int, str]]:
    """pid -> (ppid, command line) of every user-space process we may read."""
    table: dict[int, tuple[int, str]] = {}
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            cmdline = (entry / "cmdline").read_bytes().replace(b"\0", b" ").decode().strip()
            ppid = int((entry / "stat").read_text().rsplit(")", 1)[1].split()[1])
        except (OSError, ValueError, IndexError, UnicodeDecodeError):
            continue
        if cmdline:  # kernel threads have none
            table[int(entry.name)] = (ppid, cmdline[:200])
    return table


def _others() -> dict[int, str]:
    """Processes that are neither us nor our descendants (the emulators, syncs we started)."""
    table = _process_table()
    ours = {os.getpid()}
    grew = True
    while grew:  # bounded: each pass adds at least one pid or stops
        grew = False
        for pid, (ppid, _) in table.items():
            if ppid in ours and pid not in ours:
                ours.add(pid)
                grew = True
    return {pid: cmd for pid, (_, cmd) in table.items() if pid not in ours}


def foreign_processes(sample_s: float = 0.5, busy_share: float = 0.1) -> list[str]:
    """Other processes busy on the CPUs now: load that would skew a figure.

    Another session's syncs, emulators or test runs compete for the same CPUs, so results
    record what was seen. Idle processes (an emulator left running) do not count: over
    ``sample_s`` a process must use at least ``busy_share`` of a CPU.
    """
    others = _others()
    before = {pid: proc_cpu_seconds(pid) for pid in others}
    time.sleep(sample_s)
    return [
        f"{pid}: {cmd}"
        for pid, cmd in others.items()
        if proc_cpu_seconds(pid) - before[pid] >= busy_share * sample_s
    ]


def get_json(url: str, timeout_s: float = 30.0) -> Any:
    """GET a JSON document from an emulator's control surface, bypassing any proxy."""
    with _DIRECT.open(url, timeout=timeout_s) as response:
        return json.loads(response.read())


def _read_line(fd: int, deadline: float) -> bytes:
    """The first line a child writes to ``fd``, or BenchError at the deadline or EOF."""
    buffer = b""
    while b"\n" not in buffer and len(buffer) < JSON_LINE_LIMIT:
        remaining = deadline - time.monotonic()
        if remaining <= 0:
            raise BenchError("no JSON line before the deadline")
        readable, _, _ = select.select([fd], [], [], remaining)
        if readable:
            chunk = os.read(fd, 4096)
            if not chunk:
                raise BenchError("the process closed stdout before its JSON line")
            buffer += chunk
    return buffer.split(b"\n", 1)[0]


class EmulatorProcess:
    """``oktasync-emulate`` as a child: start, read its JSON line, ask for stats, SIGINT it."""

    def __init__(self, args: list[str], *, log_dir: Path, label: str = "emulate") -> None:
        self.argv = [emulate_bin(), "--host", HOST, "--ports", "0,0,0", *args]
        self.log_dir = log_dir
        self.label = label
        self.info: dict[str, Any] = {}
        self.ready_s = 0.0
        self.final: Measured | None = None
        self._proc: subprocess.Popen[bytes] | None = None
        self._reaper: _Reaper | None = None

    @property
    def pid(self) -> int:
        assert self._proc is not None
        return self._proc.pid

    def start(self, timeout_s: float = 120.0) -> dict[str, Any]:
        """Start and wait for the JSON line; ``ready_s`` is process start to that line."""
        self.log_dir.mkdir(parents=True, exist_ok=True)
        with (self.log_dir / f"{self.label}.err").open("wb") as err:
            started = time.monotonic()
            self._proc = subprocess.Popen(
                self.argv, stdout=subprocess.PIPE, stderr=err, stdin=subprocess.DEVNULL
            )
        self._reaper = _Reaper(self._proc.pid, started)
        assert self._proc.stdout is not None
        try:
            line = _read_line(self._proc.stdout.fileno(), started + timeout_s)
        except BenchError as exc:
            self.kill()
            raise BenchError(f"{exc}: {' '.join(self.argv)} (see {self.log_dir})") from None
        self.ready_s = time.monotonic() - started
        self.info = json.loads(line)
        return self.info

    def url(self, service: str) -> str:
        return str(self.info[service]["url"])

    def check_alive(self) -> None:
        """Raise BenchError naming how the emulator ended if it is gone (killed from outside?)."""
        assert self._reaper is not None
        if self._reaper.result is not None:
            code = _exit_code(self._reaper.result[0])
            how = f"signal {-code}" if code < 0 else f"exit code {code}"
            raise BenchError(
                f"the emulator (pid {self.pid}) ended early with {how}; "
                f"see {self.log_dir / (self.label + '.err')}"
            )

    def stats(self) -> dict[str, Any]:
        """``/_emulator/stats`` of Okta, Jira and Confluence."""
        self.check_alive()
        return {
            s: get_json(self.url(s) + "/_emulator/stats") for s in ("okta", "jira", "confluence")
        }

    def peak_rss_bytes(self) -> int:
        return proc_status_bytes(self.pid, "VmHWM")

    def cpu_seconds(self) -> float:
        return proc_cpu_seconds(self.pid)

    def stop(self, timeout_s: float = 30.0) -> Measured:
        """SIGINT (the emulators' normal stop), wait; SIGTERM/SIGKILL past the deadline."""
        assert self._proc is not None and self._reaper is not None
        if self.final is None:
            if self._proc.returncode is None and self._reaper.result is None:
                self._proc.send_signal(signal.SIGINT)
            self.final = _reap(self._proc, self._reaper, self.argv, timeout_s)
            if self._proc.stdout is not None:
                self._proc.stdout.close()
        return self.final

    def kill(self) -> None:
        """Stop without ceremony (after a failure); never raises."""
        with contextlib.suppress(BenchError):
            self.stop(timeout_s=5.0)

    def __enter__(self) -> Self:
        return self

    def __exit__(self, *exc: object) -> None:
        if self._proc is not None and self.final is None:
            self.kill()
