"""The README stays true to the code: every setting is in its configuration table."""

from __future__ import annotations

import dataclasses
from pathlib import Path

from stateward.server.config import Settings

README = Path(__file__).resolve().parents[2] / "README.md"


def test_every_setting_is_documented_in_the_readme() -> None:
    text = README.read_text()
    table = text[text.index("## Configuration") :]
    missing = [f.name for f in dataclasses.fields(Settings) if f"`{f.name}`" not in table]
    # The retry_* tuning knobs are described together in one sentence under the table.
    missing = [name for name in missing if not name.startswith("retry_")]
    assert missing == [], f"settings missing from the README's configuration table: {missing}"
