"""The README's Python session runs as written against a live server."""

from __future__ import annotations

import re
from pathlib import Path

from stateward.server.config import Settings
from tests.support.server import ServerThread

README = Path(__file__).resolve().parents[2] / "README.md"


def test_the_readme_python_session_runs(tmp_path: Path) -> None:
    blocks = re.findall(r"```python\n(.*?)```", README.read_text(), re.S)
    assert blocks, "the README has no Python example"
    settings = Settings(listen="127.0.0.1:0", data_dir=str(tmp_path), log_level="WARNING")
    server = ServerThread(settings).start()
    try:
        code = blocks[0].replace('"127.0.0.1:50051"', repr(server.target))
        exec(compile(code, "README.md", "exec"), {"print": lambda *args: None})
    finally:
        server.close()
