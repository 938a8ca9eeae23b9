"""Run one command and report what the kernel counted for it alone.

``python -S benchmarks/launch.py RESULT.json -- ARGV...`` forks, execs ARGV, reaps it with
``wait4`` and writes its exit status, wall time, CPU seconds and peak RSS to RESULT.json; it
then exits as ARGV did. SIGINT and SIGTERM are passed on; if the launcher itself is killed,
the kernel kills ARGV too (``PR_SET_PDEATHSIG``).

Why a launcher: on Linux an exec'd process starts with the peak RSS of the memory it was
forked from (``exec_mmap`` keeps the old address space's high-water mark in the process's
``maxrss``), and Python starts children with ``vfork`` from the benchmark runner itself,
whose RSS reaches about 100 MB once a scenario has listed 100,000 users in-process. Every
child's ``ru_maxrss`` was then at least the runner's. Forked from this launcher (a few MB,
stdlib only, no ``site``), a child's ``ru_maxrss`` is its own.
"""

import ctypes
import json
import os
import signal
import sys
import time

PR_SET_PDEATHSIG = 1


def _child(argv: list[str], launcher: int) -> None:
    try:
        # Its own process group: a terminal's Ctrl-C reaches it once, forwarded, not twice.
        os.setpgid(0, 0)
        ctypes.CDLL(None, use_errno=True).prctl(PR_SET_PDEATHSIG, signal.SIGKILL)
        if os.getppid() != launcher:  # the launcher died before prctl took effect
            os._exit(128 + signal.SIGKILL)
        os.execvp(argv[0], argv)
    finally:
        os._exit(127)  # exec failed


def main() -> None:
    if len(sys.argv) < 4 or sys.argv[2] != "--":
        sys.exit("usage: launch.py RESULT.json -- COMMAND [ARG...]")
    result, argv = sys.argv[1], sys.argv[3:]
    started, launcher = time.monotonic(), os.getpid()
    pid = os.fork()
    if pid == 0:
        _child(argv, launcher)
    for sig in (signal.SIGINT, signal.SIGTERM):
        signal.signal(sig, lambda signum, _frame: os.kill(pid, signum))
    _, status, usage = os.wait4(pid, 0)
    wall = time.monotonic() - started
    code = os.waitstatus_to_exitcode(status)
    with open(result, "w", encoding="utf-8") as handle:
        json.dump({"exit_code": code, "wall_s": wall, "user_s": usage.ru_utime,
                   "sys_s": usage.ru_stime, "max_rss_bytes": usage.ru_maxrss * 1024}, handle)
    if code < 0:  # end as the command ended: by the same signal
        if -code not in (signal.SIGKILL, signal.SIGSTOP):  # those cannot be (re)set
            signal.signal(-code, signal.SIG_DFL)
        os.kill(os.getpid(), -code)
    sys.exit(code)


if __name__ == "__main__":
    main()
