"""Hypothesis strategies for hostile requests, built generically from protobuf descriptors.

A field's strategy is chosen by its type and name, so a new field or RPC gets hostile values
without editing this module. ``Seeds`` holds real ids and page tokens; drawing them now and
then makes requests reach existing records and the code paths behind validation.
"""

from __future__ import annotations

import base64
import json
import string
from dataclasses import dataclass, field
from typing import Any

from google.protobuf.descriptor import Descriptor, FieldDescriptor
from google.protobuf.message import Message
from hypothesis import strategies as st

NAMESPACE = "fuzz"

HOSTILE_WORDS = [
    "",
    " ",
    "\x00",
    "a\x00b",
    "' OR 1=1 --",
    '" OR ""="',
    ";DROP TABLE agents",
    "'; DROP TABLE agents; --",
    "%",
    "_",
    "\\",
    "..",
    ".",
    "../../etc/passwd",
    "..\\..\\windows",
    "/etc/passwd",
    "%2e%2e%2f",
    "%2e%2e%2fetc%2fpasswd",
    "C:\\",
    "C:\\Windows\\System32",
    "file:///etc/passwd",
    "\u202e\u200b\ufeff",
    "😀" * 3,
    "\n\r\t",
    "${jndi:ldap://x}",
    "{{7*7}}",
    "null",
    "-1",
    "9" * 40,
]
VALID_LOOKING = ["a", "agent-1", "job-a", "t1", "x" * 128, "A_b-c.d", "default"]

# grpc refuses non-printable metadata before sending: stay within printable ASCII
METADATA_WORDS = [
    "",
    " ",
    "' OR 1=1 --",
    ";DROP TABLE agents",
    "..",
    "../../etc/passwd",
    "/etc/passwd",
    "%2e%2e%2f",
    "C:\\",
    "*",
    "default",
    "x" * 1000,
]

INT_RANGES = {
    FieldDescriptor.TYPE_INT32: (-(2**31), 2**31 - 1),
    FieldDescriptor.TYPE_SINT32: (-(2**31), 2**31 - 1),
    FieldDescriptor.TYPE_SFIXED32: (-(2**31), 2**31 - 1),
    FieldDescriptor.TYPE_INT64: (-(2**63), 2**63 - 1),
    FieldDescriptor.TYPE_SINT64: (-(2**63), 2**63 - 1),
    FieldDescriptor.TYPE_SFIXED64: (-(2**63), 2**63 - 1),
    FieldDescriptor.TYPE_UINT32: (0, 2**32 - 1),
    FieldDescriptor.TYPE_FIXED32: (0, 2**32 - 1),
    FieldDescriptor.TYPE_UINT64: (0, 2**64 - 1),
    FieldDescriptor.TYPE_FIXED64: (0, 2**64 - 1),
}
ID_KINDS = ("agent_id", "run_id", "task_run_id", "checkpoint_id", "root_run_id")


@dataclass
class Seeds:
    """Real records of the namespace under test, so valid-looking ids hit existing rows."""

    ids: dict[str, list[str]] = field(default_factory=dict)
    page_tokens: list[str] = field(default_factory=list)

    def for_field(self, name: str) -> list[str]:
        kind = "run_id" if name == "root_run_id" else name
        if name in ("agent_ids",):
            kind = "agent_id"
        return self.ids.get(kind, [])


# -- scalars ----------------------------------------------------------------------------------
def hostile_text() -> st.SearchStrategy[str]:
    words = st.sampled_from(HOSTILE_WORDS)
    huge = st.builds(lambda w, n: (w or "x") * n, words, st.integers(1000, 100_000 // 8))
    return st.one_of(
        words,
        st.text(max_size=64),
        st.builds("".join, st.lists(words, max_size=6)),
        huge,
        st.sampled_from(VALID_LOOKING),
    )


def text_for(name: str, seeds: Seeds) -> st.SearchStrategy[str]:
    if name == "page_token":
        return page_token(seeds)
    known = seeds.for_field(name)
    if known:
        return st.one_of(st.sampled_from(known), hostile_text())
    return hostile_text()


def page_token(seeds: Seeds) -> st.SearchStrategy[str]:
    forged = st.one_of(
        st.binary(max_size=200).map(lambda b: base64.urlsafe_b64encode(b).decode()),
        st.binary(max_size=200).map(lambda b: base64.b64encode(b).decode()),
        st.builds(lambda t: t[:-2] + "AA", st.sampled_from(seeds.page_tokens or ["AAAA"])),
        hostile_text(),
    )
    foreign = st.sampled_from(seeds.page_tokens) if seeds.page_tokens else st.nothing()
    return st.one_of(forged, foreign)


def nested_json() -> st.SearchStrategy[bytes]:
    def build(depth: int, kind: int) -> bytes:
        if kind == 0:
            return b"[" * depth + b"]" * depth
        if kind == 1:
            return b'{"a":' * depth + b"1" + b"}" * depth
        return b"[" * depth  # unterminated

    return st.builds(build, st.integers(65, 5000), st.integers(0, 2))


def hostile_json() -> st.SearchStrategy[bytes]:
    return st.one_of(
        st.sampled_from(
            [
                b"",
                b"null",
                b"[]",
                b"1",
                b'"text"',
                b"true",
                b"NaN",
                b'{"a": NaN}',
                b'{"a": Infinity}',
                b'{"a": -Infinity}',
                b"{" + b'"a":1,' * 3 + b"}",
                b'{"a": 1e999999}',
                b'{"a": ' + b"9" * 5000 + b"}",
                b'{"a": -' + b"9" * 5000 + b"}",
                b'{"\x00": "\x00"}',
                b'{"a": "\\ud800"}',
                b'{"a": 1, "a": 2}',
                b"\xff\xfe\xfd",
                b'{"a": "\xc3\x28"}',
                b"\xef\xbb\xbf{}",
                b'{"a":1} trailing',
                b"{}",
                b'{"ok": true, "n": 1}',
            ]
        ),
        nested_json(),
        st.binary(max_size=256),
        st.builds(lambda n: b'{"k": "' + b"x" * n + b'"}', st.integers(1, 1_200_000)),
        st.dictionaries(st.text(max_size=8), st.integers() | st.text(max_size=8), max_size=5).map(
            lambda d: json.dumps(d).encode()
        ),
    )


def hostile_bytes(name: str) -> st.SearchStrategy[bytes]:
    if name.endswith("_json"):
        return hostile_json()
    return st.one_of(
        st.binary(max_size=512),
        st.builds(lambda b, n: b * n, st.binary(min_size=1, max_size=4), st.integers(1, 50_000)),
    )


def hostile_int(field_type: int) -> st.SearchStrategy[int]:
    low, high = INT_RANGES[field_type]
    edges = [v for v in (0, 1, -1, 2, 100, 1000, 1001, 10**6, low, high, low + 1, high - 1)]
    return st.one_of(
        st.sampled_from([v for v in edges if low <= v <= high]), st.integers(low, high)
    )


def hostile_enum(field: FieldDescriptor) -> st.SearchStrategy[int]:
    known = [v.number for v in field.enum_type.values]
    return st.one_of(
        st.sampled_from(known), st.integers(-(2**31), 2**31 - 1), st.sampled_from([-1, 999])
    )


# -- messages ---------------------------------------------------------------------------------
def time_fields(descriptor: Descriptor) -> st.SearchStrategy[dict[str, int]] | None:
    """Timestamps and durations: in range now and then, far out of range often."""
    if descriptor.full_name not in ("google.protobuf.Timestamp", "google.protobuf.Duration"):
        return None
    seconds = st.one_of(
        st.sampled_from([0, 1, -1, 60, 1_700_000_000, 4_102_444_800, -62_135_596_801]),
        st.sampled_from([253_402_300_800, 315_576_000_001, -(2**63), 2**63 - 1]),
        st.integers(-(2**63), 2**63 - 1),
    )
    nanos = st.one_of(
        st.just(0), st.sampled_from([-1, 999_999_999, 10**9]), st.integers(-(2**31), 2**31 - 1)
    )
    return st.fixed_dictionaries({"seconds": seconds, "nanos": nanos})


@st.composite
def message(draw: st.DrawFn, descriptor: Descriptor, seeds: Seeds, depth: int = 0) -> Message:
    """A message of ``descriptor``'s type with every field drawn hostile (or left unset)."""
    from google.protobuf import message_factory

    cls = message_factory.GetMessageClass(descriptor)
    built = cls()
    times = time_fields(descriptor)
    if times is not None:
        for key, value in draw(times).items():
            setattr(built, key, value)
        return built
    for fd in descriptor.fields:
        if not draw(st.booleans()) and draw(st.booleans()):
            continue  # a quarter of the fields stay unset
        fill_field(draw, built, fd, seeds, depth)
    return built


def fill_field(
    draw: st.DrawFn, built: Message, fd: FieldDescriptor, seeds: Seeds, depth: int
) -> None:
    target = getattr(built, fd.name)
    if fd.message_type is not None and fd.message_type.GetOptions().map_entry:
        draw_map(draw, target, fd, seeds)
        return
    if fd.is_repeated:
        count = draw(st.one_of(st.integers(0, 5), st.sampled_from([100, 1001, 2000])))
        if count == 0:
            return
        if fd.message_type is not None:
            if depth >= 3:
                return
            one = draw(message(fd.message_type, seeds, depth + 1))
            count = min(count, fits(one.ByteSize()))
            target.extend([one] * count)  # one drawn item, repeated: large but cheap
        else:
            items = draw(st.lists(scalar(fd, seeds), min_size=1, max_size=5))
            count = min(count, fits(sum(len(str(i)) for i in items) // len(items)))
            target.extend((items * (count // len(items) + 1))[:count])
        return
    if fd.message_type is not None:
        if depth < 3:
            target.CopyFrom(draw(message(fd.message_type, seeds, depth + 1)))
        return
    setattr(built, fd.name, draw(scalar(fd, seeds)))


def fits(item_size: int, budget: int = 1 << 20) -> int:
    """How many items of this size keep a request near 1 MiB (past the limits, still quick)."""
    return max(1, budget // max(1, item_size))


def draw_map(draw: st.DrawFn, target: Any, fd: FieldDescriptor, seeds: Seeds) -> None:
    key_fd = fd.message_type.fields_by_name["key"]
    value_fd = fd.message_type.fields_by_name["value"]
    if value_fd.message_type is not None:
        return  # no map of messages in the v1 API
    keys = draw(st.one_of(st.lists(scalar(key_fd, seeds), max_size=8), st.just(["many"])))
    if keys == ["many"]:
        keys = [f"k{n}" for n in range(draw(st.sampled_from([64, 65, 500, 2000])))]
    value = draw(scalar(value_fd, seeds))
    for key in keys[: fits(len(str(value)))]:
        target[key] = value


def scalar(fd: FieldDescriptor, seeds: Seeds) -> st.SearchStrategy[Any]:
    if fd.type == FieldDescriptor.TYPE_STRING:
        return text_for(fd.name, seeds)
    if fd.type == FieldDescriptor.TYPE_BYTES:
        return hostile_bytes(fd.name)
    if fd.type == FieldDescriptor.TYPE_BOOL:
        return st.booleans()
    if fd.type == FieldDescriptor.TYPE_ENUM:
        return hostile_enum(fd)
    if fd.type in (FieldDescriptor.TYPE_DOUBLE, FieldDescriptor.TYPE_FLOAT):
        return st.floats(allow_nan=True, allow_infinity=True, width=32)
    return hostile_int(fd.type)


# -- metadata ---------------------------------------------------------------------------------
def printable(max_size: int = 200) -> st.SearchStrategy[str]:
    alphabet = string.ascii_letters + string.digits + string.punctuation + " "
    return st.text(alphabet=alphabet, max_size=max_size)


def metadata() -> st.SearchStrategy[list[tuple[str, str]]]:
    """Mostly the seeded namespace (so calls get past it); hostile values otherwise."""
    hostile = st.one_of(st.sampled_from(METADATA_WORDS), printable())
    namespace = st.one_of(
        st.just([NAMESPACE]),
        st.just([NAMESPACE]),
        st.just([NAMESPACE]),
        st.just([]),
        hostile.map(lambda v: [v]),
        st.lists(hostile, min_size=2, max_size=3),
    )
    request_id = st.one_of(st.just([]), hostile.map(lambda v: [v]))

    def build(ns: list[str], rid: list[str]) -> list[tuple[str, str]]:
        return [("x-stateward-namespace", v) for v in ns] + [("x-request-id", v) for v in rid]

    return st.builds(build, namespace, request_id)
