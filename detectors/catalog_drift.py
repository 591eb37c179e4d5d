"""Catalog poisoning: an item's text rewritten so that its embedding lands beside the current best sellers.

A re-edit scores as poisoning when it is at once a rewrite far larger than upkeep, a move towards the best
sellers beyond any move towards listings in general, and a landing in some best seller's neighbourhood, on
an item not itself in demand, each judged by a robust z against recent edits or against the catalogue, and
weighed by the seller's trust (new, or rewriting its other items). A seller is flagged when more of its
items converge than the population's rate explains (binomial tail), a new seller with up to one decade of
extra suspicion, and its large rewrites towards the best sellers are flagged with it.

Parameters
- `encoder`: anything with `encode(list[str]) -> np.ndarray` of unit rows (see `models.text_encoder`);
  every micro-batch's edits go through one `encode` call. Not pickled by `snapshot`. An edit that re-sends
  its item's current text by the same seller (a feed's price update, a nightly sync) is neither embedded nor
  scored: each item keeps a 64-bit digest of its text.
- `n_popular`: how many items by recent demand (ratings and clicks, halved every `demand_half_life`
  seconds) count as the best sellers an edit may imitate.
- `new_seller_seconds`: a seller's newness falls linearly from 1 at its first edit to 0 at this age;
  sellers first seen in the first `warmup_seconds` of the stream count as established (their age is
  unknown, and most of them predate the stream).
- `gate_z`: the robust z at which a piece of evidence counts half (ramps from `gate_z - 1` to
  `gate_z + 1`; the landing from `gate_z - 2` to `gate_z`, as templated listings all sit near the best
  sellers). The three are multiplied, so each must clear its gate.
- `min_demand_events`, `min_reference`: no scoring before this much demand and this many catalogue items
  (before that every item looks both unpopular and unusual).
- `reference_size`: catalogue items sampled to judge closeness to each best seller.
- `refresh_seconds`: how often (event time) the best sellers and the catalogue reference are recomputed.
- `max_items`, `max_sellers`: state bounds; the least recently edited are forgotten first.

Robust z here is (x - median) / ((q90 - median) / 1.28): edits are a heavy-tailed mixture (most touch a
tag, some fix a title), where a MAD would see only the crowd of tiny changes. Edit histories are
winsorised at the gate so that a burst of poisoned edits cannot widen the scale that exposes them.
The current embeddings are shared with the extraction detector through `item_vectors`.

References: Gyöngyi & Garcia-Molina 2005, "Web spam taxonomy", AIRWeb (term and boosting spam, the attack);
Reimers & Gurevych 2019, "Sentence-BERT", EMNLP (texts compared by embedding); Rousseeuw & Croux 1993,
"Alternatives to the median absolute deviation", JASA (robust scales).

>>> import numpy as np
>>> from models.text_encoder import HashingEncoder
>>> from detectors.events import CatalogEditEvent, RatingEvent
>>> rng = np.random.default_rng(7)
>>> words = ["".join(rng.choice(list("abcdefghijklmnopqrstuvwxyz"), 6)) for _ in range(300)]
>>> detector = CatalogDriftDetector(HashingEncoder(dim=256), n_popular=5, min_demand_events=50,
...                                 min_reference=20, warmup_seconds=0, refresh_seconds=0)
>>> titles = {f"i{n}": " ".join(rng.choice(words, 3)) for n in range(60)}
>>> edits = [CatalogEditEvent(event_id=f"e{n}", ts=0, item_id=item, seller_id=f"s{n % 12}", title=title)
...          for n, (item, title) in enumerate(titles.items())]
>>> demand = [RatingEvent(event_id=f"r{n}", ts=1, user_id=f"u{n}", item_id=f"i{int(rng.zipf(1.5)) % 60}",
...                       rating=4) for n in range(400)]
>>> _ = detector.observe(edits + demand, now=1.0)
>>> best = detector.popular_items()[0]
>>> poison = CatalogEditEvent(event_id="p1", ts=2, item_id="i59", seller_id="s-new",
...                           title=titles[best] + " bestseller")
>>> [(s.kind, s.id, s.score >= 0.5) for s in detector.observe([poison], now=2.0) if s.kind == "item"]
[('item', 'i59', True)]
"""

from __future__ import annotations

import hashlib
import math
import pickle
from collections import deque
from dataclasses import dataclass, field
from typing import Any, Sequence

import numpy as np
from scipy.stats import binom

from detectors.base import Detector, Signal, dumps_state
from detectors.demand import ItemDemand
from detectors.events import CatalogEditEvent, Event
from detectors.item_vectors import ItemVectorStore
from detectors.robust import ramp, upper_tail_scale

DAY = 86_400.0
# Cosine between two phrasings of the same listing (typo, "(Remastered)", [1995] for (1995)) moves by a
# few hundredths: a scale below that would make upkeep look like a rewrite.
SIMILARITY_SCALE_FLOOR = 0.02
# Until 30 re-edits are seen, gains and drifts are judged on a prior scale of 0.05 (cosine).
MIN_EDITS_FOR_GAIN_SCALE = 30
PRIOR_GAIN_SCALE = 0.05
# The base rate of converging items is never taken below 2%: with few edits seen, an empirical rate of
# zero would make any single converging item look impossible.
BASE_RATE_FLOOR = 0.02
EMIT_FLOOR = 0.1
FIRST_LISTING_CAP = 0.3
# The weight of one edit's evidence when its seller is established and rewrites nothing else: below 0.5,
# so that alone it never flags.
ESTABLISHED_WEIGHT = 0.45


@dataclass(slots=True)
class _Item:
    seller: str
    versions: int
    last_ts: float
    converging: bool = False
    drifted: bool = False
    edit_ids: tuple[str, ...] = ()  # its suspect edits: converging, or a rewrite towards the best sellers
    nearest: str | None = None      # the best seller its latest scored version sits closest to
    text: int | None = None         # digest of its current text (None in snapshots from before it was kept)


@dataclass(slots=True)
class _Seller:
    first_ts: float
    last_ts: float
    known_before_warmup: bool
    edits: int = 0
    items: set[str] = field(default_factory=set)       # items with a scored edit
    converging: set[str] = field(default_factory=set)
    reedited: set[str] = field(default_factory=set)
    drifted: set[str] = field(default_factory=set)
    suspect: set[str] = field(default_factory=set)     # converging, or rewritten towards the best sellers
    implicated: set[str] = field(default_factory=set)  # suspect items already flagged with the seller
    score: float = 0.0


class CatalogDriftDetector(Detector):
    name = "catalog_drift"

    def __init__(self, encoder: Any, n_popular: int = 50, demand_half_life: float = 7 * DAY,
                 new_seller_seconds: float = 30 * DAY, warmup_seconds: float = 7 * DAY, gate_z: float = 3.0,
                 min_demand_events: int = 1000, min_reference: int = 50, reference_size: int = 1000,
                 refresh_seconds: float = 3600.0, max_items: int = 100_000, max_sellers: int = 50_000,
                 seed: int = 0):
        self.encoder = encoder
        self.n_popular = n_popular
        self.demand_half_life = demand_half_life
        self.new_seller_seconds = new_seller_seconds
        self.warmup_seconds = warmup_seconds
        self.gate_z = gate_z
        self.min_demand_events = min_demand_events
        self.min_reference = min_reference
        self.reference_size = reference_size
        self.refresh_seconds = refresh_seconds
        self.max_items = max_items
        self.max_sellers = max_sellers
        self.encoder_kind = getattr(encoder, "kind", type(encoder).__name__)
        self._rng = np.random.default_rng(seed)
        self._items: dict[str, _Item] = {}
        self._vectors = ItemVectorStore()  # the current version's embedding of every item in _items
        self._sellers: dict[str, _Seller] = {}
        self._demand = ItemDemand(demand_half_life, 2 * max_items)
        self._start_ts: float | None = None
        # Recent re-edits' gains in similarity to the best sellers, and their drifts: the reference
        # against which one edit's move is judged.
        self._gains: deque[float] = deque(maxlen=2000)
        self._drifts: deque[float] = deque(maxlen=2000)
        self._scored = 0
        self._converged = 0
        self._refreshed_at = -math.inf
        self._refreshed_size = 0
        self._popular_ids: list[str] = []
        self._popular_matrix = np.zeros((0, 0), dtype=np.float32)
        # Per best seller: median and robust scale of the catalogue's similarity to it.
        self._reference_centre = np.zeros(0, dtype=np.float32)
        self._reference_scale = np.ones(0, dtype=np.float32)
        self._catalog_mean = np.zeros(0, dtype=np.float32)  # mean catalogue vector: v @ it = mean similarity
        self._demand_sorted = np.zeros(0)

    # -- the interface ------------------------------------------------------------------------------
    def observe(self, events: Sequence[Event], now: float) -> list[Signal]:
        edits: list[CatalogEditEvent] = []
        demand: list[tuple[str, float]] = []
        for event in events:
            kind = event.type
            if kind == "rating" or kind == "click":
                demand.append((event.item_id, event.ts))
            elif kind == "catalog_edit":
                edits.append(event)
        self._demand.add_many(demand)
        if self._start_ts is None and events:
            self._start_ts = min(event.ts for event in events)
        edits, texts = self._changed(edits)
        if not edits:
            return []
        vectors = self.encoder.encode(texts)  # one call per batch: the encoder batches, caches by text
        self._maybe_refresh(now)
        signals: list[Signal] = []
        touched: set[str] = set()
        for edit, text, vector in zip(edits, texts, vectors):
            signals.extend(self._score_edit(edit, vector, now))
            self._items[edit.item_id].text = text_digest(text)
            touched.add(edit.seller_id)
        for seller_id in touched:
            signals.extend(self._score_seller(seller_id, now))
        self._bound_state()
        if not self._popular_ids:
            self._maybe_refresh(now)  # while warming up, this batch's items count as soon as they may
        return signals

    def _changed(self, edits: list[CatalogEditEvent]) -> tuple[list[CatalogEditEvent], list[str]]:
        """The edits that change their item's text or seller, with their texts. A catalogue feed re-sends
        unchanged listings (a price or stock update, a nightly full sync): such an edit says nothing, costs
        no embedding, and only keeps its item and seller alive against the state bounds."""
        changed, texts = [], []
        current: dict[str, tuple[str, int | None]] = {}  # this batch's latest (seller, text) per item
        for edit in edits:
            text = listing_text(edit)
            digest = text_digest(text)
            latest = current.get(edit.item_id)
            if latest is None:
                item = self._items.get(edit.item_id)
                latest = (item.seller, getattr(item, "text", None)) if item is not None else ("", None)
            current[edit.item_id] = (edit.seller_id, digest)
            if latest == (edit.seller_id, digest):
                item, seller = self._items.get(edit.item_id), self._sellers.get(edit.seller_id)
                if item is not None:
                    item.last_ts = max(item.last_ts, edit.ts)
                if seller is not None:
                    seller.last_ts = max(seller.last_ts, edit.ts)
                continue
            changed.append(edit)
            texts.append(text)
        return changed, texts

    def snapshot(self) -> bytes:
        # The encoder is a model, not state: it is handed in again by whoever restores.
        state = {key: value for key, value in self.__dict__.items() if key != "encoder"}
        return dumps_state(state)

    def restore(self, state: bytes) -> None:
        encoder = self.encoder
        self.__dict__.update(pickle.loads(state))
        self.encoder = encoder
        kind = getattr(encoder, "kind", type(encoder).__name__)
        if kind != self.encoder_kind:
            # Vectors from another encoder live in another space: comparing across would be noise.
            self._items.clear()
            self._vectors.clear()
            self._popular_ids, self._popular_matrix = [], np.zeros((0, 0), dtype=np.float32)
            self._gains.clear()
            self._drifts.clear()
            self._refreshed_at = -math.inf
            self.encoder_kind = kind

    # -- what other detectors may read ------------------------------------------------------------------
    def item_vectors(self, item_ids: Sequence[str]) -> tuple[np.ndarray, np.ndarray]:
        """Text embeddings of `item_ids` (float32 rows) and a mask of which are known."""
        return self._vectors.rows(item_ids)

    @property
    def encoder_status(self) -> str:
        """The encoder's status line (says FALLBACK when MiniLM could not load), for health endpoints."""
        return str(getattr(self.encoder, "status", self.encoder_kind))

    def popular_items(self) -> list[str]:
        """The current best sellers (as of the last refresh), most demanded first."""
        return list(self._popular_ids)

    # -- demand ------------------------------------------------------------------------------------------
    def _maybe_refresh(self, now: float) -> None:
        grown = len(self._items) > 1.2 * self._refreshed_size
        if now - self._refreshed_at < self.refresh_seconds and not grown:
            return
        self._refreshed_at, self._refreshed_size = now, len(self._items)
        get = self._demand.counts.get
        ids = list(self._items)
        demand = np.fromiter((get(item_id, 0.0) for item_id in ids), dtype=np.float64, count=len(ids))
        self._demand_sorted = np.sort(demand)
        if self._demand.events < self.min_demand_events or np.count_nonzero(demand) < self.n_popular:
            self._popular_ids = []
            return
        top = np.argsort(-demand, kind="stable")[: self.n_popular]
        self._popular_ids = [ids[i] for i in top]
        self._popular_matrix = self._vectors.rows(self._popular_ids)[0]
        others = np.ones(len(ids), dtype=bool)
        others[top] = False
        others = np.flatnonzero(others)
        if len(others) < self.min_reference:
            self._popular_ids = []
            return
        if len(others) > self.reference_size:
            others = self._rng.choice(others, self.reference_size, replace=False)
        sample = self._vectors.rows([ids[i] for i in others])[0]
        # Each best seller has its own neighbourhood: a family film sits close to many listings, a
        # documentary to few, so "close" is judged against that item's own column.
        centre, scale = upper_tail_scale(sample @ self._popular_matrix.T, SIMILARITY_SCALE_FLOOR, axis=0)
        self._reference_centre = centre.astype(np.float32)
        self._reference_scale = scale.astype(np.float32)
        self._catalog_mean = sample.mean(axis=0)

    def _demand_percentile(self, item_id: str) -> float:
        if len(self._demand_sorted) == 0:
            return 0.0
        value = self._demand.get(item_id)
        return float(np.searchsorted(self._demand_sorted, value, side="left") / len(self._demand_sorted))

    # -- scoring -----------------------------------------------------------------------------------------
    def _closeness(self, vector: np.ndarray, exclude: str) -> tuple[float, float, np.ndarray]:
        """Highest similarity to a best seller, highest robust z of that similarity against the catalogue
        (per best seller), and the per-best-seller z (for the evidence)."""
        similarity = self._popular_matrix @ vector.astype(np.float32)
        z = (similarity - self._reference_centre) / self._reference_scale
        if exclude in self._popular_ids:  # a best seller's own upkeep is not imitation of itself
            similarity[self._popular_ids.index(exclude)] = z[self._popular_ids.index(exclude)] = -np.inf
        return float(similarity.max()), float(z.max()), z

    def _newness(self, seller: _Seller, now: float) -> float:
        if seller.known_before_warmup:
            return 0.0
        return 1.0 - min(1.0, max(0.0, (now - seller.first_ts) / self.new_seller_seconds))

    def _score_edit(self, edit: CatalogEditEvent, vector: np.ndarray, now: float) -> list[Signal]:
        seller = self._sellers.get(edit.seller_id)
        if seller is None:
            in_warmup = self._start_ts is not None and edit.ts < self._start_ts + self.warmup_seconds
            seller = self._sellers[edit.seller_id] = _Seller(edit.ts, edit.ts, in_warmup)
        seller.edits += 1
        seller.last_ts = max(seller.last_ts, edit.ts)
        item = self._items.get(edit.item_id)
        previous = self._vectors.get(edit.item_id) if item is not None else None
        if item is None:
            item = self._items[edit.item_id] = _Item(edit.seller_id, 0, edit.ts)
        self._vectors.put(edit.item_id, vector)
        item.versions, item.last_ts = item.versions + 1, edit.ts
        owner_changed = item.seller != edit.seller_id
        item.seller = edit.seller_id
        if not self._popular_ids:
            return []  # warming up: no best sellers to measure against yet

        similarity, z_landing, z = self._closeness(vector, edit.item_id)
        nearest = np.argsort(-z)[:3]
        percentile = self._demand_percentile(edit.item_id)
        # Borrowed popularity only: an item that is itself in demand is not hiding behind anyone.
        low_demand = ramp(0.9 - percentile, 0.0, 0.4)
        evidence: dict[str, Any] = {
            "nearest_popular": [{"item": self._popular_ids[i], "z": round(float(z[i]), 2),
                                 "similarity": round(float(self._popular_matrix[i] @ vector), 3)}
                                for i in nearest if np.isfinite(z[i])],
            "similarity_to_popular": round(similarity, 3), "z_landing": round(z_landing, 2),
            "demand_percentile": round(percentile, 3), "seller": edit.seller_id, "version": item.versions,
            "encoder": self.encoder_kind}
        newness = self._newness(seller, edit.ts)  # its age when it made this edit
        item.nearest = self._popular_ids[int(nearest[0])] if np.isfinite(z[nearest[0]]) else None
        towards = False
        if previous is None:
            # A first listing has no "before", and templated listings and shared title words crowd round
            # the best sellers, so its landing spot alone is weak evidence: it does not count towards the
            # seller, and its score is capped so that it flags the item only together with other evidence.
            converging_core = 0.0
            score = FIRST_LISTING_CAP * ramp(z_landing, self.gate_z, self.gate_z + 2) * low_demand * newness
            evidence["first_listing"] = True
        else:
            before, _, _ = self._closeness(previous, edit.item_id)
            # The move towards the best sellers beyond any move towards listings in general: fixing a
            # typo or a garbled title makes a listing more like every other one, best sellers included.
            general = float((vector - previous) @ self._catalog_mean)
            gain, drift = similarity - before - general, 1.0 - float(previous @ vector)
            z_gain = self._judge(gain, self._gains)
            z_drift = self._judge(drift, self._drifts)
            item.drifted = item.drifted or z_drift >= self.gate_z
            seller.reedited.add(edit.item_id)
            if item.drifted:
                seller.drifted.add(edit.item_id)
            # Poisoning is all three at once: a rewrite far larger than upkeep, a move towards the best
            # sellers far larger than edits make, ending in a best seller's neighbourhood. A product, not
            # a minimum: three marginal coincidences (a typo fix in a short title that happens to nudge it
            # towards a best seller) should not add up to one strong signal.
            converging_core = (ramp(z_drift, self.gate_z - 1, self.gate_z + 1)
                               * ramp(z_gain, self.gate_z - 1, self.gate_z + 1)
                               * ramp(z_landing, self.gate_z - 2, self.gate_z) * low_demand)
            # Who edits matters: an established seller with no other rewrites gets the benefit of the
            # doubt on one edit (its score stays below the flag threshold, so it takes a second detector
            # or a second converging item, which flags the seller), a new or rewriting seller does not.
            others = seller.reedited - {edit.item_id}
            rewriting = len(seller.drifted - {edit.item_id}) / len(others) if others else 0.0
            suspicion = max(newness, rewriting)
            score = converging_core * (ESTABLISHED_WEIGHT + (1.0 - ESTABLISHED_WEIGHT) * suspicion)
            evidence.update(drift=round(drift, 3), z_drift=round(z_drift, 2), specific_gain=round(gain, 3),
                            z_gain=round(z_gain, 2), similarity_before=round(before, 3),
                            owner_changed=owner_changed, seller_suspicion=round(suspicion, 2))
            towards = z_drift >= self.gate_z and gain > 0
        self._scored += 1
        seller.items.add(edit.item_id)
        if converging_core >= 0.5:
            if not item.converging:
                self._converged += 1
            item.converging = True
            seller.converging.add(edit.item_id)
        if converging_core >= 0.5 or towards:
            item.edit_ids = (item.edit_ids + (edit.event_id,))[-5:]
            seller.suspect.add(edit.item_id)
        evidence["seller_newness"] = round(newness, 2)
        if score < EMIT_FLOOR:
            return []
        return [Signal("item", edit.item_id, self.name, round(score, 4), evidence, (edit.event_id,))]

    def _judge(self, value: float, history: deque[float]) -> float:
        """Robust z of `value` against recent edits, then remember it, winsorised at the gate: a burst of
        poisoned edits must not widen the very scale that makes them stand out."""
        if len(history) < MIN_EDITS_FOR_GAIN_SCALE:
            history.append(value)
            return value / PRIOR_GAIN_SCALE
        centre, scale = upper_tail_scale(np.asarray(history), SIMILARITY_SCALE_FLOOR)
        history.append(min(value, float(centre + self.gate_z * scale)))
        return float((value - centre) / scale)

    def _score_seller(self, seller_id: str, now: float) -> list[Signal]:
        seller = self._sellers[seller_id]
        n, k = len(seller.items), len(seller.converging)
        if k == 0 or n == 0:
            return []  # nothing converged: nothing to say about the seller
        base_rate = max(BASE_RATE_FLOOR, self._converged / max(self._scored, 1))
        tail = float(binom.sf(k - 1, n, base_rate))  # P(at least k of n converge by chance)
        newness = self._newness(seller, now)
        drifted_share = len(seller.drifted) / len(seller.reedited) if len(seller.reedited) >= 2 else 0.0
        decades = -math.log10(max(tail, 1e-300)) + newness + 0.5 * drifted_share
        score = ramp(decades, 1.0, 3.0)
        signals = []
        if score >= EMIT_FLOOR and score > seller.score:
            seller.score = score
            converging = sorted(seller.converging)[:10]
            evidence = {"items_converging": converging, "items_scored": n,
                        "imitates": {i: self._items[i].nearest for i in converging if i in self._items},
                        "share_converging": round(k / n, 3), "share_drifted": round(drifted_share, 3),
                        "base_rate": round(base_rate, 4), "p_value": float(f"{tail:.3g}"),
                        "seller_age_days": round((now - seller.first_ts) / DAY, 2),
                        "newness": round(newness, 2), "edits": seller.edits, "encoder": self.encoder_kind}
            signals.append(Signal("seller", seller_id, self.name, round(score, 4), evidence))
        if seller.score >= 0.5:
            # A seller caught poisoning loses the benefit of the doubt: its items it rewrote far beyond
            # upkeep towards the best sellers are flagged with it, converging or not, and those edits
            # implicated.
            for item_id in sorted(seller.suspect - seller.implicated):
                item = self._items.get(item_id)
                if item is not None and item.seller == seller_id:
                    seller.implicated.add(item_id)
                    signals.append(Signal("item", item_id, self.name, round(seller.score, 4),
                                          {"seller": seller_id, "seller_flag": True,
                                           "converging": item.converging, "imitates": item.nearest},
                                          item.edit_ids))
        return signals

    def _bound_state(self) -> None:
        if len(self._items) > self.max_items:
            ranked = sorted(self._items.items(), key=lambda kv: kv[1].last_ts)
            self._vectors.remove(item_id for item_id, _ in ranked[: len(ranked) // 10])
            self._items = dict(ranked[len(ranked) // 10:])
        if len(self._sellers) > self.max_sellers:
            keep = sorted(self._sellers.items(), key=lambda kv: kv[1].last_ts)[len(self._sellers) // 10:]
            self._sellers = dict(keep)


def text_digest(text: str) -> int:
    """64 bits of BLAKE2b of a listing's text: what an item keeps to tell an unchanged re-send."""
    return int.from_bytes(hashlib.blake2b(text.encode("utf-8", "surrogatepass"), digest_size=8).digest(), "big")


def listing_text(edit: CatalogEditEvent) -> str:
    """What a content-based recommender reads: title, description, tags (sorted: their order is noise)."""
    tags = ", ".join(sorted({tag.strip().lower() for tag in edit.tags if tag.strip()}))
    parts = [edit.title.strip(), (edit.description or "").strip(), f"Tags: {tags}" if tags else ""]
    return " ".join(part for part in parts if part)
