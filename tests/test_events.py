"""The event model: every line is either a valid event or a rejection with a clear, coded reason."""

from __future__ import annotations

import orjson
import pytest

from detectors.events import (MAX_ID_CHARS, MAX_LINE_BYTES, MAX_SEED_ITEMS, MAX_TAGS, MAX_TEXT_CHARS,
                              MAX_TITLE_CHARS, MAX_TS, CatalogEditEvent, ClickEvent, RatingEvent,
                              RecQueryEvent, Rejection, actor, decode_event)

VALID = {
    "rating": {"type": "rating", "event_id": "r1", "ts": 100, "user_id": "u1", "item_id": "i1",
               "rating": 4, "text": "fine"},
    "click": {"type": "click", "event_id": "c1", "ts": 100.5, "user_id": "u1", "item_id": "i1",
              "session_id": "s1"},
    "catalog_edit": {"type": "catalog_edit", "event_id": "e1", "ts": 100, "item_id": "i1",
                     "seller_id": "s1", "title": "A lamp", "description": "bright", "tags": ["home"]},
    "rec_query": {"type": "rec_query", "event_id": "q1", "ts": 100, "client_id": "c1", "user_id": "u1",
                  "seed_items": ["i1", "i2"], "k": 10},
}


def line(kind: str = "rating", drop: tuple[str, ...] = (), **fields) -> bytes:
    record = {key: value for key, value in VALID[kind].items() if key not in drop}
    record.update(fields)
    return orjson.dumps(record)


def rejected(raw: bytes | str) -> Rejection:
    result = decode_event(raw)
    assert isinstance(result, Rejection), f"expected a rejection, got {result!r}"
    assert result.raw == (raw.encode() if isinstance(raw, str) else raw)  # nothing is lost
    return result


# -- valid events --------------------------------------------------------------------------------

@pytest.mark.parametrize("kind, model", [("rating", RatingEvent), ("click", ClickEvent),
                                         ("catalog_edit", CatalogEditEvent),
                                         ("rec_query", RecQueryEvent)])
def test_each_event_type_decodes_to_its_model(kind, model):
    event = decode_event(line(kind))
    assert isinstance(event, model)
    assert event.type == kind
    assert event.event_id == VALID[kind]["event_id"]
    assert event.ts == float(VALID[kind]["ts"])


def test_rating_fields_are_typed():
    event = decode_event(line("rating", rating=5, ts=10))
    assert (event.rating, event.ts, event.text) == (5.0, 10.0, "fine")
    assert isinstance(event.rating, float) and isinstance(event.ts, float)


def test_optional_fields_may_be_left_out():
    assert decode_event(line("rating", drop=("text",))).text is None
    assert decode_event(line("click", drop=("session_id",))).session_id is None
    edit = decode_event(line("catalog_edit", drop=("description", "tags")))
    assert (edit.description, edit.tags) == (None, [])
    assert decode_event(line("rec_query", drop=("user_id",))).user_id is None


def test_str_input_is_accepted_like_bytes():
    assert decode_event(line("click").decode()) == decode_event(line("click"))


def test_integer_ids_are_accepted_as_decimal_strings():
    event = decode_event(line("rating", event_id=7, user_id=196, item_id=242))
    assert (event.event_id, event.user_id, event.item_id) == ("7", "196", "242")
    query = decode_event(line("rec_query", seed_items=[1, "i2"]))
    assert query.seed_items == ["1", "i2"]


def test_unknown_extra_fields_are_ignored():
    event = decode_event(line("click", referrer="ads", nested={"a": [1]}))
    assert isinstance(event, ClickEvent)
    assert not hasattr(event, "referrer")


def test_boundary_values_are_valid():
    assert decode_event(line("rating", rating=1)).rating == 1.0
    assert decode_event(line("rating", rating=5)).rating == 5.0
    assert decode_event(line("rating", ts=0)).ts == 0.0
    assert isinstance(decode_event(line("rating", text="x" * MAX_TEXT_CHARS)), RatingEvent)
    assert isinstance(decode_event(line("catalog_edit", tags=["t"] * MAX_TAGS)), CatalogEditEvent)
    assert isinstance(decode_event(line("rec_query", seed_items=["i"] * MAX_SEED_ITEMS)), RecQueryEvent)
    assert isinstance(decode_event(line("rec_query", k=1)), RecQueryEvent)


def test_events_are_immutable():
    event = decode_event(line("rating"))
    with pytest.raises(Exception):
        event.rating = 1.0


@pytest.mark.parametrize("kind, expected", [("rating", ("user", "u1")), ("click", ("user", "u1")),
                                            ("catalog_edit", ("seller", "s1")),
                                            ("rec_query", ("client", "c1"))])
def test_actor_is_the_entity_responsible(kind, expected):
    assert actor(decode_event(line(kind))) == expected


# -- malformed_json ------------------------------------------------------------------------------

@pytest.mark.parametrize("raw", [b"", b"   ", b"{", b"not json", b'{"type": "rating",}', b"\xff\xfe{}",
                                 line("rating")[:-1]])
def test_unparseable_lines_are_malformed_json(raw):
    assert rejected(raw).reason.startswith("malformed_json: ")


def test_invalid_utf8_inside_a_string_is_malformed_json():
    raw = line("rating", item_id="ITEM").replace(b"ITEM", b"\xff\xfe")
    assert rejected(raw).reason.startswith("malformed_json: ")


@pytest.mark.parametrize("raw", [b"[1, 2]", b"5", b"null", b'"rating"', b"true"])
def test_json_that_is_not_an_object_is_malformed_json(raw):
    reason = rejected(raw).reason
    assert reason.startswith("malformed_json: ")
    assert "object" in reason


def test_lone_surrogate_in_str_input_is_rejected_not_raised():
    # decode_event promises never to raise, also for str input that cannot be encoded as UTF-8.
    result = decode_event('{"type": "click", "event_id": "\ud800"}')
    assert isinstance(result, Rejection)
    assert result.reason.startswith("malformed_json: ")


# -- unknown_type and missing_field ---------------------------------------------------------------

@pytest.mark.parametrize("value", ["purchase", "Rating", 5, None])
def test_unknown_type_names_the_type_and_the_known_ones(value):
    reason = rejected(line("rating", type=value)).reason
    assert reason.startswith("unknown_type: ")
    assert repr(value) in reason
    assert "rating" in reason and "rec_query" in reason


@pytest.mark.parametrize("raw", [line("rating", drop=("type",)), b"{}"])
def test_missing_type_is_a_missing_field(raw):
    assert rejected(raw).reason == "missing_field: type"


@pytest.mark.parametrize("kind, field", [("rating", "event_id"), ("rating", "ts"), ("rating", "user_id"),
                                         ("rating", "rating"), ("click", "item_id"),
                                         ("catalog_edit", "seller_id"), ("catalog_edit", "title"),
                                         ("rec_query", "client_id"), ("rec_query", "seed_items"),
                                         ("rec_query", "k")])
def test_missing_required_field_is_named(kind, field):
    assert rejected(line(kind, drop=(field,))).reason == f"missing_field: {field}"


# -- invalid_field --------------------------------------------------------------------------------

@pytest.mark.parametrize("kind, field, value", [
    ("rating", "ts", "12"),              # strings are not timestamps
    ("rating", "ts", True),
    ("rating", "ts", -1),
    ("rating", "ts", MAX_TS),            # milliseconds passed as seconds
    ("rating", "ts", 1_700_000_000_000),
    ("rating", "rating", "5"),           # strings are not ratings
    ("rating", "rating", True),          # nor are booleans
    ("rating", "rating", 0),
    ("rating", "rating", 6),
    ("rating", "rating", 5.01),
    ("rating", "event_id", True),        # bool is an int in Python but never an id
    ("rating", "event_id", ["r1"]),
    ("rating", "event_id", {"id": 1}),
    ("rating", "event_id", ""),
    ("rating", "user_id", None),
    ("rating", "text", ["x"]),
    ("catalog_edit", "title", ""),
    ("catalog_edit", "tags", "home"),
    ("rec_query", "k", 0),
    ("rec_query", "k", "5"),
    ("rec_query", "k", 2.5),
    ("rec_query", "seed_items", "i1"),
])
def test_mistyped_or_out_of_range_field_is_invalid(kind, field, value):
    reason = rejected(line(kind, **{field: value})).reason
    assert reason.startswith(f"invalid_field: {field}"), reason


@pytest.mark.parametrize("literal", [b"NaN", b"Infinity", b"-Infinity", b"1e400"])
def test_non_finite_timestamp_is_invalid(literal):
    raw = line("rating", ts=123456).replace(b"123456", literal)
    assert rejected(raw).reason.startswith("invalid_field: ts: ")


def test_non_finite_rating_is_invalid():
    raw = line("rating", rating=4).replace(b'"rating":4', b'"rating":NaN')
    assert rejected(raw).reason.startswith("invalid_field: rating: ")


def test_invalid_field_reason_includes_pydantics_message():
    reason = rejected(line("rating", rating=9)).reason
    assert reason == "invalid_field: rating: Input should be less than or equal to 5"


def test_invalid_nested_id_names_its_position():
    reason = rejected(line("rec_query", seed_items=["i1", True])).reason
    assert reason.startswith("invalid_field: seed_items.1: ")


# -- oversized ------------------------------------------------------------------------------------

def test_line_over_the_byte_limit_is_oversized_before_parsing():
    raw = line("rating", text="x" * MAX_LINE_BYTES)
    reason = rejected(raw).reason
    assert reason == f"oversized: line of {len(raw)} bytes exceeds {MAX_LINE_BYTES}"


def test_garbage_over_the_byte_limit_is_oversized_not_malformed():
    assert rejected(b"{" * (MAX_LINE_BYTES + 1)).reason.startswith("oversized: line of ")


@pytest.mark.parametrize("kind, field, value", [
    ("rating", "text", "x" * (MAX_TEXT_CHARS + 1)),
    ("catalog_edit", "title", "t" * (MAX_TITLE_CHARS + 1)),
    ("catalog_edit", "tags", ["t"] * (MAX_TAGS + 1)),
    ("rec_query", "seed_items", ["i"] * (MAX_SEED_ITEMS + 1)),
    ("rating", "user_id", "u" * (MAX_ID_CHARS + 1)),
])
def test_field_over_its_limit_is_oversized(kind, field, value):
    reason = rejected(line(kind, **{field: value})).reason
    assert reason.startswith(f"oversized: {field}: "), reason


def test_one_tag_too_long_names_its_position():
    reason = rejected(line("catalog_edit", tags=["ok", "t" * 101])).reason
    assert reason.startswith("oversized: tags.1: ")


# -- the rejection keeps what it can --------------------------------------------------------------

def test_rejection_keeps_the_event_id_when_it_can_be_read():
    assert rejected(line("rating", rating=0)).event_id == "r1"
    assert rejected(line("rating", rating=0, event_id=42)).event_id == "42"


def test_rejection_without_a_readable_id_has_none():
    assert rejected(b"not json").event_id is None
    assert rejected(line("rating", event_id=["r1"])).event_id is None


def test_reason_code_is_one_of_the_documented_codes():
    codes = {"malformed_json", "unknown_type", "missing_field", "invalid_field", "oversized"}
    samples = [b"{", line("rating", type="x"), line("rating", drop=("ts",)), line("rating", rating=0),
               line("rating", text="x" * (MAX_TEXT_CHARS + 1))]
    assert {rejected(raw).reason.split(":", 1)[0] for raw in samples} == codes
