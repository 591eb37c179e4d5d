"""Benchmark of the encoder path: catalogue edits embedded per second, and rec_query events scored per second.

    HF_HUB_OFFLINE=1 OPENBLAS_NUM_THREADS=1 python benchmarks/encoders.py --threads 1
    HF_HUB_OFFLINE=1 python benchmarks/encoders.py --events out/sim/events.jsonl   # a simulated stream

On a CPU shared with other work, one intra-op thread (`--threads 1`) and one OpenBLAS thread run several times
faster than the defaults: threads that wait for each other stall whenever any of them is descheduled.

Prints, on this machine, in one run:
1. MiniLM: catalogue listing texts embedded per second (cache off), per backend (PyTorch fp32, PyTorch bf16
   where the CPU has it natively, ONNX Runtime fp32) and batch size, with each backend's lowest cosine to
   PyTorch fp32.
2. The hashing fallback's texts per second.
3. CatalogDriftDetector: catalogue edits per second through `observe` (embedding + scoring, encoder cache
   off), per backend and for the one `auto` picks; then the same edits as a catalogue feed sends them, each
   followed by `--resends` unchanged copies (price updates, syncs), which the detector does not embed; and
   texts the encoder's LRU cache has seen (the same text on another item, a revert).
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


def run_catalog(detector: CatalogDriftDetector, events: list, args, limit: int | None = None
                ) -> tuple[int, "Clock"]:
    """Observe `events` in batches until `limit` (default --edits) catalogue edits have gone through."""
    seen_edits, clock = 0, Clock()
    for start in range(0, len(events), args.batch):
        chunk = events[start:start + args.batch]
        with clock:
            detector.observe(chunk, chunk[-1].ts)
        seen_edits += sum(event.type == "catalog_edit" for event in chunk)
        if seen_edits >= (limit or args.edits):
            break
    return seen_edits, clock


def with_resends(events: list, resends: int) -> list:
    """Each catalogue edit followed by `resends` unchanged copies (new event ids), as a feed re-sends."""
    out = []
    for event in events:
        out.append(event)
        if event.type == "catalog_edit":
            out.extend(event.model_copy(update={"event_id": f"{event.event_id}-resent{n}"})
                       for n in range(resends))
    return out


def int8_encoder(onnx: MiniLMEncoder, threads: int | None) -> MiniLMEncoder:
    """A copy of the ONNX encoder on a dynamically quantised graph (int8 weights per channel)."""
    import copy
    import tempfile

    import onnxruntime as ort
    from onnxruntime.quantization import QuantType, quantize_dynamic

    target = Path(tempfile.mkdtemp()) / "minilm-int8.onnx"
    quantize_dynamic(str(onnx.onnx_path), str(target), per_channel=True, weight_type=QuantType.QInt8)
    options = ort.SessionOptions()
    options.intra_op_num_threads, options.inter_op_num_threads = threads or 0, 1
    quantised = copy.copy(onnx)
    quantised._session = ort.InferenceSession(str(target), options, providers=["CPUExecutionProvider"])
    return quantised


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--events", help="events.jsonl to use instead of a synthetic simulation")
    parser.add_argument("--texts", type=int, default=1000, help="listing texts for the encoder timings")
    parser.add_argument("--batch-sizes", default="16,32,64,128")
    parser.add_argument("--edits", type=int, default=600, help="catalogue edits timed through the detector")
    parser.add_argument("--threads", type=int, default=None, help="intra-op threads (torch and ONNX Runtime)")
    parser.add_argument("--resends", default="1,3", help="unchanged copies per edit in the feed timings")
    parser.add_argument("--int8", action="store_true", help="also time ONNX Runtime's dynamic int8 quantisation "
                        "(not used by the service: it moves embeddings too far)")
    parser.add_argument("--batch", type=int, default=2048, help="events per observe() call")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()

    print(f"load average before: {os.getloadavg()[0]:.2f} on {os.cpu_count()} CPUs")
    events = load_events(args.events, args.seed)
    edits = [event for event in events if event.type == "catalog_edit"]
    texts = list(dict.fromkeys(listing_text(edit) for edit in edits))[: args.texts]
    print(f"stream: {len(events):,} events, {len(edits):,} catalogue edits, "
          f"{sum(event.type == 'rec_query' for event in events):,} rec queries")

    # 1. MiniLM, uncached, per backend and batch size.
    reference = MiniLMEncoder(cache_size=0, threads=args.threads, precision="fp32", backend="torch").load()
    tokenized = reference._tokenizer(texts[:500], truncation=True, max_length=reference.max_tokens)
    tokens = [len(ids) for ids in tokenized["input_ids"]]
    print(f"\n1. MiniLM listing texts embedded per second (cache off; {len(texts)} texts, "
          f"{np.mean(tokens):.0f} tokens on average), threads={args.threads or 'library default'}")
    expected = reference.encode(texts)
    encoders = {"torch fp32": reference}
    bf16 = MiniLMEncoder(cache_size=0, threads=args.threads, precision="auto", backend="torch").load()
    if bf16._bf16:
        encoders["torch bf16"] = bf16
    else:
        print("   torch bf16: not used on this CPU (no native bf16: emulated it is several times slower than "
              "fp32; or it disagrees with fp32)")
    onnx = MiniLMEncoder(cache_size=0, threads=args.threads, backend="onnx").load()
    if onnx.running_backend == "onnx":
        encoders["onnx fp32"] = onnx
    else:
        print(f"   onnx: not available ({onnx.status})")
    if args.int8 and "onnx fp32" in encoders:
        encoders["onnx int8"] = int8_encoder(onnx, args.threads)
    for label, encoder in encoders.items():
        encoder.encode(texts[:64])  # warm-up
        agreement = float((encoder.encode(texts) * expected).sum(axis=1).min())
        for batch_size in map(int, args.batch_sizes.split(",")):
            encoder.batch_size = batch_size
            with Clock() as clock:
                encoder.encode(texts)
            print(f"   {label:<10} batch {batch_size:>4}: {rate(len(texts), clock)}; lowest cosine to torch "
                  f"fp32 {agreement:.6f}")

    # 2. The fallback.
    fallback = HashingEncoder(cache_size=0)
    with Clock() as clock:
        fallback.encode(texts)
    print(f"\n2. hashing fallback texts per second: {rate(len(texts), clock)}")

    # 3. The catalog detector end to end over the stream's edits (and the demand it needs), per backend.
    auto = MiniLMEncoder(cache_size=0, threads=args.threads).load()
    print(f"\n3. CatalogDriftDetector catalogue edits per second (encoder cache off, one encode call per "
          f"observe batch of {args.batch} events, demand included); auto picks {auto.running_backend} "
          f"({'bf16' if auto._bf16 else 'fp32'})")
    choices = {**{label: encoder for label, encoder in encoders.items()}, "auto": auto}
    for label, encoder in choices.items():
        encoder.batch_size = 64
        catalog = CatalogDriftDetector(encoder)  # the last, auto's, serves the extraction timings below
        edits_seen, clock = run_catalog(catalog, events, args)
        print(f"   {label:<10}: {rate(edits_seen, clock)}")
    for resends in map(int, args.resends.split(",")):
        resent = with_resends(events, resends)
        edits_seen, clock = run_catalog(CatalogDriftDetector(auto), resent, args, args.edits * (1 + resends))
        print(f"   auto, each edit followed by {resends} unchanged re-send(s) (not embedded): "
              f"{rate(edits_seen, clock)}")
    auto.cache_size = len(texts)  # the encoder's own LRU cache, by text digest (templates, reverts, copies)
    auto.encode(texts)
    with Clock() as clock:
        auto.encode(texts)
    print(f"   the encoder's cache, texts embedded before (another item's copy, a revert): {rate(len(texts), clock)}")

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
