"""The scrub benchmark harness runs end to end on a tiny budget and reports every ratio
with its per-round spread (the figure the issue-2 target is judged on)."""

from __future__ import annotations

import importlib.util
import json
import os
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def _bench():
    spec = importlib.util.spec_from_file_location("bench_scrub", ROOT / "benchmarks" / "bench_scrub.py")
    mod = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = mod  # its dataclasses look their module up there
    spec.loader.exec_module(mod)
    return mod


def test_rounds_are_printed_in_order():
    assert _bench()._rounds([7.94, 8.06, 12.0]) == "7.9x 8.1x 12.0x"


def test_a_tiny_run_reports_each_ratio_per_round(tmp_path, capsys, monkeypatch):
    # main() sets POLARS_MAX_THREADS and puts the repo on sys.path: both restored afterwards
    monkeypatch.setenv("POLARS_MAX_THREADS", os.environ.get("POLARS_MAX_THREADS", "2"))
    monkeypatch.setattr(sys, "path", list(sys.path))
    out = tmp_path / "scrub.json"
    rc = _bench().main(
        ["--rounds", "2", "--presidio-sample", "8", "--single-sample", "2", "--synthetic", "20",
         "--json", str(out)]
    )  # fmt: skip
    assert rc == 0
    figures = json.loads(out.read_text())
    for key in ("ratio_series_vs_presidio_analyze_per_round", "ratio_pattern_types_vs_presidio_analyze_per_round"):
        assert len(figures[key]) == 2 and all(r > 0 for r in figures[key])
    for corpus in ("chat", "events"):
        assert len(figures[corpus]["ratio_per_round"]) == 2
    # the overall ratio is a ratio of totals: it lies within its rounds' spread
    rounds = figures["ratio_series_vs_presidio_analyze_per_round"]
    assert min(rounds) <= figures["ratio_series_vs_presidio_analyze"] <= max(rounds)
    assert "per round" in capsys.readouterr().out
