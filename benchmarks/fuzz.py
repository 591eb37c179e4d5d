"""A million fuzzed lines through `shillguard replay`: no exception, one verdict per line, and how many
lines each rejection code took.

    python benchmarks/fuzz.py [--lines 1000000] [--seed 0] [--detectors ...] [--keep DIR]

The lines are what a hostile or broken producer sends, drawn with a seeded generator (hypothesis, which
tests/test_fuzz.py uses, draws too slowly for a million): random bytes, truncated and corrupted JSON,
arbitrary JSON values, valid events with one field dropped, retyped (strings for numbers, huge and negative
numbers, NaN and Infinity literals, nested objects), overlong or oversized, extra fields, repeated event ids,
and valid events with timestamps anywhere in the accepted range. `replay` runs in a subprocess, as a user
runs it; the default detectors leave out `catalog_drift` (MiniLM embeds about 100 listings a second here:
the fuzzed catalog edits alone would take an hour), pass --detectors to change that.
"""

from __future__ import annotations

import argparse
import json
import random
import subprocess
import sys
import tempfile
import time
from collections import Counter
from pathlib import Path

DETECTORS = "profile,rating_shift,dense_block,lockstep,coordination,copies,extraction,midas"
KINDS = {
    "rating": ("user_id", "item_id", "rating"),
    "click": ("user_id", "item_id", "session_id"),
    "catalog_edit": ("item_id", "seller_id", "title", "description", "tags"),
    "rec_query": ("client_id", "user_id", "seed_items", "k"),
}
ODD_VALUES = [None, True, False, 0, -1, 1e308, -1e308, 2**64, -(2**70), 0.5, "", "5", "12", " ", "\u0000",
              "\ud800", "x" * 6000, [], {}, [1, 2], {"a": 1}, 1e11, 1e11 - 1, float("nan"), float("inf")]


def valid_event(rng: random.Random, n: int) -> dict:
    kind = rng.choice(list(KINDS))
    event = {"type": kind, "event_id": f"f{n}" if rng.random() < 0.97 else f"f{rng.randrange(max(n, 1))}",
             "ts": rng.choice([rng.randrange(0, 10**9), rng.randrange(0, 10**11), rng.random() * 1e9])}
    if kind in ("rating", "click"):
        event.update(user_id=f"u{rng.randrange(5000)}", item_id=rng.choice([f"i{rng.randrange(2000)}",
                                                                             rng.randrange(10**6)]))
        if kind == "rating":
            event["rating"] = rng.choice([1, 2, 3, 4, 5, 4.5])
            if rng.random() < 0.1:
                event["text"] = "".join(rng.choice("abc \u00e9\u4e2d") for _ in range(rng.randrange(200)))
    elif kind == "catalog_edit":
        event.update(item_id=f"i{rng.randrange(2000)}", seller_id=f"s{rng.randrange(300)}",
                     title="".join(rng.choice("abcdef ") for _ in range(rng.randrange(1, 80))))
        if rng.random() < 0.3:
            event["tags"] = [f"t{rng.randrange(50)}" for _ in range(rng.randrange(0, 8))]
    else:
        event.update(client_id=f"c{rng.randrange(200)}", k=rng.randrange(1, 100),
                     seed_items=[f"i{rng.randrange(2000)}" for _ in range(rng.randrange(0, 6))])
    return event


def fuzzed(rng: random.Random, n: int) -> bytes:
    roll = rng.random()
    if roll < 0.25:
        return json.dumps(valid_event(rng, n)).encode()
    if roll < 0.55:  # one field broken
        event = valid_event(rng, n)
        field = rng.choice(list(event))
        how = rng.random()
        if how < 0.3:
            del event[field]
        elif how < 0.9:
            event[field] = rng.choice(ODD_VALUES)
        else:
            event[rng.choice(["extra", "TYPE", "", "\u00e9"])] = rng.choice(ODD_VALUES)
        return json.dumps(event, allow_nan=True).encode("utf-8", "surrogatepass")
    if roll < 0.65:  # arbitrary JSON values
        return json.dumps(rng.choice(ODD_VALUES + [[valid_event(rng, n)], {"type": rng.choice(ODD_VALUES[:14])}]),
                          allow_nan=True).encode("utf-8", "surrogatepass")
    if roll < 0.8:  # corrupted JSON: truncated, a byte flipped, garbage inserted
        line = bytearray(json.dumps(valid_event(rng, n)).encode())
        how = rng.random()
        if how < 0.4:
            del line[rng.randrange(len(line)):]
        elif how < 0.8:
            line[rng.randrange(len(line))] = rng.randrange(256)
        else:
            line[rng.randrange(len(line)):rng.randrange(len(line))] = bytes(rng.randrange(256) for _ in range(5))
        return bytes(line).replace(b"\n", b" ")
    if roll < 0.97:  # random bytes
        return bytes(rng.randrange(1, 256) for _ in range(rng.randrange(0, 120))).replace(b"\n", b" ")
    return b'{"type": "rating", "event_id": "big", "text": "' + b"x" * 70_000 + b'"}'  # over 64 KiB


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--lines", type=int, default=1_000_000)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--detectors", default=DETECTORS)
    parser.add_argument("--keep", type=Path, default=None, help="Keep the fuzzed file and replay's output here.")
    args = parser.parse_args()
    rng = random.Random(args.seed)
    work = args.keep or Path(tempfile.mkdtemp(prefix="shillguard-fuzz-"))
    work.mkdir(parents=True, exist_ok=True)
    source = work / "fuzz.jsonl"
    started = time.perf_counter()
    with open(source, "wb") as sink:
        for n in range(args.lines):
            sink.write(fuzzed(rng, n) + b"\n")
    print(f"{args.lines:,} fuzzed lines written in {time.perf_counter() - started:.0f} s ({source})", flush=True)
    started = time.perf_counter()
    done = subprocess.run([sys.executable, "-m", "streams.cli", "replay", str(source), "--out", str(work / "out"),
                           "--detectors", args.detectors, "--no-progress"], capture_output=True, text=True,
                          env={**__import__("os").environ, "SHILLGUARD_OFFLOAD_DETECTORS": ""})
    seconds = time.perf_counter() - started
    if done.returncode != 0:
        print(done.stderr[-5000:], file=sys.stderr)
        sys.exit(f"replay failed with exit code {done.returncode}")
    summary = json.loads((work / "out" / "summary.json").read_text())
    verdicts = Counter()
    rows = 0
    with open(work / "out" / "verdicts.jsonl", "rb") as lines:
        for number, line in enumerate(lines):
            row = json.loads(line)
            assert row["line"] == number, (number, row)
            verdicts[row["verdict"]] += 1
            rows += 1
    traceback = "Traceback" in done.stderr
    print(f"replay: exit code {done.returncode}, {seconds:.0f} s ({args.lines / seconds:,.0f} lines/s), "
          f"traceback in its output: {'yes' if traceback else 'no'}")
    print(f"verdicts: {rows:,} rows for {args.lines:,} lines; undecided {summary['undecided']}; "
          + ", ".join(f"{name} {count:,}" for name, count in sorted(verdicts.items())))
    print("rejections by code:")
    for code, count in sorted(summary["rejected_by_reason"].items(), key=lambda pair: -pair[1]):
        print(f"  {code:<22} {count:>9,}")
    ok = rows == args.lines and summary["undecided"] == 0 and None not in verdicts and not traceback
    print("EVERY-LINE-ONE-VERDICT" if ok else "VERDICTS MISSING OR DOUBLED")
    sys.exit(0 if ok else 1)


if __name__ == "__main__":
    main()
