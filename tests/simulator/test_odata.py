"""The simulator's OData query options, sans-IO: what matches, in which order, and what is refused."""

from __future__ import annotations

import pytest

from hub.simulator.odata import ODataError, Schema, apply, parse_filter, parse_query

SCHEMA: Schema = {"Number": "string", "Id": "int", "On": "bool", "At": "datetime", "Score": "decimal", "Tags": "array"}
ROWS = [
    {"Number": "101", "Id": 1, "On": True, "At": "2025-02-01T10:00:00.000Z", "Score": 1.5, "Tags": []},
    {"Number": "102", "Id": 2, "On": False, "At": "2025-02-02T23:30:00.000Z", "Score": None, "Tags": []},
    {"Number": "O'Neil", "Id": 3, "On": True, "At": "2025-03-01T00:00:00.000Z", "Score": 0.5, "Tags": []},
]


def ids(text: str) -> list[int]:
    body = apply(parse_query({"$filter": text}, SCHEMA, "Thing"), ROWS)
    return [row["Id"] for row in body["value"]]


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("Id eq 1 or Id eq 2 and On eq true", [1]),  # and binds tighter than or
        ("(Id eq 1 or Id eq 2) and On eq true", [1]),
        ("(Id eq 1 or Id eq 2) and On eq false", [2]),
        ("not (Id eq 1)", [2, 3]),
        ("On", [1, 3]),
        ("Id ge 2 and Id lt 3", [2]),
        ("Id ne 2", [1, 3]),
        ("Score gt 1", [1]),
        ("Score eq null", [2]),
        ("Score lt 1", [3]),  # null never compares greater or smaller
        ("Number eq 'O''Neil'", [3]),
        ("startswith(Number,'10') and endswith(Number,'2')", [2]),
        ("contains(tolower(Number),'o''n')", [3]),
        ("At gt 2025-02-01T12:00:00Z", [2, 3]),
        ("At le 2025-02-02T23:30:00.000+00:00", [1, 2]),
        ("date(At) eq 2025-02-02", [2]),
        ("date(At) ge 2025-02-01 and date(At) le 2025-02-28", [1, 2]),
    ],
)
def test_filter_semantics(text: str, expected: list[int]) -> None:
    assert ids(text) == expected


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("Number eq", "ends too early"),
        ("Number eq 'x", "unterminated"),
        ("Nope eq 1", "Nope"),
        ("Number eq 1", "incompatible"),
        ("At ge 2025-02-01", "date(Field)"),
        ("Id", "boolean"),
        ("Id eq 1 and Number", "boolean"),
        ("On gt true", "cannot compare"),
        ("Tags eq 1", "cannot be compared"),
        ("length(Number) eq 3", "unknown function"),
        ("date(Number) eq 2025-01-01", "date-time"),
        ("Id eq 1)", "unexpected"),
        ("Id eq 1 $ 2", "unexpected"),
        ("At gt 2025-13-01T00:00:00Z", "not a valid date-time"),
    ],
)
def test_bad_filters_are_400_with_the_reason(text: str, message: str) -> None:
    with pytest.raises(ODataError) as info:
        parse_filter(text, SCHEMA, "Thing")
    assert info.value.status == 400
    assert message in info.value.message
    assert info.value.body()["error"]["message"] == info.value.message


def test_orderby_select_paging_and_count() -> None:
    query = parse_query({"$orderby": "On desc, Id desc", "$select": "Id", "$top": "2", "$skip": "0",
                         "$count": "true"}, SCHEMA, "Thing")  # fmt: skip
    assert apply(query, ROWS) == {"@odata.count": 3, "value": [{"Id": 3}, {"Id": 1}]}
    nulls_first = apply(parse_query({"$orderby": "Score", "$select": "Id"}, SCHEMA, "Thing"), ROWS)
    assert nulls_first["value"] == [{"Id": 2}, {"Id": 3}, {"Id": 1}]
    paged = apply(parse_query({"$skip": "2", "$count": "false"}, SCHEMA, "Thing"), ROWS)
    assert [r["Id"] for r in paged["value"]] == [3] and "@odata.count" not in paged


def test_options_that_make_no_sense_for_one_entity() -> None:
    with pytest.raises(ODataError, match="collections"):
        parse_query({"$top": "1"}, SCHEMA, "Thing", collection=False)
    assert parse_query({"$select": "Id", "custom": "x"}, SCHEMA, "Thing", collection=False).select == ("Id",)
