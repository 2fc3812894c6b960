"""The client stays light: no module of it imports the server, storage or SQLAlchemy."""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap
from pathlib import Path

import stateward.client

FORBIDDEN = ("stateward.server", "stateward.storage", "sqlalchemy", "alembic", "psycopg")

IMPORT_EVERY_MODULE = textwrap.dedent("""
    import importlib, json, pkgutil, sys
    import stateward.client as root
    names = [m.name for m in pkgutil.walk_packages(root.__path__, "stateward.client.")]
    for name in names:
        if not name.endswith("__main__"):
            importlib.import_module(name)
    print(json.dumps({"modules": names, "loaded": sorted(sys.modules)}))
""")


def test_no_client_module_imports_the_server() -> None:
    proc = subprocess.run(
        [sys.executable, "-c", IMPORT_EVERY_MODULE],
        capture_output=True,
        text=True,
        timeout=120,
        cwd=Path(__file__).parent,
        check=True,
    )
    result = json.loads(proc.stdout)
    assert "stateward.client.cli.agents" in result["modules"]
    heavy = [m for m in result["loaded"] if any(m == f or m.startswith(f + ".") for f in FORBIDDEN)]
    assert not heavy, f"the client pulled in server-side modules: {heavy}"


def test_public_names_are_exported() -> None:
    for name in stateward.client.__all__:
        assert getattr(stateward.client, name) is not None
