"""Hypothesis strategies for fuzzing the input path (tests/test_fuzz.py): arbitrary bytes, arbitrary JSON,
and valid events with one field broken, mixed as a hostile producer would send them. benchmarks/fuzz.py
draws its million lines with a seeded generator of its own (hypothesis draws too slowly for that).
"""

from __future__ import annotations

import json

from hypothesis import strategies as st

# Every code a rejection's reason may start with (README.md, "Events")
CODES = ("malformed_json", "unknown_type", "missing_field", "invalid_field", "oversized", "duplicate_event_id")

_scalars = (st.none() | st.booleans() | st.integers(-2**70, 2**70) | st.floats(allow_nan=False, allow_infinity=False)
            | st.text(max_size=40))
json_values = st.recursive(_scalars, lambda children: st.lists(children, max_size=6)
                           | st.dictionaries(st.text(max_size=12), children, max_size=6), max_leaves=25)

_ids = st.text(min_size=1, max_size=12) | st.integers(0, 10**6)
_FIELDS = {
    "rating": {"event_id": _ids, "ts": st.integers(0, 10**9), "user_id": _ids, "item_id": _ids,
               "rating": st.integers(1, 5)},
    "click": {"event_id": _ids, "ts": st.integers(0, 10**9), "user_id": _ids, "item_id": _ids},
    "catalog_edit": {"event_id": _ids, "ts": st.integers(0, 10**9), "item_id": _ids, "seller_id": _ids,
                     "title": st.text(min_size=1, max_size=60)},
    "rec_query": {"event_id": _ids, "ts": st.integers(0, 10**9), "client_id": _ids,
                  "seed_items": st.lists(_ids, max_size=5), "k": st.integers(1, 50)},
}


def dumps(value: object) -> bytes:
    """JSON as any producer might write it: integers past 64 bits, lone surrogates and all (orjson refuses
    both, so the standard library writes them)."""
    return json.dumps(value, ensure_ascii=False).encode("utf-8", "surrogatepass")


@st.composite
def valid_event(draw) -> dict:
    kind = draw(st.sampled_from(sorted(_FIELDS)))
    event = {"type": kind, **{name: draw(strategy) for name, strategy in _FIELDS[kind].items()}}
    return event


@st.composite
def mutated_event(draw) -> bytes:
    """A valid event with one field dropped, retyped or replaced by arbitrary JSON, or an extra field."""
    event = draw(valid_event())
    action = draw(st.sampled_from(["drop", "replace", "extra", "none"]))
    name = draw(st.sampled_from(sorted(event)))
    if action == "drop":
        event.pop(name)
    elif action == "replace":
        event[name] = draw(json_values)
    elif action == "extra":
        event[draw(st.text(max_size=10))] = draw(json_values)
    return dumps(event)


@st.composite
def fuzzed_line(draw) -> bytes:
    """What a hostile or broken producer sends: bytes, JSON, broken events, valid events (some repeated)."""
    kind = draw(st.sampled_from(["bytes", "json", "mutated", "valid", "valid"]))
    if kind == "bytes":
        return draw(st.binary(max_size=300))
    if kind == "json":
        return dumps(draw(json_values))
    if kind == "mutated":
        return draw(mutated_event())
    return dumps(draw(valid_event()))
