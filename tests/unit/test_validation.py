"""Input validation (server/domain/validation.py): every rule, hostile input first."""

from __future__ import annotations

import json
import math

import pytest
from hypothesis import given
from hypothesis import strategies as st

from stateward.server.domain import validation as check
from stateward.server.domain.errors import InvalidArgument, Violations

HOSTILE_IDS = [
    "..",
    ".",
    "../etc",
    "a/b",
    "a\\b",
    "%2e%2e",
    "%2F",
    "/etc/passwd",
    "a\x00b",
    "\x00",
    "a" * 129,
    "agént",
    "ａｂｃ",  # fullwidth letters
    "a b",
    "a\n",
    "\na",
    "a\t",
    "a'; DROP TABLE agents;--",
    'a"',
    "a;b",
    "a*",
    "a%",
    "-a",
    "_a",
    ":a",
    "@a",
    "😀",
]

GOOD_IDS = ["a", "A", "0", "a" * 128, "agent-1", "a.b_c:d@e-f", "a..", "a--", "9lives"]


def violations_of(fn, *args, **kwargs) -> list[tuple[str, str]]:  # type: ignore[no-untyped-def]
    v = Violations()
    fn(v, *args, **kwargs)
    return [(item.field, item.description) for item in v.items]


@pytest.mark.parametrize("agent_id", HOSTILE_IDS)
def test_hostile_ids_are_refused(agent_id: str) -> None:
    found = violations_of(check.check_id, "agent_id", agent_id)
    assert len(found) == 1
    field, description = found[0]
    assert field == "agent_id"
    assert "128 characters" in description and "letters, digits" in description


@pytest.mark.parametrize("agent_id", GOOD_IDS)
def test_good_ids_pass(agent_id: str) -> None:
    assert violations_of(check.check_id, "agent_id", agent_id) == []


def test_an_empty_id_is_required_unless_optional() -> None:
    assert violations_of(check.check_id, "agent_id", "") == [("agent_id", "is required")]
    assert violations_of(check.check_id, "agent_id", "", required=False) == []


@given(st.text(max_size=140))
def test_check_id_agrees_with_the_documented_pattern(value: str) -> None:
    documented = (
        0 < len(value) <= 128
        and value[0].isascii()
        and value[0].isalnum()
        and all(c.isascii() and (c.isalnum() or c in "._:@-") for c in value)
    )
    assert (violations_of(check.check_id, "agent_id", value) == []) == documented


@pytest.mark.parametrize("namespace", ["default", "a", "team-1", "a_b", "0" + "a" * 62])
def test_good_namespaces(namespace: str) -> None:
    assert violations_of(check.check_namespace, namespace) == []


@pytest.mark.parametrize(
    "namespace", ["", "Default", "-a", "_a", "a" * 64, "../x", "a/b", "a.b", "a b", "a\x00", "é"]
)
def test_bad_namespaces_name_the_metadata_key(namespace: str) -> None:
    found = violations_of(check.check_namespace, namespace)
    assert [field for field, _ in found] == ["x-stateward-namespace"]


@pytest.mark.parametrize("request_id", ["", "r", "x" * 128, "0f8e-abc:1/2?!"])
def test_good_request_ids(request_id: str) -> None:
    assert violations_of(check.check_request_id, request_id) == []


@pytest.mark.parametrize("request_id", ["a b", "x" * 129, "é", "a\x00", "a\n", "\x7f"])
def test_bad_request_ids(request_id: str) -> None:
    assert [f for f, _ in violations_of(check.check_request_id, request_id)] == ["request_id"]


def test_text_limits() -> None:
    assert violations_of(check.check_text, "type", "t" * 128, check.MAX_TYPE) == []
    assert violations_of(check.check_text, "type", "é" * 128, check.MAX_TYPE) == []
    [(field, description)] = violations_of(check.check_text, "type", "t" * 129, check.MAX_TYPE)
    assert field == "type" and "at most 128 characters (got 129)" in description
    assert violations_of(check.check_text, "type", "", 10, required=True) == [
        ("type", "is required")
    ]
    assert violations_of(check.check_text, "type", "", 10) == []
    [(_, description)] = violations_of(check.check_text, "type", "a\x00", 10)
    assert "NUL" in description


def labels_violations(labels: dict[str, str]) -> list[tuple[str, str]]:
    return violations_of(check.check_labels, "labels", labels)


def test_labels_at_the_limits_pass() -> None:
    assert labels_violations({f"k{i}": "v" for i in range(64)}) == []
    assert labels_violations({"k" * 256: "v" * 256}) == []
    assert labels_violations({"k": ""}) == []
    assert labels_violations({"ключ": "значение 🎉"}) == []


def test_too_many_labels() -> None:
    [(field, description)] = labels_violations({f"k{i}": "v" for i in range(65)})
    assert field == "labels"
    assert "at most 64 labels" in description and "65" in description


@pytest.mark.parametrize(
    ("labels", "words"),
    [
        ({"k" * 257: "v"}, "keys must be 1 to 256"),
        ({"": "v"}, "keys must be 1 to 256"),
        ({"a\x00": "v"}, "no NUL"),
        ({"k": "v" * 257}, "values must be at most 256"),
        ({"k": "v\x00"}, "no NUL"),
    ],
)
def test_bad_labels_name_the_label(labels: dict[str, str], words: str) -> None:
    [(field, description)] = labels_violations(labels)
    assert field.startswith("labels[")
    assert words in description


def test_page_sizes() -> None:
    def resolve(size: int) -> tuple[int, list[tuple[str, str]]]:
        v = Violations()
        resolved = check.check_page_size(v, size)
        return resolved, [(i.field, i.description) for i in v.items]

    assert resolve(0) == (50, [])
    assert resolve(1) == (1, [])
    assert resolve(1000) == (1000, [])
    for bad in (1001, -1, 2**31 - 1, -(2**31)):
        _, found = resolve(bad)
        assert [f for f, _ in found] == ["page_size"]
        assert "between 0 and 1000" in found[0][1]


# -- JSON documents ----------------------------------------------------------------------


def parse(raw: bytes, **kwargs):  # type: ignore[no-untyped-def]
    v = Violations()
    value = check.parse_json(
        v, "config_json", raw, limit=kwargs.pop("limit", check.MAX_CONFIG), **kwargs
    )
    return value, [(i.field, i.description) for i in v.items]


def nested(depth: int, kind: str = "object") -> bytes:
    if kind == "object":
        return ('{"a":' * depth + "1" + "}" * depth).encode()
    return ("[" * depth + "1" + "]" * depth).encode()


def test_an_empty_document_is_an_empty_object() -> None:
    assert parse(b"") == ({}, [])
    assert parse(b"", require_object=False, empty=None) == (None, [])


def test_valid_object() -> None:
    assert parse(b'{"a": [1, 2.5, "x", null, true]}') == ({"a": [1, 2.5, "x", None, True]}, [])


def test_non_utf8_is_refused_with_the_offset() -> None:
    value, [(field, description)] = parse(b'{"a": "\xff"}')
    assert value is None and field == "config_json"
    assert "UTF-8" in description and "offset 7" in description


@pytest.mark.parametrize(
    ("raw", "kind"), [(b"[]", "list"), (b"1", "int"), (b'"x"', "str"), (b"null", "NoneType")]
)
def test_non_objects_are_refused(raw: bytes, kind: str) -> None:
    value, [(field, description)] = parse(raw)
    assert value is None and field == "config_json"
    assert description == f"must be a JSON object, not {kind}"


def test_non_objects_pass_when_allowed() -> None:
    assert parse(b"[1]", require_object=False) == ([1], [])


@pytest.mark.parametrize("kind", ["object", "array"])
def test_depth_64_passes_and_65_is_refused(kind: str) -> None:
    # Wrapped in one object so arrays pass the top-level shape check: depth = 1 + inner.
    def document(depth: int) -> bytes:
        return (
            nested(depth, kind) if kind == "object" else b'{"a":' + nested(depth - 1, kind) + b"}"
        )

    value, found = parse(document(64))
    assert found == [] and value is not None
    value, [(field, description)] = parse(document(65))
    assert value is None and field == "config_json"
    assert "nested at most 64 levels" in description


def test_empty_containers_count_as_a_level() -> None:
    assert parse(b'{"a":' * 63 + b"{}" + b"}" * 63)[1] == []
    assert parse(b'{"a":' * 64 + b"{}" + b"}" * 64)[1] != []


def test_absurd_nesting_is_refused_not_crashed() -> None:
    value, [(_, description)] = parse(b"[" * 200_000, require_object=False)
    assert value is None and "nested at most 64" in description


@pytest.mark.parametrize("number", [2**53 + 1, 2**63 + 1, -(2**64) - 3, 10**40])
def test_big_integers_survive_exactly(number: int) -> None:
    value, found = parse(f'{{"n": {number}}}'.encode())
    assert found == [] and value == {"n": number}
    assert type(value["n"]) is int


@pytest.mark.parametrize("constant", ["NaN", "Infinity", "-Infinity"])
def test_nan_and_infinity_are_refused(constant: str) -> None:
    value, [(field, description)] = parse(f'{{"x": {constant}}}'.encode())
    assert value is None and field == "config_json"
    assert "valid JSON" in description and constant.lstrip("-") in description


def test_out_of_range_floats_are_still_json() -> None:
    # Valid JSON grammar; the raw bytes are what gets stored, so nothing is rounded.
    value, found = parse(b'{"x": 1e400}')
    assert found == [] and math.isinf(value["x"])


def test_the_size_limit_is_named() -> None:
    value, [(field, description)] = parse(b'{"a": "' + b"x" * 20 + b'"}', limit=16)
    assert value is None and field == "config_json"
    assert "at most 16 bytes" in description and "got 29" in description


def test_the_default_config_limit_is_one_mebibyte() -> None:
    body = b'{"a": "' + b"x" * (check.MAX_CONFIG - 9) + b'"}'
    assert len(body) == check.MAX_CONFIG
    assert parse(body)[1] == []
    [(_, description)] = parse(body + b" ")[1]
    assert f"at most {1 << 20} bytes" in description


@pytest.mark.parametrize(
    "raw", [b"{", b"{'a': 1}", b'{"a": 1,}', b"\xef\xbb\xbf{}", b'{"a"}', b"{} {}"]
)
def test_malformed_json(raw: bytes) -> None:
    value, [(field, description)] = parse(raw)
    assert value is None and field == "config_json"
    assert description.startswith("must be valid JSON")


@given(
    st.recursive(
        st.none() | st.booleans() | st.integers() | st.text(),
        lambda children: (
            st.lists(children, max_size=4)
            | st.dictionaries(st.text(max_size=5), children, max_size=4)
        ),
        max_leaves=20,
    )
)
def test_any_json_object_round_trips(inner: object) -> None:
    document = {"doc": inner}
    value, found = parse(json.dumps(document).encode())
    assert found == [] and value == document


def test_violations_collect_every_field() -> None:
    v = Violations()
    check.check_id(v, "agent_id", "..")
    check.check_text(v, "type", "", 10, required=True)
    check.check_labels(v, "labels", {"": "x"})
    with pytest.raises(InvalidArgument) as caught:
        v.raise_if_any()
    assert [f.field for f in caught.value.violations] == ["agent_id", "type", "labels['']"]
    assert "agent_id:" in caught.value.message and "type: is required" in caught.value.message


def test_no_violations_raise_nothing() -> None:
    Violations().raise_if_any()
