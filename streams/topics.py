"""Topic names (from settings) and which input topic each event type goes to.

Inputs are keyed by the event's actor (user, seller or client), the key the guard stage needs: one actor's
events stay in order on one partition, and every input topic has the same partition count
(`SHILLGUARD_PARTITIONS`, checked by `up`: `partitioning_problem`), so an actor's events of every type share
a partition number. Outputs: clean events keyed by actor as well (a trainer reads one
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
    accepted: str  # split topology: every input line, on its input partition's number (actors -> detection)
    points: str  # split topology: each decision point, one record per actor partition (detection -> actors)
    actor_state: str  # split topology: each actor partition's snapshots (streams.partition_state)

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
    def internal(self) -> tuple[str, ...]:
        """Between the stages of the split topology, co-partitioned with the inputs."""
        return (self.accepted, self.points, self.actor_state)

    @property
    def all(self) -> tuple[str, ...]:
        return self.inputs + self.outputs + (self.control,) + self.internal

    def for_type(self, event_type: object) -> str | None:
        entry = INPUT_OF_TYPE.get(event_type) if isinstance(event_type, str) else None
        return getattr(self, entry[0].removeprefix("topic_")) if entry else None


def partitioning_problem(counts: dict[str, int | None], expected: int) -> str | None:
    """Why input topics with these partition counts (None: missing) cannot serve, or None if they can.

    Every input topic needs `expected` partitions: one actor's ratings, clicks, edits and queries must land
    on the same partition number (co-partitioning, with the same default partitioner), so that the worker
    that owns an actor's partition sees all of its events; and the partition count bounds the workers a
    consumer group can use. Kafka only ever adds partitions, and adding them moves keys (an actor's order is
    lost across the change), so a mismatch is refused rather than repaired."""
    wrong = {topic: count for topic, count in counts.items() if count != expected}
    if not wrong:
        return None
    found = ", ".join(f"{topic}: {'missing' if count is None else count}" for topic, count in sorted(wrong.items()))
    return (f"input topics must each have SHILLGUARD_PARTITIONS={expected} partitions (co-partitioned by "
            f"actor); found {found}. Set SHILLGUARD_PARTITIONS to the topics' partition count, or recreate the "
            f"topics with {expected} partitions before data flows (adding partitions later moves actors' keys).")
