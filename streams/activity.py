"""Recent clean activity per item, for the console's ring picture (organic raters beside the ring).

A bounded memory of the worker's clean ratings and clicks: the last `per_item` events of each of the
`max_items` items touched most recently (least recently touched forgotten first), about 100 bytes an event.

>>> from detectors.events import RatingEvent
>>> activity = ItemActivity(max_items=1, per_item=2)
>>> activity.observe([RatingEvent(event_id=str(k), ts=k, user_id=f"u{k}", item_id="i", rating=4) for k in range(3)])
>>> activity.raters(["i"])
{'u1': [(1.0, 'i', 4.0)], 'u2': [(2.0, 'i', 4.0)]}
"""

from __future__ import annotations

from collections import OrderedDict, deque
from typing import Any, Iterable

from detectors.events import ClickEvent, RatingEvent


class ItemActivity:
    def __init__(self, max_items: int = 20_000, per_item: int = 50):
        self.max_items, self.per_item = max_items, per_item
        self._items: OrderedDict[str, deque] = OrderedDict()

    def observe(self, events: Iterable[Any]) -> None:
        items, per_item = self._items, self.per_item
        for event in events:
            kind = type(event)
            if kind is not RatingEvent and kind is not ClickEvent:
                continue
            recent = items.get(event.item_id)
            if recent is None:
                recent = items[event.item_id] = deque(maxlen=per_item)
                if len(items) > self.max_items:
                    items.popitem(last=False)
            else:
                items.move_to_end(event.item_id)
            recent.append((event.ts, event.user_id, getattr(event, "rating", None)))

    def raters(self, item_ids: Iterable[str]) -> dict[str, list[tuple[float, str, float | None]]]:
        """account -> [(ts, item, rating)] over these items."""
        out: dict[str, list] = {}
        for item in item_ids:
            for ts, user, rating in self._items.get(item, ()):
                out.setdefault(user, []).append((float(ts), item, None if rating is None else float(rating)))
        return out
