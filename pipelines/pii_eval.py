"""Scoring PII detectors against span-annotated text (pure functions, no I/O but loading).

Used by ``benchmarks/pii_quality.py`` and the integration tests. The gold format is the
one of presidio-research (``full_text`` + ``spans`` with ``entity_type``,
``start_position``, ``end_position``); dataset types are mapped to ours, and types we do
not detect are kept aside and reported as such.

Matching rules (per entity type, predictions and gold spans of the same type only):

- ``overlap``: a predicted span is a true positive if it overlaps a gold span; a gold
  span is found if some predicted span overlaps it. This is the primary rule: for
  scrubbing, touching the value is what matters, and gold address spans are often
  fragments (house number, postcode) of one address that a detector masks whole.
- ``coverage50``: at least half of the gold span's characters are covered by predicted
  spans (recall), and at least half of a predicted span's characters lie in gold spans
  (precision).
- ``exact``: same start and end.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from pipelines.pii import ENTITY_TYPES, Span

MATCH_RULES = ("overlap", "coverage50", "exact")
COVERAGE_THRESHOLD = 0.5

# presidio-research entity types -> ours
DATASET_TO_OURS: dict[str, str] = {
    "PERSON": "PERSON",
    "PHONE_NUMBER": "PHONE",
    "EMAIL_ADDRESS": "EMAIL",
    "STREET_ADDRESS": "STREET_ADDRESS",
    "ADDRESS": "STREET_ADDRESS",
    "CREDIT_CARD": "CREDIT_CARD",
    "IBAN_CODE": "IBAN",
    "US_SSN": "US_SSN",
    "IP_ADDRESS": "IP_ADDRESS",
}
# Presidio analyzer entity types -> ours
PRESIDIO_TO_OURS: dict[str, str] = {
    "PERSON": "PERSON",
    "PHONE_NUMBER": "PHONE",
    "EMAIL_ADDRESS": "EMAIL",
    "CREDIT_CARD": "CREDIT_CARD",
    "IBAN_CODE": "IBAN",
    "US_SSN": "US_SSN",
    "IP_ADDRESS": "IP_ADDRESS",
    "LOCATION": "STREET_ADDRESS",
}


@dataclass(frozen=True)
class Sample:
    """One annotated text: gold spans in our entity types."""

    text: str
    gold: tuple[Span, ...]


@dataclass
class Dataset:
    samples: list[Sample]
    ignored_types: dict[str, int] = field(default_factory=dict)  # dataset type -> spans


@dataclass
class EntityScore:
    """Counts for one entity type; precision and recall are counted on their own sides."""

    entity: str
    n_gold: int = 0
    n_pred: int = 0
    gold_found: int = 0
    pred_correct: int = 0

    @property
    def precision(self) -> float | None:
        return self.pred_correct / self.n_pred if self.n_pred else None

    @property
    def recall(self) -> float | None:
        return self.gold_found / self.n_gold if self.n_gold else None

    @property
    def f1(self) -> float | None:
        p, r = self.precision, self.recall
        if p is None or r is None or p + r == 0:
            return None if p is None or r is None else 0.0
        return 2 * p * r / (p + r)

    def as_dict(self) -> dict[str, float | int | None]:
        return {
            "n_gold": self.n_gold,
            "n_pred": self.n_pred,
            "gold_found": self.gold_found,
            "pred_correct": self.pred_correct,
            "precision": self.precision,
            "recall": self.recall,
            "f1": self.f1,
        }


def load_presidio_research(path: str | Path) -> Dataset:
    """Read a presidio-research generated JSON file into :class:`Dataset`."""
    rows = json.loads(Path(path).read_text(encoding="utf-8"))
    return parse_presidio_research(rows)


def parse_presidio_research(rows: Iterable[dict]) -> Dataset:
    """Map each row's spans to our types; count spans of types we do not detect."""
    samples: list[Sample] = []
    ignored: dict[str, int] = {}
    for row in rows:
        gold = []
        for sp in row.get("spans") or []:
            ours = DATASET_TO_OURS.get(sp["entity_type"])
            if ours is None:
                ignored[sp["entity_type"]] = ignored.get(sp["entity_type"], 0) + 1
                continue
            gold.append(Span(ours, int(sp["start_position"]), int(sp["end_position"])))
        samples.append(Sample(row["full_text"], tuple(sorted(gold, key=lambda s: s.start))))
    return Dataset(samples, dict(sorted(ignored.items())))


def _overlap(a: Span, b: Span) -> int:
    return max(0, min(a.end, b.end) - max(a.start, b.start))


def _covered(span: Span, others: Sequence[Span]) -> int:
    """Characters of ``span`` covered by the union of ``others``."""
    marks = [False] * (span.end - span.start)
    for o in others:
        for i in range(max(span.start, o.start), min(span.end, o.end)):
            marks[i - span.start] = True
    return sum(marks)


def _matched(span: Span, others: Sequence[Span], rule: str) -> bool:
    same = [o for o in others if o.entity == span.entity]
    if rule == "overlap":
        return any(_overlap(span, o) > 0 for o in same)
    if rule == "exact":
        return any(o.start == span.start and o.end == span.end for o in same)
    if rule == "coverage50":
        length = span.end - span.start
        return length > 0 and _covered(span, same) >= COVERAGE_THRESHOLD * length
    raise ValueError(f"unknown match rule {rule!r}; known: {', '.join(MATCH_RULES)}")


def score(
    samples: Sequence[Sample],
    predictions: Sequence[Sequence[Span]],
    rule: str = "overlap",
    entities: Sequence[str] = ENTITY_TYPES,
) -> dict[str, EntityScore]:
    """Per-entity counts of gold spans found and predicted spans correct under ``rule``."""
    if len(samples) != len(predictions):
        raise ValueError("one prediction list per sample is needed")
    scores = {e: EntityScore(e) for e in entities}
    for sample, preds in zip(samples, predictions, strict=True):
        preds = [p for p in preds if p.entity in scores]
        for g in sample.gold:
            if g.entity not in scores:
                continue
            scores[g.entity].n_gold += 1
            scores[g.entity].gold_found += _matched(g, preds, rule)
        for p in preds:
            scores[p.entity].n_pred += 1
            scores[p.entity].pred_correct += _matched(p, sample.gold, rule)
    return scores


def predict_all(texts: Iterable[str], detector: Callable[[str], list[Span]]) -> list[list[Span]]:
    """Run a detector over texts (kept here so scripts and tests share it)."""
    return [list(detector(t)) for t in texts]


def scores_as_dict(scores: dict[str, EntityScore]) -> dict[str, dict[str, float | int | None]]:
    return {e: s.as_dict() for e, s in scores.items()}


def fmt(x: float | None) -> str:
    """Three decimals, or '-' when undefined (no gold or no prediction)."""
    return "-" if x is None else f"{x:.3f}"


def comparison_table(
    ours: dict[str, EntityScore], theirs: dict[str, EntityScore] | None, names: tuple[str, str]
) -> str:
    """A fixed-width table: per entity, P/R/F1 of both detectors side by side."""
    a, b = names
    head = f"{'entity':<15} {'gold':>5} | {a + ' P':>9} {'R':>6} {'F1':>6} {'pred':>5}"
    if theirs is not None:
        head += f" | {b + ' P':>11} {'R':>6} {'F1':>6} {'pred':>5}"
    lines = [head, "-" * len(head)]
    for e, s in ours.items():
        line = (
            f"{e:<15} {s.n_gold:>5} | {fmt(s.precision):>9} {fmt(s.recall):>6} "
            f"{fmt(s.f1):>6} {s.n_pred:>5}"
        )
        if theirs is not None:
            t = theirs[e]
            line += f" | {fmt(t.precision):>11} {fmt(t.recall):>6} {fmt(t.f1):>6} {t.n_pred:>5}"
        lines.append(line)
    return "\n".join(lines)


# ---------------------------------------------------------------------------------------
# Presidio baseline (dev dependency; imported only here, inside the functions)
# ---------------------------------------------------------------------------------------

PRESIDIO_ENTITIES = (
    "PHONE_NUMBER",
    "EMAIL_ADDRESS",
    "CREDIT_CARD",
    "IBAN_CODE",
    "US_SSN",
    "IP_ADDRESS",
)
"""What Presidio's pattern/checksum recognizers cover of our types (no PERSON, no address)."""


def presidio_analyzer() -> Any:
    """Presidio's AnalyzerEngine with a blank spaCy pipeline: pattern recognizers only.

    Why blank: no spaCy model may be downloaded here; ``spacy.blank("en")`` tokenizes (so
    context words still count) but finds no named entities. The e-mail recognizer's
    tldextract is pointed at its bundled suffix list so that it never goes online.
    """
    import types

    import spacy
    import tldextract
    from presidio_analyzer import AnalyzerEngine
    from presidio_analyzer.nlp_engine import SpacyNlpEngine
    from presidio_analyzer.predefined_recognizers.generic import email_recognizer

    email_recognizer.tldextract = types.SimpleNamespace(
        extract=tldextract.TLDExtract(suffix_list_urls=())
    )
    engine = SpacyNlpEngine(models=[{"lang_code": "en", "model_name": "blank:en"}])
    engine.nlp = {"en": spacy.blank("en")}
    analyzer = AnalyzerEngine(nlp_engine=engine, supported_languages=["en"])
    analyzer.registry.remove_recognizer("SpacyRecognizer")
    return analyzer


def presidio_predict(analyzer: Any, text: str) -> list[Span]:
    """Presidio's results for ``text`` (all scores), mapped to our entity types."""
    results = analyzer.analyze(text=text, language="en", entities=list(PRESIDIO_ENTITIES))
    return sorted(
        (Span(PRESIDIO_TO_OURS[r.entity_type], r.start, r.end) for r in results),
        key=lambda s: (s.start, s.end),
    )


def presidio_scrub(analyzer: Any, text: str, placeholder_format: str = "<{entity}>") -> str:
    """Analyze plus the replacement step an anonymizer would do (overlaps: first wins)."""
    spans, last = [], -1
    for span in presidio_predict(analyzer, text):
        if span.start >= last:
            spans.append(span)
            last = span.end
    parts, cur = [], 0
    for span in spans:
        parts += [text[cur : span.start], placeholder_format.format(entity=span.entity)]
        cur = span.end
    return "".join([*parts, text[cur:]])
