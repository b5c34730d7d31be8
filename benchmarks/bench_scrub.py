"""Scrubbing throughput: ours (batch and single-text paths) vs Presidio's pattern analyzer.

    .venv/bin/python benchmarks/bench_scrub.py
    .venv/bin/python benchmarks/bench_scrub.py --threads 2 --workers 2 --json /tmp/bench_scrub.json

Same texts for both, three corpora: presidio-research's generated_large.json (2,109
short texts, almost all holding PII: the hardest case), hh-rlhf conversations (long,
mostly PII-free) and the free-text fields of the bundled raw events (``data/raw``: what
the scrub stage itself reads, PII in about half of them). Ours scrubs the distinct texts
of a corpus, Presidio runs ``analyze`` on a sample of them (it is slow), with a blank
spaCy pipeline and only the entity types its patterns cover, both alone and followed by
the replacement an anonymizer would do. Both sides see the same texts in every round:
each keeps caches across calls (our token classes, spaCy's tokenizer: Presidio is ~1.4x
faster on texts it has seen), so the first round is cold for both and the later ones
warm for both; the figures are over all rounds. The two take turns (ours, then
Presidio, per corpus and round), so that a load from elsewhere that comes and goes weighs
on both sides alike. ``--threads`` caps polars' threads (default 1, so that both
sides use one core); the large synthetic column shows the batch path at scale,
optionally with worker processes (``--workers``). Every rate is measured by the wall
clock and by this process's CPU time; on a machine shared with other work the CPU-time
ratio is the steadier one.
"""

from __future__ import annotations

import argparse
import gc
import gzip
import json
import os
import random
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
DEFAULT_DATA = ROOT / ".." / "shared" / "data" / "presidio-research" / "generated_large.json"
DEFAULT_CHAT = ROOT / ".." / "shared" / "data" / "hh-rlhf" / "harmless-base-test.jsonl.gz"
DEFAULT_EVENTS = ROOT / "data" / "raw" / "events"
# the types Presidio's pattern recognizers cover here: a like-for-like run of ours (no names, no addresses)
PATTERN_TYPES = ("EMAIL", "PHONE", "CREDIT_CARD", "IBAN", "US_SSN", "IP_ADDRESS")
RAW_TEXT_FIELDS = ("prompt", "context", "text", "edited_text")  # an output's text is "text" when raw
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


def _chat_texts(path: Path) -> list[str]:
    """The distinct 'chosen' conversations of an hh-rlhf file (none when it is missing)."""
    if not path.exists():
        return []
    with gzip.open(path, "rt", encoding="utf-8") as fh:
        return sorted({json.loads(line)["chosen"] for line in fh})


def _event_texts(folder: Path) -> list[str]:
    """The distinct free texts of the raw events under ``folder`` (JSONL; bad lines skipped)."""
    out: set[str] = set()
    for path in sorted(folder.glob("*.jsonl")) if folder.is_dir() else []:
        for line in path.read_text(encoding="utf-8", errors="replace").splitlines():
            try:
                event = json.loads(line)
            except ValueError:
                continue
            if isinstance(event, dict):
                out.update(v for k in RAW_TEXT_FIELDS if isinstance(v := event.get(k), str) and v)
    return sorted(out)


def _rounds(ratios: list[float]) -> str:
    """Per-round ratios as '7.9x 8.1x 8.3x': how far one run's rounds alone spread."""
    return " ".join(f"{r:.1f}x" for r in ratios)


def _timed(fn: Callable[[], object]) -> tuple[float, float]:
    """(wall seconds, CPU seconds of this process) that one call of ``fn`` takes.

    Why both: on a shared machine the wall clock also counts the time the process waited
    for a core; CPU time does not, so a ratio of CPU times survives a busy neighbour.
    """
    wall, cpu = time.perf_counter(), time.process_time()
    fn()
    return time.perf_counter() - wall, time.process_time() - cpu


@dataclass(frozen=True)
class Rate:
    """Texts per second of one measurement, by the wall clock and by CPU time."""

    texts: int
    wall_s: float
    cpu_s: float

    @property
    def wall(self) -> float:
        return _rate(self.texts, self.wall_s)

    @property
    def cpu(self) -> float:
        return _rate(self.texts, self.cpu_s)


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
    parser.add_argument("--rounds", type=int, default=3, help="passes of both sides over the texts")
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
    parser.add_argument(
        "--events", type=Path, default=DEFAULT_EVENTS, help="raw events folder (the scrub stage's input)"
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

    sample = distinct[: args.single_sample]
    # the other corpora: (texts, how many of them Presidio analyses)
    others = {
        "chat": (_chat_texts(args.chat), args.presidio_sample // 4),
        "events": (_event_texts(args.events), args.presidio_sample // 2),
    }
    analyzer = pii_eval.presidio_analyzer()
    psample = distinct[: args.presidio_sample]
    pii_eval.presidio_predict(analyzer, psample[0])
    # Presidio's spaCy puts ~0.5M long-lived objects on the heap; frozen, the garbage
    # collector stops walking them, as it never has to in a process without Presidio
    gc.collect()
    gc.freeze()

    def presidio(texts: list[str]) -> Callable[[], object]:
        return lambda: [pii_eval.presidio_predict(analyzer, t) for t in texts]

    def ours(column: pl.Series, entities: tuple[str, ...] = pii.ENTITY_TYPES) -> Callable[[], object]:
        return lambda: pii.scrub_series(column, entities)

    # ours and Presidio take turns on the same texts: a neighbour's load that comes and goes
    # then slows both sides alike, and each side's caches are as warm as the other's
    corpora = {"": (distinct, psample), **{k: (t, t[:n]) for k, (t, n) in others.items() if t}}
    columns = {k: pl.Series(t, dtype=pl.String) for k, (t, _) in corpora.items()}
    per_round: list[dict[str, Rate]] = []  # each round's rates: the spread of a ratio within this run
    for _ in range(args.rounds):
        this_round: dict[str, Rate] = {}
        for key, (texts_, sample_) in corpora.items():
            steps = [("ours", len(texts_), ours(columns[key])), ("presidio", len(sample_), presidio(sample_))]
            if not key:  # like for like: only the types Presidio's patterns look for
                steps.append(("ours_patterns", len(texts_), ours(columns[key], PATTERN_TYPES)))
            for side, n, fn in steps:
                this_round[f"{side}_{key}"] = Rate(n, *_timed(fn))
        per_round.append(this_round)
    # over all rounds: the first (cold) one and the warm ones together
    rates = {
        k: Rate(*(sum(getattr(r[k], f) for r in per_round) for f in ("texts", "wall_s", "cpu_s")))
        for k in per_round[0]
    }

    def spread(ours_key: str, presidio_key: str) -> list[float]:
        """The wall-clock ratio of each round, in order (the first round is the cold one)."""
        return [r[ours_key].wall / r[presidio_key].wall for r in per_round]

    ours_series, presidio_analyze = rates["ours_"], rates["presidio_"]
    presidio_scrub = Rate(
        len(psample), *_timed(lambda: [pii_eval.presidio_scrub(analyzer, t) for t in psample])
    )
    ours_single = Rate(len(sample), *_timed(lambda: [pii.scrub_text(t) for t in sample]))
    other_figures = {
        key: {
            "texts": len(corpora[key][0]),
            "ours_texts_per_s": rates[f"ours_{key}"].wall,
            "presidio_analyze_texts_per_s": rates[f"presidio_{key}"].wall,
            "ratio": rates[f"ours_{key}"].wall / rates[f"presidio_{key}"].wall,
            "ours_cpu_texts_per_s": rates[f"ours_{key}"].cpu,
            "presidio_analyze_cpu_texts_per_s": rates[f"presidio_{key}"].cpu,
            "ratio_cpu": rates[f"ours_{key}"].cpu / rates[f"presidio_{key}"].cpu,
            "ratio_per_round": spread(f"ours_{key}", f"presidio_{key}"),
        }
        for key in others
        if key in corpora
    }

    big = synthetic_column(distinct, args.synthetic)
    big_series = pl.Series(big, dtype=pl.String)
    mb = big_series.str.len_bytes().sum() / 1e6
    with pii.WorkerPool(args.workers) as pool:
        if args.workers > 1:
            pool.submit(big[:1000], pii.ENTITY_TYPES, pii.DEFAULT_PLACEHOLDER).get()
        big_s = _timed(lambda: pii.scrub_series(big_series, pool=pool))[0]

    figures = {
        "texts": len(distinct),
        "polars_threads": args.threads,
        "ours_scrub_series_texts_per_s": ours_series.wall,
        "ours_scrub_text_texts_per_s": ours_single.wall,
        "presidio_analyze_texts_per_s": presidio_analyze.wall,
        "presidio_analyze_replace_texts_per_s": presidio_scrub.wall,
        "ratio_series_vs_presidio_analyze": ours_series.wall / presidio_analyze.wall,
        "ratio_series_vs_presidio_analyze_replace": ours_series.wall / presidio_scrub.wall,
        "ours_scrub_series_cpu_texts_per_s": ours_series.cpu,
        "presidio_analyze_cpu_texts_per_s": presidio_analyze.cpu,
        "ratio_cpu_series_vs_presidio_analyze": ours_series.cpu / presidio_analyze.cpu,
        "ratio_series_vs_presidio_analyze_per_round": spread("ours_", "presidio_"),
        "ratio_pattern_types_vs_presidio_analyze_per_round": spread("ours_patterns_", "presidio_"),
        "ours_pattern_types_texts_per_s": rates["ours_patterns_"].wall,
        "ratio_pattern_types_vs_presidio_analyze": rates["ours_patterns_"].wall / presidio_analyze.wall,
        "ratio_cpu_pattern_types_vs_presidio_analyze": rates["ours_patterns_"].cpu / presidio_analyze.cpu,
        **other_figures,
        "synthetic_texts": len(big),
        "synthetic_mb": mb,
        "synthetic_workers": args.workers,
        "synthetic_seconds": big_s,
        "synthetic_texts_per_s": _rate(len(big), big_s),
    }
    print(f"ours scrub_series:             {ours_series.wall:10.0f} texts/s ({args.rounds} rounds)")
    print(f"ours scrub_text (one by one):  {ours_single.wall:10.0f} texts/s (polars call per text)")
    print(
        f"presidio analyze:              {presidio_analyze.wall:10.0f} texts/s ({len(psample)} texts)"
    )
    print(f"presidio analyze + replace:    {presidio_scrub.wall:10.0f} texts/s")
    print(
        f"ratio scrub_series / presidio analyze: {figures['ratio_series_vs_presidio_analyze']:.1f}x"
        f" (CPU time: {ours_series.cpu:.0f} vs {presidio_analyze.cpu:.0f} texts/s, "
        f"{figures['ratio_cpu_series_vs_presidio_analyze']:.1f}x; per round {_rounds(spread('ours_', 'presidio_'))})"
    )
    print(
        f"like for like, ours on Presidio's six pattern types only (no names, no addresses): "
        f"{figures['ours_pattern_types_texts_per_s']:.0f} texts/s, "
        f"{figures['ratio_pattern_types_vs_presidio_analyze']:.1f}x "
        f"(CPU time: {figures['ratio_cpu_pattern_types_vs_presidio_analyze']:.1f}x; "
        f"per round {_rounds(spread('ours_patterns_', 'presidio_'))})"
    )
    labels = {
        "chat": "hh-rlhf conversations (~650 chars, mostly no PII)",
        "events": "bundled raw events' free texts (the scrub stage's input)",
    }
    for key, fig in other_figures.items():
        print(
            f"{labels[key]}: {fig['texts']} texts, ours {fig['ours_texts_per_s']:.0f} texts/s, "
            f"presidio analyze {fig['presidio_analyze_texts_per_s']:.0f} texts/s, ratio "
            f"{fig['ratio']:.1f}x (CPU time: {fig['ratio_cpu']:.1f}x; per round {_rounds(fig['ratio_per_round'])})"
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
