"""The engine and the emulators are two distributions that share no code.

Why it matters: a production ``pip install oktasync`` must carry no test servers, and an
emulator that imported the engine's models could share the engine's misunderstanding of an
API, so a test against it would prove nothing. Checked three ways: the imports of both
packages (walked as syntax trees), the engine's message when the emulators are missing, and
the engine's own wheel installed alone into a fresh virtual environment, syncing against
emulators started from the other distribution.
"""

from __future__ import annotations

import ast
import json
import os
import select
import shutil
import signal
import subprocess
import sys
import urllib.request
import zipfile
from collections.abc import Iterator
from importlib import metadata
from pathlib import Path

import pytest
from packaging.markers import default_environment
from packaging.requirements import Requirement
from packaging.utils import canonicalize_name

REPO = Path(__file__).resolve().parents[1]
ENGINE = REPO / "src" / "oktasync"
EMULATORS = REPO / "emulators" / "src" / "oktasync_emulators"
# The only places of the engine that may import the emulators, and only lazily: the demo
# (itself imported by the CLI inside a function) and the `emulate` command.
ENGINE_MAY_IMPORT_EMULATORS = {"demo.py": "anywhere", "cli.py": "inside a function"}
MISSING_MESSAGE = "pip install ./emulators"
JSON_LINE_WITHIN_S = 30.0
SYNC_WITHIN_S = 120.0
# Refuses to import the emulators, as in an environment that has only the engine.
BLOCK_EMULATORS = """
import sys
from importlib.abc import MetaPathFinder

class NoEmulators(MetaPathFinder):
    def find_spec(self, name, path=None, target=None):
        if name == "oktasync_emulators" or name.startswith("oktasync_emulators."):
            raise ModuleNotFoundError(f"No module named {name!r}", name=name)
        return None

sys.meta_path.insert(0, NoEmulators())
from oktasync.cli import main
sys.exit(main(sys.argv[1:]))
"""


def imports_of(tree: ast.AST) -> Iterator[tuple[str, bool]]:
    """Every module a syntax tree imports, and whether the import is inside a function."""

    def walk(node: ast.AST, in_function: bool) -> Iterator[tuple[str, bool]]:
        for child in ast.iter_child_nodes(node):
            if isinstance(child, ast.Import):
                yield from ((alias.name, in_function) for alias in child.names)
            elif isinstance(child, ast.ImportFrom) and child.level == 0 and child.module:
                yield child.module, in_function
            inside = in_function or isinstance(child, (ast.FunctionDef, ast.AsyncFunctionDef))
            yield from walk(child, inside)

    yield from walk(tree, False)


def modules_of(package: Path) -> dict[str, list[tuple[str, bool]]]:
    return {path.relative_to(package).as_posix(): list(imports_of(ast.parse(
        path.read_text(encoding="utf-8"), filename=str(path)))) for path in
        sorted(package.rglob("*.py"))}


def is_under(module: str, package: str) -> bool:
    return module == package or module.startswith(package + ".")


def test_the_emulators_import_nothing_from_the_engine() -> None:
    modules = modules_of(EMULATORS)
    assert {"okta.py", "jira.py", "confluence.py", "runner.py", "cli.py"} <= set(modules)
    wrong = [f"{name} imports {module}" for name, imports in modules.items()
             for module, _ in imports if is_under(module, "oktasync")]
    assert wrong == []


def test_the_engine_imports_the_emulators_only_lazily_in_demo_and_emulate() -> None:
    modules = modules_of(ENGINE)
    assert {"cli.py", "demo.py", "engine.py", "targets/jira.py"} <= set(modules)
    found, wrong = set(), []
    for name, imports in modules.items():
        for module, in_function in imports:
            allowed = ENGINE_MAY_IMPORT_EMULATORS.get(name)
            if is_under(module, "oktasync_emulators"):
                found.add(name)
                if allowed is None or (allowed == "inside a function" and not in_function):
                    wrong.append(f"{name} imports {module}")
            if is_under(module, "oktasync.demo") and not in_function:
                wrong.append(f"{name} imports {module} when loaded: the demo must stay lazy")
    assert wrong == []
    assert found == set(ENGINE_MAY_IMPORT_EMULATORS)  # the check above has something to check


@pytest.mark.parametrize("argv", [["demo"], ["demo", "--users", "10"], ["emulate"],
                                  ["emulate", "--ports", "0,0,0"], ["emulate", "--help"],
                                  ["-v", "emulate"]])
def test_without_the_emulators_demo_and_emulate_say_how_to_install_them(
        argv: list[str]) -> None:
    result = subprocess.run([sys.executable, "-c", BLOCK_EMULATORS, *argv], capture_output=True,
                            text=True, timeout=60, check=False, stdin=subprocess.DEVNULL)
    assert result.returncode == 2, result.stderr
    assert result.stdout == ""
    command = argv[-1] if argv[0] == "-v" else argv[0]
    assert f"oktasync {command} needs the emulators" in result.stderr
    assert MISSING_MESSAGE in result.stderr
    assert "Traceback" not in result.stderr


def test_without_the_emulators_the_engine_still_answers() -> None:
    result = subprocess.run([sys.executable, "-c", BLOCK_EMULATORS, "--help"],
                            capture_output=True, text=True, timeout=60, check=False)
    assert result.returncode == 0, result.stderr
    assert "emulate" in result.stdout and "needs oktasync-emulators" in result.stdout


# ---------------------------------------------------------------------------------------------
# The engine's wheel, alone in a fresh virtual environment


def build_engine_wheel(tmp: Path) -> Path:
    """The engine's wheel, built from a copy of what the wheel is made of (a stale ``build/``
    of an older layout in the checkout cannot leak into it) by this environment's setuptools,
    so no index is needed."""
    source = tmp / "source"
    source.mkdir()
    for name in ("pyproject.toml", "README.md"):
        shutil.copy2(REPO / name, source / name)
    shutil.copytree(ENGINE, source / "src" / "oktasync",
                    ignore=shutil.ignore_patterns("__pycache__", "*.egg-info"))
    out = tmp / "wheel"
    subprocess.run([sys.executable, "-m", "pip", "wheel", "--quiet", "--no-deps", "--no-index",
                    "--no-build-isolation", "--wheel-dir", str(out), str(source)],
                   check=True, capture_output=True, timeout=180)
    (wheel,) = out.glob("oktasync-*.whl")
    return wheel


def engine_dependencies(wheel: Path) -> list[metadata.Distribution]:
    """The installed distributions the wheel needs at run time: its ``Requires-Dist`` without
    extras, followed through each dependency's own, as this environment resolved them."""
    installed = {canonicalize_name(d.metadata["Name"]): d for d in metadata.distributions()}
    with zipfile.ZipFile(wheel) as archive:
        (meta,) = [n for n in archive.namelist() if n.endswith(".dist-info/METADATA")]
        wanted = [line.split(":", 1)[1].strip() for line in
                  archive.read(meta).decode().splitlines() if line.startswith("Requires-Dist:")]
    seen: dict[str, metadata.Distribution] = {}
    while wanted:
        requirement = Requirement(wanted.pop())
        marker = requirement.marker
        if marker is not None and not marker.evaluate({**default_environment(), "extra": ""}):
            continue
        name = canonicalize_name(requirement.name)
        if name in seen:
            continue
        assert name in installed, f"{name} is needed by the engine but not installed here"
        seen[name] = installed[name]
        wanted.extend(installed[name].requires or [])
    return list(seen.values())


def link_into(site_packages: Path, dists: list[metadata.Distribution]) -> None:
    """Make ``dists`` importable in another environment: a link to each of their top-level
    files and folders (packages, modules, extension modules, dist-info)."""
    for dist in dists:
        files = dist.files
        assert files is not None, f"{dist.metadata['Name']} has no RECORD"
        for top in {f.parts[0] for f in files if f.parts[0] not in ("..", "__pycache__")}:
            target = Path(str(dist.locate_file(top)))
            link = site_packages / top
            if target.exists() and not link.exists():
                link.symlink_to(target)


def fresh_venv(tmp: Path, wheel: Path) -> Path:
    """A new virtual environment holding the wheel (installed by pip, scripts and all) and
    the engine's run-time dependencies, nothing else: ``oktasync_emulators`` is not among
    them, whatever this environment has."""
    venv = tmp / "venv"
    subprocess.run([sys.executable, "-m", "venv", "--without-pip", str(venv)], check=True,
                   timeout=120)
    python = venv / "bin" / "python"
    site_packages = Path(subprocess.run(
        [str(python), "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"],
        check=True, capture_output=True, text=True, timeout=60).stdout.strip())
    link_into(site_packages, engine_dependencies(wheel))
    subprocess.run([sys.executable, "-m", "pip", "--python", str(python), "install", "--quiet",
                    "--no-deps", "--no-index", str(wheel)],
                   check=True, capture_output=True, timeout=180)
    return venv


def clean_env() -> dict[str, str]:
    """No PYTHONPATH, no user site, no active venv: the child sees only its own environment."""
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "VIRTUAL_ENV")}
    env["PYTHONNOUSERSITE"] = "1"
    return env


def demo_config_for(info: dict[str, dict[str, str]], state: Path) -> str:
    """``config/demo.toml`` pointed at emulators on other ports and a scratch state dir."""
    text = (REPO / "config" / "demo.toml").read_text(encoding="utf-8")
    for product, port in (("okta", 8471), ("jira", 8472), ("confluence", 8473)):
        default = f'"http://127.0.0.1:{port}"'
        assert default in text
        text = text.replace(default, json.dumps(info[product]["url"]))
    assert 'dir = "../var/demo"' in text
    return text.replace('dir = "../var/demo"', f"dir = {json.dumps(state.as_posix())}")


def stats_of(url: str) -> dict[str, int]:
    no_proxy = urllib.request.build_opener(urllib.request.ProxyHandler({}))
    with no_proxy.open(f"{url}/_emulator/stats", timeout=10) as answer:
        result: dict[str, int] = json.load(answer)
    return result


@pytest.mark.slow
@pytest.mark.timeout(300)
def test_the_engine_alone_in_a_fresh_venv_syncs_against_the_other_distribution(
        tmp_path: Path) -> None:
    wheel = build_engine_wheel(tmp_path)
    with zipfile.ZipFile(wheel) as archive:
        names = archive.namelist()
        entry_points = next((archive.read(n).decode() for n in names
                             if n.endswith(".dist-info/entry_points.txt")), "")
    assert "oktasync/cli.py" in names and "oktasync/engine.py" in names
    assert [n for n in names if "emulator" in n] == []
    assert "oktasync = oktasync.cli:main" in entry_points
    assert "emulat" not in entry_points

    venv = fresh_venv(tmp_path, wheel)
    bin_dir, env = venv / "bin", clean_env()
    where = subprocess.run(
        [str(bin_dir / "python"), "-c", "import importlib.util as u, oktasync; "
         "print(oktasync.__file__); print(u.find_spec('oktasync_emulators'))"],
        capture_output=True, text=True, env=env, timeout=60, check=True).stdout.split()
    assert Path(where[0]).is_relative_to(venv)  # the wheel's engine, not this checkout's
    assert where[1] == "None"  # and no emulators to import

    for argv in (["demo"], ["emulate", "--ports", "0,0,0"]):
        refused = subprocess.run([str(bin_dir / "oktasync"), *argv], capture_output=True,
                                 text=True, env=env, timeout=60, check=False)
        assert refused.returncode == 2, refused.stderr
        assert MISSING_MESSAGE in refused.stderr and "Traceback" not in refused.stderr

    emulate = Path(sys.executable).with_name("oktasync-emulate")  # the other distribution
    stderr = (tmp_path / "emulate.err").open("wb")
    with stderr, subprocess.Popen(
            [str(emulate), "--ports", "0,0,0", "--users", "300", "--groups", "12",
             "--okta-rate-scale", "0"],
            stdout=subprocess.PIPE, stderr=stderr, stdin=subprocess.DEVNULL) as emulators:
        try:
            assert emulators.stdout is not None
            ready, _, _ = select.select([emulators.stdout], [], [], JSON_LINE_WITHIN_S)
            assert ready, "oktasync-emulate printed no JSON line"
            info = json.loads(emulators.stdout.readline())
            config = tmp_path / "demo.toml"
            config.write_text(demo_config_for(info, tmp_path / "state"), encoding="utf-8")
            sync = subprocess.run([str(bin_dir / "oktasync"), "sync", "--config", str(config)],
                                  capture_output=True, text=True, env=env,
                                  timeout=SYNC_WITHIN_S, check=False)
            assert sync.returncode == 0, sync.stdout + sync.stderr
            for product in ("jira", "confluence"):
                assert stats_of(info[product]["url"])["writes_applied"] > 0, product
        finally:
            emulators.send_signal(signal.SIGINT)
            code = emulators.wait(timeout=30)
    assert code == 0, (tmp_path / "emulate.err").read_text(errors="replace")
