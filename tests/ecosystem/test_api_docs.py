"""docs/api.md is generated from the proto comments, complete, and not stale."""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path
from types import ModuleType

from stateward.v1 import (
    common_pb2,
    execution_pb2,
    lifecycle_pb2,
    recovery_pb2,
    state_pb2,
)

REPO = Path(__file__).resolve().parents[2]


def load_generator() -> ModuleType:
    spec = importlib.util.spec_from_file_location("gen_api_docs", REPO / "scripts/gen_api_docs.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # dataclasses look their module up
    spec.loader.exec_module(module)
    return module


def test_api_reference_is_fresh_and_complete(tmp_path: Path) -> None:
    generator = load_generator()
    text = generator.generate()
    assert text == (REPO / "docs" / "api.md").read_text(), "docs/api.md is stale: make docs"

    for module in (common_pb2, execution_pb2, lifecycle_pb2, recovery_pb2, state_pb2):
        file = module.DESCRIPTOR
        for service in file.services_by_name.values():
            assert f"</a>{service.name}\n" in text
            for method in service.methods:
                assert f"| `{method.name}` |" in text, method.full_name
        for message in file.message_types_by_name.values():
            assert f'<a id="{generator.anchor(message.full_name)}"></a>' in text
            for field in message.fields:
                assert f"| `{field.name}` = {field.number} |" in text, field.full_name
        for enum in file.enum_types_by_name.values():
            for value in enum.values:
                assert f"| `{value.name}` | {value.number} |" in text

    # Streaming is marked, comments become descriptions, diagrams stay code.
    assert "| `SubscribeEvents` |" in text and "stream [`SubscribeEventsResponse`]" in text
    assert "| `UploadCheckpoint` | stream [`UploadCheckpointRequest`]" in text
    assert "Creates an agent in status CREATED." in text
    assert "```\n  CREATED     -> INITIALIZED | TERMINATED | ERROR" in text

    stale = tmp_path / "api.md"
    stale.write_text(text + "edited by hand\n")
    assert generator.main(["--check", "--output", str(stale)]) == 1
    assert generator.main(["--output", str(stale)]) == 0
    assert generator.main(["--check", "--output", str(stale)]) == 0
