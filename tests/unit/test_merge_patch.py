"""RFC 7386 JSON merge patch: the examples of Appendix A, verbatim."""

from __future__ import annotations

import copy
import json

import pytest

from stateward.server.domain.merge_patch import apply

# (original, patch, result) from RFC 7386, Appendix A.
APPENDIX_A = [
    ('{"a":"b"}', '{"a":"c"}', '{"a":"c"}'),
    ('{"a":"b"}', '{"b":"c"}', '{"a":"b","b":"c"}'),
    ('{"a":"b"}', '{"a":null}', "{}"),
    ('{"a":"b","b":"c"}', '{"a":null}', '{"b":"c"}'),
    ('{"a":["b"]}', '{"a":"c"}', '{"a":"c"}'),
    ('{"a":"c"}', '{"a":["b"]}', '{"a":["b"]}'),
    ('{"a":{"b":"c"}}', '{"a":{"b":"d","c":null}}', '{"a":{"b":"d"}}'),
    ('{"a":[{"b":"c"}]}', '{"a":[1]}', '{"a":[1]}'),
    ('["a","b"]', '["c","d"]', '["c","d"]'),
    ('{"a":"b"}', '["c"]', '["c"]'),
    ('{"a":"foo"}', "null", "null"),
    ('{"a":"foo"}', '"bar"', '"bar"'),
    ('{"e":null}', '{"a":1}', '{"e":null,"a":1}'),
    ("[1,2]", '{"a":"b","c":null}', '{"a":"b"}'),
    ("{}", '{"a":{"bb":{"ccc":null}}}', '{"a":{"bb":{}}}'),
]


@pytest.mark.parametrize(("original", "patch", "result"), APPENDIX_A)
def test_rfc7386_appendix_a(original: str, patch: str, result: str) -> None:
    assert apply(json.loads(original), json.loads(patch)) == json.loads(result)


@pytest.mark.parametrize(("original", "patch", "result"), APPENDIX_A)
def test_arguments_are_not_modified(original: str, patch: str, result: str) -> None:
    target, changes = json.loads(original), json.loads(patch)
    before = copy.deepcopy((target, changes))
    apply(target, changes)
    assert (target, changes) == before


def test_member_order_is_kept_and_new_members_go_last() -> None:
    merged = apply({"z": 1, "a": 2, "m": 3}, {"a": None, "b": 4, "z": 5})
    assert list(merged.items()) == [("z", 5), ("m", 3), ("b", 4)]


def test_large_integers_and_nested_nulls_pass_through() -> None:
    big = 2**80 + 1
    merged = apply({"n": {"deep": big}, "keep": None}, {"n": {"other": [None, big]}})
    assert merged == {"n": {"deep": big, "other": [None, big]}, "keep": None}
