"""The event model: four kinds of event, validated with pydantic, and a decoder that never raises.

Every input line becomes either a validated event or a `Rejection` whose `reason` starts with a short code
(`malformed_json`, `unknown_type`, `missing_field`, `invalid_field`, `oversized`, `duplicate_event_id`) so
that dead letters can be counted and searched by cause.

>>> ev = decode_event(b'{"type": "rating", "event_id": "e1", "ts": 10, "user_id": "u", "item_id": "i", "rating": 5}')
>>> ev.rating, ev.ts
(5.0, 10.0)
>>> decode_event(b'{"type": "rating", "event_id": "e1", "ts": 10, "user_id": "u", "item_id": "i", "rating": 9}').reason
'invalid_field: rating: Input should be less than or equal to 5'
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Annotated, Literal, Union

import orjson
from pydantic import BaseModel, ConfigDict, Field, TypeAdapter, ValidationError

# Sane limits: one event is a few hundred bytes; anything far larger is abuse or a bug upstream.
MAX_LINE_BYTES = 64 * 1024
MAX_ID_CHARS = 128
MAX_TEXT_CHARS = 5_000
MAX_TITLE_CHARS = 500
MAX_DESCRIPTION_CHARS = 10_000
MAX_TAGS = 50
MAX_TAG_CHARS = 100
MAX_SEED_ITEMS = 1_000
MAX_K = 1_000
# Epoch seconds up to the year 5138: rules out milliseconds passed as seconds and other unit slips.
MAX_TS = 1e11


# Numeric ids are common upstream (MovieLens, SQL keys): the model coerces numbers to their decimal string
# (pydantic's coerce_numbers_to_str, which runs in Rust, unlike a Python validator). Everything else is
# strict: "5" is not a rating, "12" is not a timestamp, and true is not an id.
EntityId = Annotated[str, Field(min_length=1, max_length=MAX_ID_CHARS)]
EpochSeconds = Annotated[float, Field(strict=True, ge=0, lt=MAX_TS, allow_inf_nan=False)]


class _Event(BaseModel):
    model_config = ConfigDict(coerce_numbers_to_str=True, frozen=True, extra="ignore")

    event_id: EntityId
    ts: EpochSeconds


class RatingEvent(_Event):
    type: Literal["rating"] = "rating"
    user_id: EntityId
    item_id: EntityId
    rating: Annotated[float, Field(strict=True, ge=1, le=5, allow_inf_nan=False)]
    text: Annotated[str, Field(max_length=MAX_TEXT_CHARS)] | None = None


class ClickEvent(_Event):
    type: Literal["click"] = "click"
    user_id: EntityId
    item_id: EntityId
    session_id: EntityId | None = None


class CatalogEditEvent(_Event):
    type: Literal["catalog_edit"] = "catalog_edit"
    item_id: EntityId
    seller_id: EntityId
    title: Annotated[str, Field(min_length=1, max_length=MAX_TITLE_CHARS)]
    description: Annotated[str, Field(max_length=MAX_DESCRIPTION_CHARS)] | None = None
    tags: Annotated[
        list[Annotated[str, Field(max_length=MAX_TAG_CHARS)]], Field(max_length=MAX_TAGS)
    ] = Field(default_factory=list)


class RecQueryEvent(_Event):
    type: Literal["rec_query"] = "rec_query"
    client_id: EntityId
    user_id: EntityId | None = None
    seed_items: Annotated[list[EntityId], Field(max_length=MAX_SEED_ITEMS)]
    k: Annotated[int, Field(strict=True, ge=1, le=MAX_K)]
    # The items the service answered, in rank order, where the serving path logs them: what shows a client
    # building its next query from its own last answer (`detectors.extraction`, the chain test).
    answer_items: Annotated[list[EntityId], Field(max_length=MAX_K)] | None = None


Event = Annotated[
    Union[RatingEvent, ClickEvent, CatalogEditEvent, RecQueryEvent], Field(discriminator="type")
]
EVENT_TYPES = {"rating": RatingEvent, "click": ClickEvent, "catalog_edit": CatalogEditEvent,
               "rec_query": RecQueryEvent}
_event_adapter: TypeAdapter[Event] = TypeAdapter(Event)
_validate_json = _event_adapter.validator.validate_json  # the Rust validator, without the Python wrapper


@dataclass(frozen=True, slots=True)
class Rejection:
    """An input line that is not a valid event, with the reason and the raw bytes (nothing is lost)."""

    raw: bytes
    reason: str
    event_id: str | None = None


ACTOR_FIELD = {RatingEvent: ("user", "user_id"), ClickEvent: ("user", "user_id"),
                CatalogEditEvent: ("seller", "seller_id"), RecQueryEvent: ("client", "client_id")}


def actor(event: Event) -> tuple[str, str]:
    """The entity responsible for an event: whose flag taints it."""
    kind, field = ACTOR_FIELD[type(event)]
    return kind, getattr(event, field)


def to_json(event: Event) -> bytes:
    """The event as compact JSON, without the optional fields it does not carry."""
    return event.__pydantic_serializer__.to_json(event, exclude_none=True)


def decode_event(raw: bytes | str) -> Event | Rejection:
    """Validate one JSON line; never raises."""
    if isinstance(raw, str):
        try:
            raw = raw.encode("utf-8", "surrogateescape")
        except UnicodeEncodeError:  # a lone surrogate that no bytes decode to: keep it, as invalid UTF-8
            raw = raw.encode("utf-8", "surrogatepass")
    if len(raw) > MAX_LINE_BYTES:
        return Rejection(raw, f"oversized: line of {len(raw)} bytes exceeds {MAX_LINE_BYTES}")
    try:
        return _validate_json(raw)
    except ValidationError as error:
        return Rejection(raw, _reason(error), _event_id_of(raw))


def _reason(error: ValidationError) -> str:
    first = error.errors(include_url=False)[0]
    kind, loc, msg = first["type"], first["loc"], first["msg"]
    if kind == "json_invalid":
        return f"malformed_json: {msg}"
    # The tag errors come with an empty loc too, so they must be told apart before "not an object".
    if kind == "union_tag_invalid":
        return f"unknown_type: {first['input'].get('type')!r} is not one of {sorted(EVENT_TYPES)}"
    if kind == "union_tag_not_found":
        return "missing_field: type"
    if not loc:
        return "malformed_json: an event must be a JSON object"
    field = ".".join(str(part) for part in loc[1:]) or "event"
    if kind == "missing":
        return f"missing_field: {field}"
    if kind.startswith("string_too_long") or kind == "too_long":
        return f"oversized: {field}: {msg}"
    return f"invalid_field: {field}: {msg}"


def _event_id_of(raw: bytes) -> str | None:
    # Best effort, so that a dead letter can still be traced to its id.
    try:
        value = orjson.loads(raw)
    except orjson.JSONDecodeError:
        return None
    if isinstance(value, dict) and isinstance(value.get("event_id"), (str, int)):
        return str(value["event_id"])[:MAX_ID_CHARS]
    return None
