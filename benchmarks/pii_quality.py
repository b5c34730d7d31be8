"""PII detection quality: ours vs Presidio's pattern recognizers, per entity type.

    .venv/bin/python benchmarks/pii_quality.py
    .venv/bin/python benchmarks/pii_quality.py --data ../shared/data/presidio-research/generated_large.json --json /tmp/pii_quality.json

Both detectors run on the same texts (presidio-research, template-generated with fake
identities). Presidio runs with a blank spaCy pipeline (no model can be downloaded here),
so it has its pattern and checksum recognizers only: no PERSON, no address. Dataset types
are mapped to ours (PHONE_NUMBER->PHONE, EMAIL_ADDRESS->EMAIL, ADDRESS/STREET_ADDRESS->
STREET_ADDRESS, IBAN_CODE->IBAN, ...); types neither side is asked for are listed as not
detected. Scores use the rules of ``pipelines.pii_eval`` (overlap is the primary one).
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from pipelines import pii, pii_eval  # noqa: E402

DEFAULT_DATA = ROOT / ".." / "shared" / "data" / "presidio-research" / "generated_large.json"
RULE_TEXT = {
    "overlap": "a prediction is correct if it overlaps a gold span of the same type; "
    "a gold span is found if a prediction of its type overlaps it",
    "coverage50": "at least half of a gold span is covered by predictions of its type "
    "(recall); at least half of a prediction lies in gold spans of its type (precision)",
    "exact": "same start and end",
}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument(
        "--data", type=Path, default=DEFAULT_DATA, help="presidio-research JSON file"
    )
    parser.add_argument("--json", type=Path, default=None, help="write the figures here")
    parser.add_argument("--no-presidio", action="store_true", help="score ours only")
    parser.add_argument(
        "--rules", default="overlap,coverage50,exact", help="comma-separated match rules"
    )
    args = parser.parse_args(argv)

    dataset = pii_eval.load_presidio_research(args.data)
    texts = [s.text for s in dataset.samples]
    print(f"{len(texts)} texts from {args.data}")

    start = time.perf_counter()
    detected = pii.detect_series(pii.pl.Series(texts, dtype=pii.pl.String))
    ours = [detected.get(i, []) for i in range(len(texts))]
    ours_s = time.perf_counter() - start
    theirs = None
    theirs_s = None
    if not args.no_presidio:
        analyzer = pii_eval.presidio_analyzer()
        start = time.perf_counter()
        theirs = [pii_eval.presidio_predict(analyzer, t) for t in texts]
        theirs_s = time.perf_counter() - start
    print(f"ours: {ours_s:.2f} s" + (f", presidio: {theirs_s:.2f} s" if theirs_s else ""))

    report: dict = {
        "data": str(args.data),
        "n_texts": len(texts),
        "not_detected_types": dataset.ignored_types,
        "seconds": {"ours": ours_s, "presidio": theirs_s},
        "rules": {},
    }
    for rule in args.rules.split(","):
        a = pii_eval.score(dataset.samples, ours, rule)
        b = pii_eval.score(dataset.samples, theirs, rule) if theirs is not None else None
        print(f"\nmatch rule '{rule}': {RULE_TEXT[rule]}")
        print(pii_eval.comparison_table(a, b, ("ours", "presidio")))
        report["rules"][rule] = {
            "description": RULE_TEXT[rule],
            "ours": pii_eval.scores_as_dict(a),
            "presidio": pii_eval.scores_as_dict(b) if b is not None else None,
        }
    ignored = ", ".join(f"{k} ({v})" for k, v in dataset.ignored_types.items())
    print(f"\nnot detected (dataset types outside our entity set, spans): {ignored}")
    print(
        "presidio: pattern recognizers only (blank spaCy pipeline): PERSON and addresses are not covered"
    )
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps(report, indent=2, sort_keys=True) + "\n", encoding="utf-8")
        print(f"wrote {args.json}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
