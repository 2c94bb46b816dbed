"""Tool arguments are checked against the agent's schema before a tool runs; schemas outside the subset are refused."""

from __future__ import annotations

import pytest

from aybiza.tools.schema import check_schema, problems

ORDER = {"type": "object", "required": ["order_id"], "additionalProperties": False, "properties": {
    "order_id": {"type": "string", "pattern": "^[0-9]{4,10}$"},
    "items": {"type": "array", "maxItems": 2, "items": {"type": "integer", "minimum": 1}},
    "speed": {"type": "string", "enum": ["standard", "express"]},
}}


def test_arguments_that_fit_have_no_problems() -> None:
    check_schema(ORDER)
    assert problems({"order_id": "4321", "items": [1, 2], "speed": "express"}, ORDER) == []


def test_each_problem_is_named_for_the_model() -> None:
    found = problems({"items": [0, 1, 2], "speed": "teleport", "coupon": "X"}, ORDER)
    assert "order_id is missing" in found
    assert "coupon is not an argument of this tool" in found
    assert "items must have at most 2 items" in found and "items[0] must be at least 1" in found
    assert "speed must be one of ['standard', 'express']" in found
    assert problems({"order_id": 4321}, ORDER) == ["order_id must be a string"]
    assert problems({"order_id": "12"}, ORDER) == ["order_id must match ^[0-9]{4,10}$"]
    assert problems({"order_id": "1234", "items": [True]}, ORDER) == ["items[0] must be an integer"]


@pytest.mark.parametrize(("schema", "message"), [
    ({"type": "object", "properties": {"a": {"type": "string", "oneOf": []}}}, "unsupported"),
    ({"type": "object", "properties": {"a": {"type": "date"}}}, "type must be"),
    ({"type": "object", "required": ["b"], "properties": {}}, "unknown properties"),
    ({"type": "object", "properties": {"a": {"type": "string", "pattern": "("}}}, "not a regular expression"),
])
def test_a_schema_outside_the_subset_is_refused(schema: dict[str, object], message: str) -> None:
    with pytest.raises(ValueError, match=message):
        check_schema(schema)
