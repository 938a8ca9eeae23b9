"""config/oktasync.service is a unit systemd accepts, and it says what the README promises:
its own user, a read-only system but for the state directory, restart on failure, SIGHUP to
reload, SIGTERM to stop."""

from __future__ import annotations

import configparser
import shutil
import subprocess
import sys
from pathlib import Path

UNIT = Path(__file__).resolve().parents[2] / "config" / "oktasync.service"


def test_systemd_accepts_the_unit(tmp_path: Path) -> None:
    analyze = shutil.which("systemd-analyze")
    assert analyze is not None, "systemd-analyze is missing: `make test` installs systemd"
    oktasync = Path(sys.executable).with_name("oktasync")
    unit = tmp_path / "oktasync.service"  # the same unit, run from this checkout's install
    unit.write_text(UNIT.read_text().replace("/usr/local/bin/oktasync", str(oktasync)))
    done = subprocess.run([analyze, "verify", str(unit)], capture_output=True, text=True,
                          timeout=60, check=False)
    assert done.returncode == 0 and done.stderr.strip() == "", done.stderr


def test_the_unit_runs_the_service_as_the_readme_says() -> None:
    parser = configparser.ConfigParser(strict=False, interpolation=None)
    parser.optionxform = str  # keys as written: systemd is case-sensitive
    parser.read_string(UNIT.read_text())
    service = parser["Service"]
    assert service["User"] == "oktasync" and service["Group"] == "oktasync"
    assert service["ExecStart"].endswith("oktasync serve --config /etc/oktasync/oktasync.toml")
    assert service["ExecReload"] == "/bin/kill -HUP $MAINPID"
    assert service["KillSignal"] == "SIGTERM"
    assert service["Restart"] == "on-failure"
    assert service["ProtectSystem"] == "strict"
    assert service["ReadWritePaths"] == "/var/lib/oktasync"
    assert service["NoNewPrivileges"] == "true"
    assert parser["Install"]["WantedBy"] == "multi-user.target"
