"""Output for people (aligned tables, detail views) and for scripts (JSON)."""

from __future__ import annotations

import dataclasses
import json
from collections.abc import Iterable, Sequence
from datetime import UTC, datetime, timedelta
from enum import Enum
from typing import Any


def table(headers: Sequence[str], rows: Iterable[Sequence[Any]]) -> str:
    """Columns aligned on the widest cell; the last column is not padded."""
    lines = [list(headers)] + [[cell(value) for value in row] for row in rows]
    widths = [max(len(line[i]) for line in lines) for i in range(len(headers))]
    return "\n".join(
        "  ".join(text.ljust(width) for text, width in zip(line, widths, strict=True)).rstrip()
        for line in lines
    )


def details(pairs: Iterable[tuple[str, Any]]) -> str:
    """``key: value`` lines with the values aligned; pairs whose value is None are left out."""
    shown = [(key, cell(value)) for key, value in pairs if value is not None]
    width = max((len(key) for key, _ in shown), default=0) + 1
    return "\n".join(f"{key + ':':<{width}} {text}" for key, text in shown)


def cell(value: Any) -> str:
    """How one value reads in a table."""
    if value is None:
        return "-"
    if isinstance(value, datetime):
        return time(value)
    if isinstance(value, Enum):
        return str(value.value)
    if isinstance(value, bool):
        return "yes" if value else "no"
    if isinstance(value, timedelta):
        return human_duration(value)
    if isinstance(value, dict):
        return compact_json(value)
    return str(value)


def time(value: datetime) -> str:
    """A UTC time to the second, e.g. ``2026-11-26 06:40:17Z``."""
    return value.astimezone(UTC).strftime("%Y-%m-%d %H:%M:%SZ")


def precise_time(value: datetime) -> str:
    """A UTC time to the millisecond, e.g. ``2026-11-26 06:40:17.123Z``."""
    utc = value.astimezone(UTC)
    return utc.strftime("%Y-%m-%d %H:%M:%S.") + f"{utc.microsecond // 1000:03d}Z"


def human_bytes(count: int | float) -> str:
    """``512 B``, ``1.5 KiB``, ``3.0 MiB``..."""
    value = float(count)
    for unit in ("B", "KiB", "MiB", "GiB", "TiB"):
        if abs(value) < 1024 or unit == "TiB":
            return f"{int(value)} B" if unit == "B" else f"{value:.1f} {unit}"
        value /= 1024
    raise AssertionError("unreachable")  # pragma: no cover


def human_duration(value: timedelta) -> str:
    """``850ms``, ``45s``, ``2m30s``, ``1h05m``, ``3d04h``."""
    seconds = value.total_seconds()
    if seconds < 1:
        return f"{seconds * 1000:.0f}ms"
    if seconds < 60:
        return f"{seconds:.3g}s"
    minutes, secs = divmod(round(seconds), 60)
    if minutes < 60:
        return f"{minutes}m{secs:02d}s"
    hours, minutes = divmod(minutes, 60)
    if hours < 24:
        return f"{hours}h{minutes:02d}m"
    days, hours = divmod(hours, 24)
    return f"{days}d{hours:02d}h"


def compact_json(value: Any) -> str:
    return json.dumps(value, separators=(",", ":"), ensure_ascii=False)


def to_json(value: Any) -> str:
    """Indented JSON of models (dataclasses), lists and dicts; times in ISO 8601 UTC."""
    return json.dumps(_plain(value), indent=2, ensure_ascii=False)


def to_json_line(value: Any) -> str:
    """Compact one-line JSON of the same (for JSON Lines output)."""
    return json.dumps(_plain(value), ensure_ascii=False, separators=(",", ":"))


def _plain(value: Any) -> Any:
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        return {f.name: _plain(getattr(value, f.name)) for f in dataclasses.fields(value)}
    if isinstance(value, dict):
        return {str(k): _plain(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_plain(v) for v in value]
    if isinstance(value, datetime):
        return value.astimezone(UTC).isoformat().replace("+00:00", "Z")
    if isinstance(value, timedelta):
        return value.total_seconds()
    if isinstance(value, Enum):
        return value.value
    return value
