"""The drift report opens in a real headless browser (Debian's chromium) and names what drifted.

The stage runs end to end on generator traffic: a ``none`` week is scrubbed and kept as
the reference file (as the champion's training data would be), then an ``all``-shift
week (new topic, longer prompts, new tenant) becomes the current window. Chromium loads
``report.html`` from disk with the network off, runs Evidently's scripts, and the test
reads the rendered DOM: our summary and Evidently's own drift table must both be there.
"""

from __future__ import annotations

import html
import re
import shutil
import subprocess
import tempfile
from pathlib import Path

import pytest

from pipelines import drift, ingest, scrub
from pipelines.config import load_params
from pipelines.generate import generate_to
from pipelines.layout import Layout

pytestmark = pytest.mark.integration

ROOT = Path(__file__).resolve().parents[2]
CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")


def chromium(*args: str, timeout: int = 180) -> subprocess.CompletedProcess:
    """Headless chromium with no network, no first-run work and a throwaway profile."""
    assert CHROMIUM
    with tempfile.TemporaryDirectory(prefix="chromium-profile-") as profile:
        return subprocess.run(
            [CHROMIUM, "--headless", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage",
             "--disable-background-networking", "--disable-component-update", "--disable-sync",
             "--no-first-run", "--no-default-browser-check", f"--user-data-dir={profile}",
             "--virtual-time-budget=15000", *args],
            capture_output=True, timeout=timeout, check=True,
        )


def visible_text(dom: str) -> str:
    """The text a person would read: scripts and styles dropped, tags removed, spaces folded."""
    dom = re.sub(r"<(script|style)\b.*?</\1>", " ", dom, flags=re.S | re.I)
    return re.sub(r"\s+", " ", html.unescape(re.sub(r"<[^>]+>", " ", dom)))


def _scrubbed(root: Path, shift: str, seed: int) -> Path:
    params = load_params(ROOT / "params.yaml", {"generate.shift": shift, "generate.n_interactions": 1500,
                                                "seed": seed})
    generate_to(params, root / "data" / "raw")
    ingest.run(params, Layout(root))
    scrub.run(params, Layout(root))
    return Layout(root).scrubbed


@pytest.fixture(scope="module")
def report(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("drift-stage")
    shutil.copy(_scrubbed(root, "none", seed=11), root / "champion.parquet")
    _scrubbed(root, "all", seed=12)
    params = load_params(ROOT / "params.yaml", {
        "drift.reference": "path", "drift.reference_path": "champion.parquet", "drift.current_days": 14,
        "drift.embedding_sample": 150, "drift.alert": False,
    })
    metrics = drift.run(params, Layout(root))
    assert metrics["verdict"] == "drift"
    assert {"tenant", "prompt_chars", "prompt_embedding"} <= set(metrics["drifted_features"])
    return Layout(root).drift_dir / "report.html"


@pytest.mark.skipif(CHROMIUM is None, reason="chromium is not installed (scripts/test-services.sh installs it)")
def test_report_renders_in_chromium_and_names_the_drifted_features(report, tmp_path):
    text = visible_text(chromium("--dump-dom", report.as_uri()).stdout.decode("utf-8", "replace"))
    # our summary: verdict and every drifted feature, with its method
    assert "Drift check: DRIFT" in text
    summary = text.split("Drifted features:", 1)[1][:300]
    for name in ("prompt_chars", "tenant", "prompt_embedding"):
        assert name in summary
    assert "new: hooli" in text
    # Evidently's React report ran (this text exists only after its scripts render the table)
    assert re.search(r"Drift is detected for [\d.]+% of columns \(\d+ out of 9\)", text), text[-3000:]
    table = text.split("Data Drift Summary", 1)[1]
    assert re.search(r"tenant cat Detected Jensen-Shannon distance", table)
    assert re.search(r"prompt_chars num Detected Wasserstein distance \(normed\)", table)
    assert re.search(r"rating num Not Detected", table)


@pytest.mark.skipif(CHROMIUM is None, reason="chromium is not installed (scripts/test-services.sh installs it)")
def test_report_screenshot_is_a_real_page(report, tmp_path):
    shot = tmp_path / "drift-report.png"
    chromium(f"--screenshot={shot}", "--window-size=1400,2000", report.as_uri())
    data = shot.read_bytes()
    assert data[:8] == b"\x89PNG\r\n\x1a\n" and len(data) > 50_000   # a rendered page, not a blank one
