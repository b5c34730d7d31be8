"""The statistics behind the gate: exact tests, bootstrap intervals, paired comparisons."""

from __future__ import annotations

import math

import numpy as np
import pytest

from pipelines import stats
from pipelines.evaluate import Scores, compare, headline, length_baselines

# --------------------------------------------------------------------------- binomial


@pytest.mark.parametrize(
    ("k", "n", "alternative", "expected"),
    [
        (60, 100, "greater", 0.028443966820490),  # R: binom.test(60, 100, alternative="greater")
        (60, 100, "two-sided", 0.056887933640980),
        (3, 10, "less", 0.171875),  # (1 + 10 + 45 + 120) / 1024
        (10, 10, "greater", 1 / 1024),
        (0, 10, "greater", 1.0),
    ],
)
def test_binom_test_matches_textbook_values(k, n, alternative, expected):
    assert stats.binom_test(k, n, 0.5, alternative) == pytest.approx(expected, rel=1e-9)


def test_binom_test_agrees_with_scipy_over_a_grid():
    scipy_stats = pytest.importorskip("scipy.stats")
    for n in (1, 7, 20, 101, 500):
        for k in sorted({0, 1, n // 3, n // 2, n // 2 + 1, n - 1, n}):
            for alt in ("greater", "less", "two-sided"):
                want = scipy_stats.binomtest(k, n, 0.5, alternative=alt).pvalue
                assert stats.binom_test(k, n, 0.5, alt) == pytest.approx(want, rel=1e-7, abs=1e-300), (k, n, alt)


def test_two_sided_binom_test_is_symmetric_at_one_half():
    assert stats.binom_test(40, 100, 0.5, "two-sided") == pytest.approx(stats.binom_test(60, 100, 0.5, "two-sided"))


def test_binom_test_is_stable_for_large_n():
    p = stats.binom_test(5200, 10000, 0.5, "greater")
    assert 0 < p < 1e-4


def test_binom_test_edge_cases():
    assert stats.binom_test(0, 0) == 1.0
    with pytest.raises(ValueError):
        stats.binom_test(5, 4)


def test_clopper_pearson_matches_scipy():
    scipy_stats = pytest.importorskip("scipy.stats")
    for k, n in ((0, 10), (3, 10), (50, 80), (80, 80), (412, 700)):
        ci = scipy_stats.binomtest(k, n).proportion_ci(confidence_level=0.95, method="exact")
        lo, hi = stats.clopper_pearson(k, n, 0.95)
        assert lo == pytest.approx(ci.low, abs=1e-9)
        assert hi == pytest.approx(ci.high, abs=1e-9)


# --------------------------------------------------------------------------- bootstrap


def test_bootstrap_ci_brackets_the_mean_and_is_seeded():
    x = np.random.default_rng(1).normal(2.0, 1.0, 400)
    lo, hi = stats.bootstrap_ci(x, 2000, 0.95, seed=5)
    assert lo < x.mean() < hi
    # the normal-theory half width is 1.96 * 1 / sqrt(400) = 0.098
    assert 0.07 < (hi - lo) / 2 < 0.13
    assert stats.bootstrap_ci(x, 2000, 0.95, seed=5) == (lo, hi)
    assert stats.bootstrap_ci(x, 2000, 0.95, seed=6) != (lo, hi)


def test_bootstrap_ci_of_a_constant_is_a_point_and_empty_is_nan():
    assert stats.bootstrap_ci(np.ones(30)) == (1.0, 1.0)
    assert all(math.isnan(v) for v in stats.bootstrap_ci([]))


def test_paired_bootstrap_uses_the_pairing():
    rng = np.random.default_rng(0)
    shared = rng.normal(0, 5, 200)  # large per-item variation common to both
    a = shared + 0.3 + rng.normal(0, 0.1, 200)
    b = shared
    paired = stats.paired_bootstrap_diff(a, b, 2000, 0.95, seed=1)
    assert paired["diff"] == pytest.approx(np.mean(a - b))
    assert paired["ci_low"] > 0.2 and paired["ci_high"] < 0.4
    assert paired["p_le_zero"] == 0.0
    # two independent intervals overlap heavily: the paired design is what makes it significant
    lo_a, _ = stats.bootstrap_ci(a, 2000, 0.95, seed=1)
    _, hi_b = stats.bootstrap_ci(b, 2000, 0.95, seed=2)
    assert lo_a < hi_b


def test_paired_bootstrap_rejects_unpaired_shapes():
    with pytest.raises(ValueError):
        stats.paired_bootstrap_diff([1, 2, 3], [1, 2])


def test_proportion_summary():
    s = stats.proportion_summary([True] * 70 + [False] * 30, 1000, 0.95, seed=0)
    assert s["rate"] == 0.7 and s["k"] == 70 and s["n"] == 100
    assert s["ci_low"] < 0.7 < s["ci_high"]
    assert s["exact_ci_low"] < 0.7 < s["exact_ci_high"]
    assert s["p_value"] == pytest.approx(stats.binom_test(70, 100, 0.5, "greater"))


# --------------------------------------------------------------------------- evaluate.compare


def _scores(c, r, cn=None, rn=None) -> Scores:
    c, r = np.asarray(c, float), np.asarray(r, float)
    return Scores(c, np.asarray(cn if cn is not None else [10] * len(c)), r,
                  np.asarray(rn if rn is not None else [10] * len(r)))


def test_length_baselines_score_ties_as_half():
    b = length_baselines(np.array([1, 5, 3]), np.array([2, 4, 3]))
    assert b["shorter_wins"].tolist() == [1.0, 0.0, 0.5]
    assert b["longer_wins"].tolist() == [0.0, 1.0, 0.5]


def test_compare_counts_wins_ties_and_accuracies():
    # margins: reference [1, -1, 2, 0.5], candidate [2, 1, 2, -1] -> wins at 0 and 1, tie at 2
    ref = _scores([-9, -11, -8, -9.5], [-10, -10, -10, -10])
    cand = _scores([-8, -9, -8, -11], [-10, -10, -10, -10])
    out = compare(cand, ref, np.array([5, 5, 5, 5]), np.array([9, 9, 9, 9]),
                  {"skill": np.array(["a", "a", "b", "b"])}, n_boot=200, seed=0)
    assert out["n"] == 4
    assert out["win_rate"]["k"] == 2 and out["ties"] == 1
    assert out["candidate"]["accuracy"]["rate"] == 0.75
    assert out["reference"]["accuracy"]["rate"] == 0.75
    assert out["baselines"]["shorter_wins"]["rate"] == 1.0
    assert out["paired"]["win_rate_minus_shorter"]["diff"] == pytest.approx(-0.5)
    assert out["slices"]["skill"]["a"]["win_rate"] == 1.0
    assert out["slices"]["skill"]["b"]["win_rate"] == 0.0
    assert out["by_length"]["chosen_shorter"]["n"] == 4 and out["by_length"]["chosen_longer"]["n"] == 0


def test_compare_length_normalised_margin_differs_from_summed():
    # chosen is longer: summed margin negative, per-token margin positive
    s = _scores([-30.0], [-20.0], cn=[30], rn=[10])
    out = compare(s, s, np.array([100]), np.array([30]), n_boot=100)
    assert out["reference"]["accuracy"]["rate"] == 0.0
    assert out["reference"]["norm_accuracy"]["rate"] == 1.0


def test_compare_nll_guard_measures_chosen_tokens():
    ref = _scores([-20, -20], [-1, -1], cn=[10, 10])
    cand = _scores([-22, -22], [-1, -1], cn=[10, 10])
    out = compare(cand, ref, np.array([1, 1]), np.array([2, 2]), n_boot=100)
    assert out["nll"]["reference"] == pytest.approx(2.0)
    assert out["nll"]["candidate"] == pytest.approx(2.2)
    assert out["nll"]["relative_increase"] == pytest.approx(0.1)


def test_headline_flattens_the_gate_inputs():
    s = _scores([-1, -2, -3], [-2, -1, -4])
    t = compare(s, _scores([-1, -1, -1], [-1, -1, -1]), np.array([1, 2, 3]), np.array([2, 1, 4]), n_boot=100)
    safety = dict(t, accuracy_regression=0.0)
    h = headline({"test": t, "safety": safety})
    assert h["n_test"] == 3 and h["win_rate"] == pytest.approx(2 / 3, abs=1e-6)
    assert h["safety_regression"] == 0.0 and h["n_safety"] == 3


def test_resampling_in_blocks_gives_the_one_table_means(monkeypatch):
    x = np.random.default_rng(3).normal(size=997)
    whole = x[np.random.default_rng(11).integers(0, x.size, size=(500, x.size))].mean(axis=1)
    monkeypatch.setattr(stats, "RESAMPLE_CELLS", 3 * x.size + 5)  # blocks of 3 rows, the last one short
    assert np.array_equal(stats._resample_means(x, 500, 11), whole)


def test_bootstrap_memory_does_not_grow_with_the_number_of_items():
    """The whole resample table of 100k items x 1,000 resamples would be 0.8 GB of indices."""
    import tracemalloc

    x = np.random.default_rng(0).random(100_000)
    tracemalloc.start()
    try:
        stats.paired_bootstrap_diff(x, x[::-1].copy(), n_boot=1000)
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert peak < 120 * 2**20, peak
