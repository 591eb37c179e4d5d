"""The ring as a picture: accounts x items x time, as an inline SVG for the case page.

Rows are accounts (the case's flagged accounts on top, then organic raters of the same items), columns the
items the ring touched most, and each cell a dot where the account rated or clicked the item, coloured by
when (early pale, late dark): a dense block shows as a solid rectangle of one colour, organic raters as a
sparse scatter of many.

>>> svg = ring_svg({"u1": [(10.0, "i1", 5.0), (11.0, "i2", 5.0)]}, {"o1": [(3.0, "i1", 2.0)]})
>>> svg.startswith("<svg") and svg.count('class="ring"') == 2 and svg.count('class="organic"') == 1
True
"""

from __future__ import annotations

from collections import Counter
from datetime import datetime, timezone
from html import escape

MAX_RING, MAX_ORGANIC = 30, 15  # rows drawn: the most active accounts of each side
Cells = dict[str, list[tuple[float, str, float | None]]]  # account -> [(ts, item, rating)]

# A sequential palette (pale to dark blue-purple), picked by time.
PALETTE = ("#fde0c5", "#facba6", "#f8b58b", "#f59e72", "#f2855d", "#ef6a4c", "#eb4a40", "#c7373c", "#a02c3a",
           "#6e2336")


def _when(ts: float) -> str:
    return datetime.fromtimestamp(ts, tz=timezone.utc).strftime("%Y-%m-%d %H:%M")


def ring_svg(ring: Cells, organic: Cells, max_items: int = 14, max_ring: int = MAX_RING, max_organic: int = MAX_ORGANIC,
             cell: int = 16) -> str:
    """The picture of `ring` (flagged accounts' events) beside `organic` (other raters of the same items)."""
    counts = Counter(item for events in ring.values() for _, item, _ in events)
    items = [item for item, _ in counts.most_common(max_items)]
    if not items:
        counts = Counter(item for events in organic.values() for _, item, _ in events)
        items = [item for item, _ in counts.most_common(max_items)]
    column = {item: i for i, item in enumerate(items)}
    ring_rows = sorted(ring, key=lambda a: -len(ring[a]))[:max_ring]
    organic_rows = [a for a in sorted(organic, key=lambda a: -len(organic[a])) if a not in ring][:max_organic]
    rows = [(a, "ring", ring[a]) for a in ring_rows] + [(a, "organic", organic[a]) for a in organic_rows]
    times = [ts for _, _, events in rows for ts, item, _ in events if item in column]
    lo, hi = (min(times), max(times)) if times else (0.0, 1.0)
    left, top = 130, 92
    gap = 10 if organic_rows else 0
    width = max(left + cell * max(len(items), 1) + 20, 560)  # room for the caption and the time scale
    height = top + cell * len(rows) + gap + 50
    out = [f'<svg xmlns="http://www.w3.org/2000/svg" width="{width}" height="{height}" '
           f'viewBox="0 0 {width} {height}" role="img" aria-label="accounts by items, coloured by time">']
    for item, i in column.items():
        x = left + i * cell + cell / 2
        out.append(f'<text x="{x:.0f}" y="{top - 6}" transform="rotate(-60 {x:.0f} {top - 6})" font-size="10">'
                   f'{escape(item[-10:])}<title>{escape(item)}</title></text>')
    y = top
    for index, (account, role, events) in enumerate(rows):
        if role == "organic" and index == len(ring_rows):
            y += gap
            out.append(f'<line x1="0" x2="{width}" y1="{y - gap / 2:.0f}" y2="{y - gap / 2:.0f}" '
                       f'stroke="#999" stroke-dasharray="4 3"/>')
        colour = "#a02c3a" if role == "ring" else "#555"
        out.append(f'<text x="{left - 6}" y="{y + cell - 4}" text-anchor="end" font-size="10" fill="{colour}">'
                   f'{escape(account[-14:])}<title>{escape(account)} ({role})</title></text>')
        out.append(f'<rect x="{left}" y="{y}" width="{cell * len(items)}" height="{cell}" fill="none" '
                   f'stroke="#eee"/>')
        for ts, item, rating in events:
            i = column.get(item)
            if i is None:
                continue
            shade = PALETTE[min(int((ts - lo) / (hi - lo or 1.0) * len(PALETTE)), len(PALETTE) - 1)]
            stroke = ' stroke="#222" stroke-width="1"' if role == "ring" else ""
            what = f" rated {rating:g}" if rating is not None else " clicked"
            out.append(f'<circle class="{role}" cx="{left + i * cell + cell / 2:.0f}" cy="{y + cell / 2:.0f}" '
                       f'r="{cell / 2 - 2:.0f}" fill="{shade}"{stroke}><title>{escape(account)}{what} '
                       f'{escape(item)} at {_when(ts)}</title></circle>')
        y += cell
    # Legend: the time scale.
    y += 16
    step = max(cell * max(len(items), 1), 300) / len(PALETTE)
    for k, shade in enumerate(PALETTE):
        out.append(f'<rect x="{left + k * step:.1f}" y="{y}" width="{step:.1f}" height="8" fill="{shade}"/>')
    out.append(f'<text x="{left}" y="{y + 20}" font-size="10">{_when(lo)}</text>')
    out.append(f'<text x="{left + step * len(PALETTE):.0f}" y="{y + 20}" font-size="10" text-anchor="end">'
               f'{_when(hi)}</text>')
    out.append(f'<text x="4" y="{top - 70}" font-size="11">ring: {len(ring_rows)} flagged accounts (outlined); '
               f'below the line: {len(organic_rows)} organic raters of the same items</text>')
    out.append("</svg>")
    return "".join(out)
