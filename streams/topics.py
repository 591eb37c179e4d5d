"""Topic names (from settings) and which input topic each event type goes to.

Inputs are keyed by the event's actor (user, seller or client), the key the guard stage needs: one actor's
events stay in order on one partition. Outputs: clean events keyed by actor as well (a trainer reads one
user's history in order), dead letters by event id, flags and alerts by entity.
"""

from __future__ import annotations

from dataclasses import dataclass

from streams.settings import Settings

# event type -> (settings attribute of its input topic, the field holding its actor's id)
INPUT_OF_TYPE = {
    "rating": ("topic_ratings", "user_id"),
    "click": ("topic_clicks", "user_id"),
    "catalog_edit": ("topic_catalog", "seller_id"),
    "rec_query": ("topic_queries", "client_id"),
}


@dataclass(frozen=True)
class Topics:
    ratings: str
    clicks: str
    catalog: str
    queries: str
    clean: str
    quarantined: str
    rejected: str
    retracted: str
    flags: str
    alerts: str
    client_actions: str
    control: str  # analysts' decisions and the trainer's signals, for the worker (keyed kind:id)

    @classmethod
    def from_settings(cls, settings: Settings) -> "Topics":
        return cls(**{name: getattr(settings, f"topic_{name}") for name in cls.__dataclass_fields__})

    @property
    def inputs(self) -> tuple[str, ...]:
        return (self.ratings, self.clicks, self.catalog, self.queries)

    @property
    def outcomes(self) -> tuple[str, ...]:
        """Where every input message leaves exactly once (a retraction is a second word on a clean one)."""
        return (self.clean, self.quarantined, self.rejected)

    @property
    def outputs(self) -> tuple[str, ...]:
        return (self.clean, self.quarantined, self.rejected, self.retracted, self.flags, self.alerts,
                self.client_actions)

    @property
    def all(self) -> tuple[str, ...]:
        return self.inputs + self.outputs + (self.control,)

    def for_type(self, event_type: object) -> str | None:
        entry = INPUT_OF_TYPE.get(event_type) if isinstance(event_type, str) else None
        return getattr(self, entry[0].removeprefix("topic_")) if entry else None
