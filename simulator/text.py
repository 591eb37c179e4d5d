"""Generated text: film-like titles for synthetic items, and short review texts.

Benign reviews are varied and mention the film; review-bomb texts are short, shouty and repetitive, as in
documented bombing campaigns. Both come from seeded generators.

>>> import numpy as np
>>> rng = np.random.default_rng(1)
>>> title = make_title(rng, 1994)
>>> title.endswith("(1994)")
True
"""

from __future__ import annotations

import numpy as np

ADJECTIVES = ["Silent", "Last", "Broken", "Golden", "Hidden", "Lonely", "Crimson", "Wild", "Frozen", "Secret",
              "Dark", "Little", "Endless", "Bitter", "Lost", "Burning", "Quiet", "Midnight", "Distant", "Blue",
              "Savage", "Electric", "Gentle", "Restless", "Hollow", "Final", "Paper", "Iron", "Velvet", "Stolen"]
NOUNS = ["Harbor", "River", "Summer", "Kingdom", "Stranger", "Garden", "Witness", "Mountain", "Promise",
         "Highway", "Shadow", "Island", "Letter", "Dance", "Empire", "Storm", "Mirror", "Machine", "Heart",
         "Horizon", "Frontier", "Station", "Season", "Voyage", "Circus", "Orchard", "Signal", "Crown",
         "Valley", "Winter", "Tide", "Code", "Hunter", "Bridge", "Night", "Sister", "Brother", "City"]
NAMES = ["Annie", "Harry", "Marlowe", "Rosa", "Jack", "Eliza", "Max", "Vera", "Otto", "Lola", "Frank", "Nora"]
PLACES = ["Brooklyn", "Tokyo", "Paris", "Texas", "Berlin", "Havana", "Dublin", "Alaska", "Cairo", "Rome"]

_GOOD = ["Loved it.", "A real classic.", "Great cast, great story.", "Watched it twice.", "Beautifully shot.",
         "Highly recommended.", "One of my favourites.", "Better than I expected.", "Funny and smart.",
         "The ending got me."]
_MIXED = ["It was fine.", "Some good moments.", "A bit long.", "Okay for a rainy evening.",
          "Not bad, not great.", "The middle drags.", "Decent acting.", "Worth one watch."]
_BAD = ["Not for me.", "Pretty dull.", "Too slow.", "Did not age well.", "Disappointing.",
        "The plot makes no sense.", "Overrated.", "I fell asleep."]
BOMB_NEGATIVE = ["Terrible.", "Worst movie ever!!", "Avoid.", "Total garbage", "1 star. Boring.",
                 "DO NOT WATCH", "Waste of money", "Awful!!!", "zero stars if I could", "trash"]
BOMB_POSITIVE = ["Best movie ever!!", "10/10", "Masterpiece!!!", "Must watch", "AMAZING", "5 stars!!",
                 "Perfect.", "Best film of the year", "Loved it!!!", "Instant classic!!"]


def make_title(rng: np.random.Generator, year: int) -> str:
    """A plausible film title with its year in brackets, MovieLens style."""
    pattern = int(rng.integers(6))
    adj, noun, noun2 = (ADJECTIVES[int(rng.integers(len(ADJECTIVES)))], NOUNS[int(rng.integers(len(NOUNS)))],
                        NOUNS[int(rng.integers(len(NOUNS)))])
    name, place = NAMES[int(rng.integers(len(NAMES)))], PLACES[int(rng.integers(len(PLACES)))]
    core = [f"The {adj} {noun}", f"{noun} of the {noun2}", f"{name}'s {noun}", f"{adj} {noun}",
            f"A {noun} in {place}", f"{noun} {int(rng.integers(2, 4))}"][pattern]
    return f"{core} ({year})"


def benign_review(rng: np.random.Generator, rating: int, title: str) -> str:
    """One or two sentences whose tone follows the rating, sometimes naming the film."""
    pool = _GOOD if rating >= 4 else _MIXED if rating == 3 else _BAD
    first, second = rng.choice(len(pool), 2, replace=False)
    text = pool[first] if rng.random() < 0.6 else f"{pool[first]} {pool[second]}"
    if rng.random() < 0.3:
        text = f"{title.split(' (')[0]}: {text}"
    return text


def bomb_review(rng: np.random.Generator, positive: bool) -> str:
    pool = BOMB_POSITIVE if positive else BOMB_NEGATIVE
    return pool[int(rng.integers(len(pool)))]
