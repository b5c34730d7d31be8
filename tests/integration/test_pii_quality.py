"""PII quality on presidio-research's generated_large.json, against Presidio's patterns.

Presidio runs with a blank spaCy pipeline (its pattern and checksum recognizers; no model
can be downloaded here). Matching rule: a prediction overlapping a gold span of the same
type (see pipelines.pii_eval). Floors below come from measured figures with a margin:
ours measured P/R (overlap) PERSON 0.87/0.86, STREET_ADDRESS 1.00/0.82, PHONE 0.93/1.00,
US_SSN 0.98/1.00, the rest 1.00/1.00.
"""

from __future__ import annotations

from pathlib import Path

import polars as pl
import pytest

from pipelines import pii, pii_eval

DATA = (
    Path(__file__).resolve().parents[2]
    / ".."
    / "shared"
    / "data"
    / "presidio-research"
    / "generated_large.json"
)
PATTERN_TYPES = ("EMAIL", "PHONE", "CREDIT_CARD", "IBAN", "US_SSN", "IP_ADDRESS")
RECALL_FLOOR = {"PERSON": 0.7, "STREET_ADDRESS": 0.7}
PRECISION_FLOOR = 0.8  # measured lowest: PERSON 0.87, PHONE 0.93

pytestmark = [
    pytest.mark.integration,
    pytest.mark.skipif(not DATA.exists(), reason=f"presidio-research data not found at {DATA}"),
]


@pytest.fixture(scope="module")
def dataset() -> pii_eval.Dataset:
    return pii_eval.load_presidio_research(DATA)


@pytest.fixture(scope="module")
def ours(dataset) -> dict[str, pii_eval.EntityScore]:
    texts = [s.text for s in dataset.samples]
    found = pii.detect_series(pl.Series(texts, dtype=pl.String))
    return pii_eval.score(dataset.samples, [found.get(i, []) for i in range(len(texts))])


@pytest.fixture(scope="module")
def presidio(dataset) -> dict[str, pii_eval.EntityScore]:
    pytest.importorskip("presidio_analyzer", reason="presidio-analyzer (dev extra) not installed")
    analyzer = pii_eval.presidio_analyzer()
    preds = [pii_eval.presidio_predict(analyzer, s.text) for s in dataset.samples]
    return pii_eval.score(dataset.samples, preds)


@pytest.mark.parametrize("entity", PATTERN_TYPES)
def test_recall_at_least_presidio(entity, ours, presidio):
    assert presidio[entity].n_gold > 0
    assert ours[entity].recall >= presidio[entity].recall, (ours[entity], presidio[entity])


@pytest.mark.parametrize("entity", sorted(RECALL_FLOOR))
def test_names_and_addresses_recall(entity, ours):
    assert ours[entity].recall >= RECALL_FLOOR[entity], ours[entity]


@pytest.mark.parametrize("entity", pii.ENTITY_TYPES)
def test_precision_floor(entity, ours):
    assert ours[entity].n_pred > 0
    assert ours[entity].precision >= PRECISION_FLOOR, ours[entity]


def test_scrubbed_texts_keep_no_gold_value_of_a_detected_type(dataset):
    """Scrubbing is what matters: count gold values left verbatim after scrubbing."""
    texts = [s.text for s in dataset.samples]
    scrubbed, _ = pii.scrub_series(pl.Series(texts, dtype=pl.String))
    left = {e: 0 for e in pii.ENTITY_TYPES}
    total = dict.fromkeys(pii.ENTITY_TYPES, 0)
    for sample, out in zip(dataset.samples, scrubbed.to_list(), strict=True):
        for g in sample.gold:
            value = sample.text[g.start : g.end]
            if len(value) >= 4:  # short fragments ("36") occur anywhere
                total[g.entity] += 1
                left[g.entity] += value in out
    for entity in PATTERN_TYPES:
        assert left[entity] == 0, (entity, left[entity], total[entity])
    assert left["PERSON"] <= 0.2 * total["PERSON"]
