"""Benchmark of the encoder path: catalogue edits embedded per second, and rec_query events scored per second.

    HF_HUB_OFFLINE=1 OPENBLAS_NUM_THREADS=1 python benchmarks/encoders.py --threads 1
    HF_HUB_OFFLINE=1 python benchmarks/encoders.py --events out/sim/events.jsonl   # a simulated stream

On a CPU shared with other work, one torch thread (`--threads 1`) and one OpenBLAS thread run several times
faster than the defaults: threads that wait for each other stall whenever any of them is descheduled.

Prints, on this machine:
1. MiniLM: catalogue listing texts embedded per second (cache off), per batch size, fp32 and bf16.
2. The hashing fallback's texts per second.
3. CatalogDriftDetector: catalogue edits per second through `observe` (embedding + scoring, cache off).
4. ExtractionDetector: rec_query events scored per second through `observe` (item vectors from the catalog
   detector), and the other events per second through both detectors (the path every event takes).
The stream is either a file of events (`shillguard simulate` output) or a simulation built here from the
synthetic base (no data needed). Figures depend on what else the CPU is doing: the load average is printed.
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import numpy as np  # noqa: E402

from detectors.catalog_drift import CatalogDriftDetector, listing_text  # noqa: E402
from detectors.events import decode_event  # noqa: E402
from detectors.extraction import ExtractionDetector  # noqa: E402
from models.text_encoder import HashingEncoder, MiniLMEncoder  # noqa: E402


def load_events(path: str | None, seed: int) -> list:
    if path:
        with open(path, "rb") as source:
            return [event for event in map(decode_event, source) if hasattr(event, "ts")]
    from simulator.build import build, plan_attacks
    from simulator.synthetic import synthetic_base

    simulation = build(synthetic_base(seed=seed), plan_attacks("catalog_poison,sweep", targets=8, size=4),
                       seed=seed)
    return [decode_event(__import__("orjson").dumps(event)) for event in simulation.events]


class Clock:
    """Wall and CPU seconds: on a shared CPU the wall rate says what this box delivered, the CPU rate what
    the work costs when it has a core to itself."""

    def __init__(self) -> None:
        self.wall = self.cpu = 0.0

    def __enter__(self) -> "Clock":
        self._wall, self._cpu = time.perf_counter(), time.process_time()
        return self

    def __exit__(self, *exc) -> None:
        self.wall += time.perf_counter() - self._wall
        self.cpu += time.process_time() - self._cpu


def rate(count: int, clock: Clock) -> str:
    return (f"{count / clock.wall:>10,.0f}/s wall, {count / max(clock.cpu, 1e-9):>10,.0f}/s per CPU-second "
            f"({count:,} in {clock.wall:.2f} s)")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--events", help="events.jsonl to use instead of a synthetic simulation")
    parser.add_argument("--texts", type=int, default=1000, help="listing texts for the encoder timings")
    parser.add_argument("--batch-sizes", default="16,32,64,128")
    parser.add_argument("--edits", type=int, default=600, help="catalogue edits timed through the detector")
    parser.add_argument("--threads", type=int, default=None, help="torch intra-op threads")
    parser.add_argument("--batch", type=int, default=2048, help="events per observe() call")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()

    print(f"load average before: {os.getloadavg()[0]:.2f} on {os.cpu_count()} CPUs")
    events = load_events(args.events, args.seed)
    edits = [event for event in events if event.type == "catalog_edit"]
    texts = list(dict.fromkeys(listing_text(edit) for edit in edits))[: args.texts]
    print(f"stream: {len(events):,} events, {len(edits):,} catalogue edits, "
          f"{sum(event.type == 'rec_query' for event in events):,} rec queries")

    # 1. MiniLM, uncached, per precision and batch size.
    encoder = MiniLMEncoder(cache_size=0, threads=args.threads, precision="fp32").load()
    tokenized = encoder._tokenizer(texts[:500], truncation=True, max_length=encoder.max_tokens)
    tokens = [len(ids) for ids in tokenized["input_ids"]]
    print(f"\n1. MiniLM listing texts embedded per second (cache off; {len(texts)} texts, "
          f"{np.mean(tokens):.0f} tokens on average), threads={args.threads or 'torch default'}")
    for precision in ("fp32", "bf16"):
        encoder.precision = "auto" if precision == "bf16" else precision  # bf16 only where it is native
        encoder._bf16 = encoder._choose_bf16(__import__("torch"))
        if precision == "bf16" and not encoder._bf16:
            print("   bf16: not used on this CPU (no native bf16: emulated it is several times slower than "
                  "fp32; or it disagrees with fp32)")
            continue
        encoder.encode(texts[:64])  # warm-up
        for batch_size in map(int, args.batch_sizes.split(",")):
            encoder.batch_size = batch_size
            with Clock() as clock:
                encoder.encode(texts)
            print(f"   {precision} batch {batch_size:>4}: {rate(len(texts), clock)}")
    best_precision = "bf16" if encoder._bf16 else "fp32"

    # 2. The fallback.
    fallback = HashingEncoder(cache_size=0)
    with Clock() as clock:
        fallback.encode(texts)
    print(f"\n2. hashing fallback texts per second: {rate(len(texts), clock)}")

    # 3. The catalog detector end to end over the stream's edits (and the demand it needs).
    minilm = MiniLMEncoder(cache_size=0, threads=args.threads, precision="auto").load()
    catalog = CatalogDriftDetector(minilm)
    seen_edits, clock = 0, Clock()
    for start in range(0, len(events), args.batch):  # until --edits edits have gone through
        chunk = events[start:start + args.batch]
        with clock:
            catalog.observe(chunk, chunk[-1].ts)
        seen_edits += sum(event.type == "catalog_edit" for event in chunk)
        if seen_edits >= args.edits:
            break
    print(f"\n3. CatalogDriftDetector catalogue edits per second (MiniLM {best_precision}, cache off, one "
          f"encode call per observe batch of {args.batch} events, demand included): "
          f"{rate(seen_edits, clock)}")

    # 4. Both detectors over the stream in observe batches, each batch split in two calls so that the
    # queries' share of the time is measured apart from the ratings/clicks (and listings) around them.
    extraction = ExtractionDetector(item_vectors=catalog)
    catalog_fast = CatalogDriftDetector(fallback)  # the catalog detector's per-event path, encoder aside
    clocks = {"queries": Clock(), "extraction other": Clock(), "catalog other": Clock()}
    counts = {"queries": 0, "other": 0}
    for start in range(0, len(events), args.batch):
        chunk = events[start:start + args.batch]
        queries = [event for event in chunk if event.type == "rec_query"]
        other = [event for event in chunk if event.type != "rec_query"]
        now = chunk[-1].ts
        calls = (("extraction other", extraction, other), ("queries", extraction, queries),
                 ("catalog other", catalog_fast, other))
        for name, detector, part in calls:
            with clocks[name]:
                detector.observe(part, now)
        counts["queries"] += len(queries)
        counts["other"] += len(other)
    print(f"\n4. ExtractionDetector rec_query events scored per second: "
          f"{rate(counts['queries'], clocks['queries'])}")
    print(f"   other events (ratings, clicks, listings) per second, ExtractionDetector: "
          f"{rate(counts['other'], clocks['extraction other'])}")
    print(f"   the same through CatalogDriftDetector (hashing encoder for its few listings): "
          f"{rate(counts['other'], clocks['catalog other'])}")
    print(f"\nload average after: {os.getloadavg()[0]:.2f}")


if __name__ == "__main__":
    main()
