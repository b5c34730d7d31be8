"""Count the scrubber's idempotency failures over a long fuzz campaign (not a test).

    .venv/bin/python tests/reliability/fuzz_campaign.py --examples 8000

The pytest fuzz tests stop at the first failure and run a few hundred examples; the
figures in RELIABILITY.md ("Scrubber idempotency") come from this script instead: the
same two adversarial strategies (``test_fuzz.SCRUB_TEXT`` with every placeholder
format, and ``test_pii.PII_ALPHABET``), derandomised, every failing text listed. Two
checkouts compare fairly: each draws the same texts.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--examples", type=int, default=8000, help="texts per strategy")
    args = parser.parse_args(argv)
    sys.path[:0] = [str(ROOT), str(ROOT / "tests")]
    from hypothesis import HealthCheck, given, settings
    from hypothesis import strategies as st
    from reliability.test_fuzz import PLACEHOLDER_FORMATS, SCRUB_TEXT
    from unit.test_pii import PII_ALPHABET

    from pipelines import pii

    failures: list[tuple[str, str, str]] = []
    campaign = settings(
        max_examples=args.examples, deadline=None, derandomize=True, database=None,
        suppress_health_check=list(HealthCheck),
    )  # fmt: skip

    def check(strategy: str, text: str, fmt: str) -> None:
        once = pii.scrub_text(text, placeholder_format=fmt)[0]
        if pii.scrub_text(once, placeholder_format=fmt)[0] != once:
            failures.append((strategy, fmt, text))

    @campaign
    @given(SCRUB_TEXT, st.sampled_from(PLACEHOLDER_FORMATS))
    def scrub_text_strategy(text: str, fmt: str) -> None:
        check("SCRUB_TEXT", text, fmt)

    @campaign
    @given(st.lists(PII_ALPHABET, max_size=14).map("".join))
    def pii_alphabet_strategy(text: str) -> None:
        check("PII_ALPHABET", text, pii.DEFAULT_PLACEHOLDER)

    for run in (scrub_text_strategy, pii_alphabet_strategy):
        run()
    for strategy, fmt, text in failures:
        print(f"{strategy:12} {fmt:14} {text!r}")
    for strategy in ("SCRUB_TEXT", "PII_ALPHABET"):
        n = sum(f[0] == strategy for f in failures)
        print(f"{strategy}: {n} of {args.examples} texts change on a second scrub")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
