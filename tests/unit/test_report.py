"""The evaluation report: figures and text for a person deciding on a candidate."""

from __future__ import annotations

import warnings

import numpy as np
import polars as pl

from pipelines.evaluate import Scores, _per_pair_frame, compare
from pipelines.report import write_report


def _evaluation_and_pairs(reference_margin: np.ndarray) -> tuple[dict, pl.DataFrame]:
    """An evaluation of a candidate against a reference with the given margins."""
    rng = np.random.default_rng(0)
    n = reference_margin.size
    lens = rng.integers(5, 50, size=n)

    def scores(margin: np.ndarray) -> Scores:
        logp = rng.normal(-20, 1, size=n)
        return Scores(chosen_logp=logp + margin, chosen_n=lens, rejected_logp=logp, rejected_n=lens)

    pairs = pl.DataFrame({
        "pair_id": [f"p{i}" for i in range(n)],
        "skill": ["support_reply", "email_draft"] * (n // 2),
        "pair_type": ["edit"] * n,
    })
    cand, ref = scores(rng.normal(0.5, 1, size=n)), scores(reference_margin)
    slices = {"skill": pairs["skill"].to_numpy(), "pair_type": pairs["pair_type"].to_numpy()}
    test = compare(cand, ref, lens, lens, slices, n_boot=50)
    evaluation = {"candidate_fingerprint": "abc123", "reference": {"label": "champion v3"}, "confidence": 0.95,
                  "test": test, "safety": {"n": 0}}
    return evaluation, _per_pair_frame("test", pairs, cand, ref)


def test_a_reference_that_scores_nan_still_gets_its_figures_and_says_so(tmp_path):
    """A broken champion's NaN margins made the histogram's range NaN (matplotlib warned
    on every such report); the finite margins are drawn and the rest counted."""
    margins = np.full(40, np.nan)
    margins[:10] = np.linspace(-1, 1, 10)
    evaluation, per_pair = _evaluation_and_pairs(margins)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        report = write_report(evaluation, per_pair, tmp_path)
    assert "champion v3" in report.read_text()
    for name in ("margins_hist", "margins_scatter", "slices", "accuracy"):
        assert (tmp_path / "figures" / f"{name}.png").stat().st_size > 1000, name


def test_a_reference_with_no_finite_margin_at_all_still_draws(tmp_path):
    evaluation, per_pair = _evaluation_and_pairs(np.full(40, np.nan))
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        write_report(evaluation, per_pair, tmp_path)
    assert (tmp_path / "figures" / "margins_hist.png").stat().st_size > 1000
