"""The evaluation report a person reads: Markdown with PNG figures, beside ``eval.json``.

Figures (``figures/*.png``; matplotlib, Agg backend, no timestamps in the files):

- ``margins_hist.png``: the distribution of margins on the test pairs, both models;
- ``margins_scatter.png``: candidate margin against reference margin, one dot a pair
  (above the diagonal = a win), and beside it the change of margin per pair;
- ``slices.png``: win-rate per skill and per pair type with bootstrap intervals;
- ``accuracy.png``: preference accuracy, length-normalised accuracy and the two length
  baselines, with intervals.

The prose states plainly how much of each model's accuracy is explained by length, from
the accuracy split by whether the chosen response is the shorter one.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any

from pipelines.io import atomic_path, write_text_atomic

if TYPE_CHECKING:
    import polars as pl


def _pct(x: float) -> str:
    return "n/a" if x != x else f"{100 * x:.1f}%"


def _ci(d: dict[str, float], lo: str = "ci_low", hi: str = "ci_high") -> str:
    return f"[{_pct(d[lo])}, {_pct(d[hi])}]"


def _pts(d: dict[str, float]) -> str:
    """A paired difference and its interval, in percentage points."""
    return f"{100 * d['diff']:+.1f} pts [{100 * d['ci_low']:+.1f}, {100 * d['ci_high']:+.1f}]"


def length_sentence(result: dict[str, Any], who: str) -> str:
    """One honest sentence on the length effect in ``who``'s ("candidate"/"reference") accuracy."""
    s, lo = result["by_length"]["chosen_shorter"], result["by_length"]["chosen_longer"]
    a, b = s[f"{who}_accuracy"], lo[f"{who}_accuracy"]
    if s["n"] == 0 or lo["n"] == 0:
        return f"The {who}: the chosen response is always on one side of the length split, so no length check."
    gap = a - b
    verdict = (
        "a large part of this accuracy is a length effect (the model prefers shorter answers)" if gap > 0.2
        else "a large part of this accuracy is a length effect (the model prefers longer answers)" if gap < -0.2
        else "length explains little of it"
    )
    return (
        f"The {who} is right on {_pct(a)} of the pairs where the chosen response is the shorter one "
        f"(n={s['n']}) and on {_pct(b)} where it is the longer one (n={lo['n']}): {verdict}."
    )


def markdown(evaluation: dict[str, Any]) -> str:
    """The report text (figures referenced by relative path)."""
    t = evaluation["test"]
    w = t["win_rate"]
    ref_label = evaluation["reference"]["label"]
    conf = evaluation.get("confidence", 0.95)
    p = t["paired"]
    lines = [
        "# Evaluation: candidate vs " + ref_label,
        "",
        f"Candidate `{evaluation['candidate_fingerprint'][:12]}` on {t['n']} held-out test pairs; "
        f"intervals are {conf:.0%} percentile bootstrap over pairs.",
        "",
        "## Primary: margin win-rate",
        "",
        f"The candidate's margin (log p(chosen) - log p(rejected)) exceeds the reference's on "
        f"**{w['k']} of {w['n']} pairs = {_pct(w['rate'])}** {_ci(w)} "
        f"(exact {_ci(w, 'exact_ci_low', 'exact_ci_high')}; one-sided exact binomial p = {w['p_value']:.3g}; "
        f"{t['ties']} ties, counted as losses).",
        "",
        f"Against the trivial baselines on the same pairs: shorter-wins {_pct(t['baselines']['shorter_wins']['rate'])}, "
        f"longer-wins {_pct(t['baselines']['longer_wins']['rate'])}. Win-rate minus shorter-wins: "
        f"{_pts(p['win_rate_minus_shorter'])} (paired).",
        "",
        "## Preference accuracy, both models",
        "",
        "| | reference | candidate | change (paired) |",
        "|---|---|---|---|",
        f"| accuracy (margin > 0) | {_pct(t['reference']['accuracy']['rate'])} {_ci(t['reference']['accuracy'])} "
        f"| {_pct(t['candidate']['accuracy']['rate'])} {_ci(t['candidate']['accuracy'])} "
        f"| {_pts(p['accuracy_change'])} |",
        f"| length-normalised accuracy | {_pct(t['reference']['norm_accuracy']['rate'])} "
        f"{_ci(t['reference']['norm_accuracy'])} | {_pct(t['candidate']['norm_accuracy']['rate'])} "
        f"{_ci(t['candidate']['norm_accuracy'])} | {_pts(p['norm_accuracy_change'])} |",
        f"| mean margin (nats) | {t['reference']['mean_margin']:.3f} | {t['candidate']['mean_margin']:.3f} | |",
        f"| mean per-token margin | {t['reference']['mean_norm_margin']:.4f} | {t['candidate']['mean_norm_margin']:.4f} | |",
        f"| per-token NLL of chosen | {t['nll']['reference']:.4f} | {t['nll']['candidate']:.4f} "
        f"| {100 * t['nll']['relative_increase']:+.1f}% |",
        "",
        "### How much is length?",
        "",
        length_sentence(t, "reference"),
        "",
        length_sentence(t, "candidate"),
        "",
        "![accuracy](figures/accuracy.png)",
        "",
        "## Margins",
        "",
        "![margin histogram](figures/margins_hist.png) ![candidate vs reference margins](figures/margins_scatter.png)",
        "",
        "## Slices",
        "",
        "| slice | value | n | win-rate | interval | ref acc | cand acc | shorter-wins |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for slice_name, table in t["slices"].items():
        for value, r in table.items():
            lines.append(
                f"| {slice_name} | {value} | {r['n']} | {_pct(r['win_rate'])} | "
                f"{_ci(r, 'win_rate_ci_low', 'win_rate_ci_high')} | {_pct(r['reference_accuracy'])} | "
                f"{_pct(r['candidate_accuracy'])} | {_pct(r['shorter_wins'])} |"
            )
    lines += ["", "![win-rate per slice](figures/slices.png)", ""]
    s = evaluation.get("safety") or {}
    lines += ["## Safety pairs", ""]
    if s.get("n"):
        lines += [
            f"{s['n']} pairs. Accuracy: reference {_pct(s['reference']['accuracy']['rate'])}, candidate "
            f"{_pct(s['candidate']['accuracy']['rate'])} (regression {100 * s['accuracy_regression']:+.1f} points; "
            f"paired change {_pts(s['paired']['accuracy_change'])}). Margin win-rate {_pct(s['win_rate']['rate'])} "
            f"{_ci(s['win_rate'])}.",
            "",
        ]
    else:
        lines += ["No safety pairs were evaluated.", ""]
    if evaluation.get("judge"):
        from pipelines.judge import JudgeResult, report_markdown

        lines += [report_markdown(JudgeResult.from_dict(evaluation["judge"])), ""]
    return "\n".join(lines)


def _save(fig: Any, path: Path) -> None:
    import matplotlib.pyplot as plt

    with atomic_path(path, suffix=".png") as tmp:
        fig.savefig(tmp, format="png", dpi=110, bbox_inches="tight", metadata={"Software": None})
    plt.close(fig)


def figures(evaluation: dict[str, Any], per_pair: pl.DataFrame, out_dir: Path) -> list[Path]:
    """Draw the four figures into ``out_dir/figures``; return their paths."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import numpy as np

    fig_dir = out_dir / "figures"
    fig_dir.mkdir(parents=True, exist_ok=True)
    test = per_pair.filter(per_pair["set"] == "test")
    c, r = test["candidate_margin"].to_numpy(), test["reference_margin"].to_numpy()
    paths = []

    fig, ax = plt.subplots(figsize=(6, 3.6))
    # a broken model scores NaN or inf: the figures show the finite margins and say how many are not
    both = np.concatenate([c, r])
    both = both[np.isfinite(both)]
    lo, hi = (float(both.min()), float(both.max())) if both.size else (-1.0, 1.0)
    bins = np.linspace(lo, hi if hi > lo else lo + 1, 40)
    for values, who in ((r, "reference"), (c, "candidate")):
        ok = np.isfinite(values)
        label = who if ok.all() else f"{who} ({int((~ok).sum())} non-finite, not shown)"
        ax.hist(values[ok], bins=bins, alpha=0.55, label=label)
    ax.axvline(0, color="k", lw=0.8)
    ax.set_xlabel("margin = log p(chosen) - log p(rejected)")
    ax.set_ylabel("pairs")
    ax.legend()
    ax.set_title("Test-pair margins")
    paths.append(fig_dir / "margins_hist.png")
    _save(fig, paths[-1])

    fig, (ax, ax2) = plt.subplots(1, 2, figsize=(9.2, 4.2))
    colors = np.where(c > r, "tab:green", "tab:red")
    ax.scatter(r, c, s=8, alpha=0.6, c=colors)
    ax.plot([lo, hi], [lo, hi], color="k", lw=0.8)
    ax.set_xlabel("reference margin")
    ax.set_ylabel("candidate margin")
    ax.set_title("Above the diagonal: candidate wins")
    # the same pairs, as the change: small moves are invisible on the first panel's scale
    ax2.scatter(r, c - r, s=8, alpha=0.6, c=colors)
    ax2.axhline(0, color="k", lw=0.8)
    ax2.set_xlabel("reference margin")
    ax2.set_ylabel("candidate margin - reference margin")
    ax2.set_title("Margin change per pair")
    paths.append(fig_dir / "margins_scatter.png")
    _save(fig, paths[-1])

    rows = [(f"{s}={v}", d) for s, table in evaluation["test"]["slices"].items() for v, d in table.items()]
    fig, ax = plt.subplots(figsize=(6, 0.4 * max(len(rows), 3) + 1))
    y = np.arange(len(rows))
    rates = np.array([d["win_rate"] for _, d in rows])
    err = np.array([[d["win_rate"] - d["win_rate_ci_low"] for _, d in rows],
                    [d["win_rate_ci_high"] - d["win_rate"] for _, d in rows]])
    ax.barh(y, rates, xerr=np.clip(err, 0, None), color="tab:blue", alpha=0.8)
    ax.axvline(0.5, color="k", lw=0.8, ls="--")
    ax.set_yticks(y, [f"{name} (n={d['n']})" for name, d in rows])
    ax.set_xlim(0, 1)
    ax.set_xlabel("margin win-rate")
    ax.set_title("Win-rate per slice")
    paths.append(fig_dir / "slices.png")
    _save(fig, paths[-1])

    t = evaluation["test"]
    items = [
        ("reference acc", t["reference"]["accuracy"]),
        ("candidate acc", t["candidate"]["accuracy"]),
        ("reference norm acc", t["reference"]["norm_accuracy"]),
        ("candidate norm acc", t["candidate"]["norm_accuracy"]),
        ("shorter wins", t["baselines"]["shorter_wins"]),
        ("longer wins", t["baselines"]["longer_wins"]),
        ("win-rate", t["win_rate"]),
    ]
    fig, ax = plt.subplots(figsize=(6, 3.6))
    vals = np.array([d["rate"] for _, d in items])
    err = np.array([[d["rate"] - d["ci_low"] for _, d in items], [d["ci_high"] - d["rate"] for _, d in items]])
    ax.bar(range(len(items)), vals, yerr=np.clip(err, 0, None), color="tab:gray")
    ax.axhline(0.5, color="k", lw=0.8, ls="--")
    ax.set_xticks(range(len(items)), [k for k, _ in items], rotation=30, ha="right")
    ax.set_ylim(0, 1)
    ax.set_title("Accuracy and baselines (test pairs)")
    paths.append(fig_dir / "accuracy.png")
    _save(fig, paths[-1])
    return paths


def write_report(evaluation: dict[str, Any], per_pair: pl.DataFrame, out_dir: Path) -> Path:
    """Write the figures and ``report.md`` into ``out_dir``."""
    out_dir.mkdir(parents=True, exist_ok=True)
    figures(evaluation, per_pair, out_dir)
    return write_text_atomic(out_dir / "report.md", markdown(evaluation))
