"""Scrubbing throughput: ours (batch and single-text paths) vs Presidio's pattern analyzer.

    .venv/bin/python benchmarks/bench_scrub.py
    .venv/bin/python benchmarks/bench_scrub.py --threads 2 --workers 2 --json /tmp/bench_scrub.json

Same texts for both: presidio-research's generated_large.json (2,109 short texts, almost
all holding PII). Ours scrubs the distinct texts in full rounds (a fresh call per round,
so nothing is reused between rounds); Presidio runs ``analyze`` on a sample (it is slow),
with a blank spaCy pipeline and only the entity types its patterns cover, both alone and
followed by the replacement an anonymizer would do. ``--threads`` caps polars' threads
(default 1, so that both sides use one core); the large synthetic column shows the batch
path at scale, optionally with worker processes (``--workers``).
"""

from __future__ import annotations

import argparse
import json
import os
import random
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
DEFAULT_DATA = ROOT / ".." / "shared" / "data" / "presidio-research" / "generated_large.json"
DEFAULT_CHAT = ROOT / ".." / "shared" / "data" / "hh-rlhf" / "harmless-base-test.jsonl.gz"
FILLERS = (
    "Let me know if anything else comes up.",
    "The team reviewed the request this morning.",
    "We will follow up after the weekly sync.",
    "Please keep this thread for reference.",
    "The dashboard shows the latest numbers.",
    "I added a note to the ticket.",
    "This should be resolved by the next release.",
    "Thanks for your patience while we look into it.",
    "The previous answer missed a step, sorry about that.",
    "Here is a short summary of the discussion.",
    "The billing page has the details.",
    "We moved the meeting to the afternoon.",
)


def _rate(n: int, seconds: float) -> float:
    return n / seconds if seconds > 0 else float("inf")


def synthetic_column(texts: list[str], size: int, seed: int = 0) -> list[str]:
    """Distinct texts: a presidio-research text between two neutral sentences."""
    rng = random.Random(seed)
    out: set[str] = set()
    while len(out) < size:
        a, b = rng.choice(FILLERS), rng.choice(FILLERS)
        out.add(f"{a} {rng.choice(texts)} {b} (case {rng.randrange(10**6)})")
    return sorted(out)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--data", type=Path, default=DEFAULT_DATA)
    parser.add_argument("--rounds", type=int, default=3, help="full passes of ours over the texts")
    parser.add_argument("--presidio-sample", type=int, default=1000)
    parser.add_argument("--single-sample", type=int, default=200, help="texts for scrub_text")
    parser.add_argument("--synthetic", type=int, default=200_000, help="size of the large column")
    parser.add_argument(
        "--threads", type=int, default=1, help="polars threads (POLARS_MAX_THREADS)"
    )
    parser.add_argument(
        "--workers", type=int, default=1, help="worker processes for the large column"
    )
    parser.add_argument(
        "--chat", type=Path, default=DEFAULT_CHAT, help="hh-rlhf file: long, mostly PII-free texts"
    )
    parser.add_argument("--json", type=Path, default=None)
    args = parser.parse_args(argv)

    os.environ["POLARS_MAX_THREADS"] = str(args.threads)  # before polars is imported
    sys.path.insert(0, str(ROOT))
    import polars as pl

    from pipelines import pii, pii_eval

    texts = [s.text for s in pii_eval.load_presidio_research(args.data).samples]
    distinct = sorted(set(texts))
    series = pl.Series(distinct, dtype=pl.String)
    pii.scrub_series(series.head(600))  # load word lists, compile patterns (not timed)
    print(f"{len(distinct)} distinct texts, polars threads={pl.thread_pool_size()}")

    start = time.perf_counter()
    for _ in range(args.rounds):
        pii.scrub_series(series)
    ours_series = _rate(len(distinct) * args.rounds, time.perf_counter() - start)

    sample = distinct[: args.single_sample]
    start = time.perf_counter()
    for text in sample:
        pii.scrub_text(text)
    ours_single = _rate(len(sample), time.perf_counter() - start)

    analyzer = pii_eval.presidio_analyzer()
    psample = distinct[: args.presidio_sample]
    pii_eval.presidio_predict(analyzer, psample[0])
    start = time.perf_counter()
    for text in psample:
        pii_eval.presidio_predict(analyzer, text)
    presidio_analyze = _rate(len(psample), time.perf_counter() - start)
    start = time.perf_counter()
    for text in psample:
        pii_eval.presidio_scrub(analyzer, text)
    presidio_scrub = _rate(len(psample), time.perf_counter() - start)

    chat = {}
    if args.chat.exists():
        import gzip

        with gzip.open(args.chat, "rt", encoding="utf-8") as fh:
            convs = sorted({json.loads(line)["chosen"] for line in fh})
        start = time.perf_counter()
        pii.scrub_series(pl.Series(convs, dtype=pl.String))
        chat["ours_texts_per_s"] = _rate(len(convs), time.perf_counter() - start)
        csample = convs[: args.presidio_sample // 4]
        start = time.perf_counter()
        for text in csample:
            pii_eval.presidio_predict(analyzer, text)
        chat["presidio_analyze_texts_per_s"] = _rate(len(csample), time.perf_counter() - start)
        chat["ratio"] = chat["ours_texts_per_s"] / chat["presidio_analyze_texts_per_s"]
        chat["texts"] = len(convs)

    big = synthetic_column(distinct, args.synthetic)
    big_series = pl.Series(big, dtype=pl.String)
    mb = big_series.str.len_bytes().sum() / 1e6
    with pii.WorkerPool(args.workers) as pool:
        if args.workers > 1:
            pool.submit(big[:1000], pii.ENTITY_TYPES, pii.DEFAULT_PLACEHOLDER).get()
        start = time.perf_counter()
        pii.scrub_series(big_series, pool=pool)
        big_s = time.perf_counter() - start

    figures = {
        "texts": len(distinct),
        "polars_threads": args.threads,
        "ours_scrub_series_texts_per_s": ours_series,
        "ours_scrub_text_texts_per_s": ours_single,
        "presidio_analyze_texts_per_s": presidio_analyze,
        "presidio_analyze_replace_texts_per_s": presidio_scrub,
        "ratio_series_vs_presidio_analyze": ours_series / presidio_analyze,
        "ratio_series_vs_presidio_analyze_replace": ours_series / presidio_scrub,
        "chat": chat,
        "synthetic_texts": len(big),
        "synthetic_mb": mb,
        "synthetic_workers": args.workers,
        "synthetic_seconds": big_s,
        "synthetic_texts_per_s": _rate(len(big), big_s),
    }
    print(f"ours scrub_series:             {ours_series:10.0f} texts/s ({args.rounds} rounds)")
    print(f"ours scrub_text (one by one):  {ours_single:10.0f} texts/s (polars call per text)")
    print(f"presidio analyze:              {presidio_analyze:10.0f} texts/s ({len(psample)} texts)")
    print(f"presidio analyze + replace:    {presidio_scrub:10.0f} texts/s")
    print(
        f"ratio scrub_series / presidio analyze: {figures['ratio_series_vs_presidio_analyze']:.1f}x"
    )
    if chat:
        print(
            f"hh-rlhf conversations ({chat['texts']}, ~650 chars, mostly no PII): ours "
            f"{chat['ours_texts_per_s']:.0f} texts/s, presidio analyze "
            f"{chat['presidio_analyze_texts_per_s']:.0f} texts/s, ratio {chat['ratio']:.1f}x"
        )
    print(
        f"synthetic column: {len(big)} texts, {mb:.1f} MB in {big_s:.2f} s "
        f"= {figures['synthetic_texts_per_s']:.0f} texts/s ({args.workers} worker(s))"
    )
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps(figures, indent=2, sort_keys=True) + "\n", encoding="utf-8")
        print(f"wrote {args.json}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
