"""Packaging: what users install must work, not just the editable checkout.

An editable install hides packaging mistakes (a subpackage left out of the
wheel, stubs or migrations not shipped), so the slow tests build the real
wheel, install it into a clean virtualenv and use it from there.
"""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
import textwrap
import zipfile
from pathlib import Path
from typing import Any

import pytest

ROOT = Path(__file__).resolve().parents[1]
# Source folder -> installed package path, as mapped in setup.py.
PACKAGE_DIRS = {
    "protos/stateward/v1": "stateward/v1",
    "server": "stateward/server",
    "storage": "stateward/storage",
    "client": "stateward/client",
}
SHIPPED_SUFFIXES = {".py", ".pyi", ".proto", ".ini", ".mako"}
COPY_IGNORE = shutil.ignore_patterns(
    ".git",
    ".venv",
    "build",
    "dist",
    "*.egg-info",
    "__pycache__",
    ".*_cache",
    ".hypothesis",
    "node_modules",
    "stateward-data",
)
SLOW = 1200  # seconds; building and installing fetch packages from the index


def run(cmd: list[str | Path], *, timeout: float = 600, **kwargs: Any) -> str:
    """Run a command; on failure, fail the test with its full output."""
    shown = " ".join(map(str, cmd))
    try:
        proc = subprocess.run(
            [str(c) for c in cmd], capture_output=True, text=True, timeout=timeout, **kwargs
        )
    except subprocess.TimeoutExpired as exc:
        pytest.fail(
            f"timed out after {timeout}s: {shown}\n{exc.stdout}\n{exc.stderr}", pytrace=False
        )
    if proc.returncode != 0:
        pytest.fail(
            f"exit {proc.returncode}: {shown}\n"
            f"--- stdout ---\n{proc.stdout[-8000:]}\n--- stderr ---\n{proc.stderr[-8000:]}",
            pytrace=False,
        )
    return proc.stdout


def source_files() -> list[str]:
    """Installed paths of every file the wheel must ship, from the source tree."""
    expected = []
    for folder, package in PACKAGE_DIRS.items():
        for path in (ROOT / folder).rglob("*"):
            if "__pycache__" in path.parts or not path.is_file():
                continue
            if path.suffix in SHIPPED_SUFFIXES or path.name == "py.typed":
                expected.append(f"{package}/{path.relative_to(ROOT / folder).as_posix()}")
    return sorted(expected)


@pytest.fixture(scope="module")
def wheel(tmp_path_factory: pytest.TempPathFactory) -> Path:
    # Build from a clean copy: setuptools reuses build/lib, where stale files
    # from an earlier build would end up in the wheel.
    tmp = tmp_path_factory.mktemp("wheel")
    src = tmp / "src"
    shutil.copytree(ROOT, src, ignore=COPY_IGNORE)
    run([sys.executable, "-m", "build", "--wheel", "--outdir", tmp / "dist", src])
    (built,) = (tmp / "dist").glob("stateward-0.1.0-*.whl")
    return built


@pytest.mark.slow
@pytest.mark.timeout(SLOW)
def test_wheel_contents(wheel: Path) -> None:
    names = set(zipfile.ZipFile(wheel).namelist())

    missing = [f for f in source_files() if f not in names]
    assert not missing, f"source files not shipped in {wheel.name} (no __init__.py?): {missing}"

    tops = {n.split("/", 1)[0] for n in names}
    assert tops == {"stateward", "stateward-0.1.0.dist-info"}, f"unexpected top level: {tops}"
    assert "stateward/__init__.py" not in names, "stateward must stay a namespace package"
    for package in PACKAGE_DIRS.values():  # PEP 561; mypy needs it for the editable install too
        assert f"{package}/py.typed" in names, f"{package}/py.typed missing"

    for pattern in (
        "stateward/v1/*.proto",
        "stateward/v1/*_pb2.pyi",
        "stateward/v1/*_pb2.py",
        "stateward/v1/*_pb2_grpc.py",
        "stateward/storage/migrations/versions/*.py",
    ):
        assert any(Path(n).match(pattern) for n in names), f"nothing matches {pattern}"
    for name in (
        "stateward/storage/migrations/env.py",
        "stateward/storage/migrations/script.py.mako",
    ):
        assert name in names, f"{name} missing: migrations cannot run from the wheel"


IMPORT_ALL = textwrap.dedent("""
    import importlib, importlib.util, pkgutil, sys, traceback

    failures, imported = [], []

    def record(name):
        failures.append(f"{name}:\\n{traceback.format_exc()}")

    for root in ("stateward.v1", "stateward.server", "stateward.storage", "stateward.client"):
        try:
            pkg = importlib.import_module(root)
        except Exception:
            record(root)
            continue
        names = [root] + [m.name for m in pkgutil.walk_packages(pkg.__path__, root + ".", record)]
        # A __main__ module runs its program when imported; `stateward --help` covers it.
        names = [n for n in names if not n.endswith(".__main__")]
        for name in names:
            try:
                module = importlib.import_module(name)
            except Exception:
                record(name)
                continue
            if not (module.__file__ or "").startswith(sys.prefix):
                failures.append(f"{name} imported from outside the venv: {module.__file__}")
            imported.append(name)

    for bare in ("server", "storage", "client", "protos"):
        if importlib.util.find_spec(bare) is not None:
            failures.append(f"the wheel installed a bare top-level module {bare!r}")

    print(f"imported {len(imported)} modules")
    if failures:
        print("\\n".join(failures), file=sys.stderr)
        sys.exit(1)
""")


@pytest.mark.slow
@pytest.mark.timeout(SLOW)
def test_wheel_installs_and_imports(wheel: Path, tmp_path: Path) -> None:
    env = tmp_path / "venv"
    run([sys.executable, "-m", "venv", env])
    py, cli = env / "bin" / "python", env / "bin" / "stateward"
    # [langgraph]: stateward.client.langgraph needs it to import (an optional extra).
    extras = f"{wheel}[server,langgraph]"
    run([py, "-m", "pip", "install", "-q", "--disable-pip-version-check", extras])

    # -I: no cwd, PYTHONPATH or user site, so only the installed wheel is seen.
    out = run([py, "-I", "-c", IMPORT_ALL], cwd=tmp_path)
    assert "imported" in out

    help_text = run([cli, "--help"], cwd=tmp_path, timeout=120)
    assert help_text.strip(), "`stateward --help` printed nothing"


@pytest.mark.parametrize("module", ["stateward.client", "stateward.client.cli"])
def test_client_import_stays_light(module: str) -> None:
    # A client-only install has no server extra: the client must not need it.
    code = f"import json, sys, {module}; print(json.dumps(sorted(sys.modules)))"
    loaded = json.loads(run([sys.executable, "-I", "-c", code], cwd=ROOT / "tests", timeout=120))
    forbidden = ("stateward.server", "stateward.storage", "sqlalchemy", "alembic", "psycopg")
    heavy = [m for m in loaded if any(m == f or m.startswith(f + ".") for f in forbidden)]
    assert not heavy, (
        f"importing {module} pulled in {len(heavy)} server-side modules, e.g. {heavy[:8]}; "
        f"`python -X importtime -c 'import {module}'` shows who imports them"
    )
