"""SIGKILL the drift stage at its writes: every output old or complete, the cache never torn.

The drift stage writes, in this order: the reference cache (``sample.parquet``,
``stats.json`` under ``.cache/drift/ref-KEY/``, then ``emb-KEY.npy``), the HTML report,
the scores plot, ``data/drift/drift.json`` and ``metrics/drift.json``. Unlike the data
stages its outputs are not byte-reproducible (Evidently puts fresh ids in its HTML,
drift.json records timings and cache hits), so a "new" output is recognised by being
complete (it parses, an HTML page ends with ``</html>``, the PNG decodes) and an old one
by its hash.

One project copy (the data stages' reference outputs, no MLflow store, so the reference
window is the time split) is run clean once, then crashed through ``PREFPIPE_FAULT``
(the hook in pipelines/io.py) in a row of write points, from a cold cache; after each
kill the outputs written before the point must be complete, every later one exactly
what it was, and the cache must hold nothing a reader could trip over. The last rerun
must give the clean run's verdict and scores. Then DVC: ``dvc repro -f --single-item
drift`` (as the drift DAG runs it) killed together with the stage, ``dvc status`` says
changed, the rerun recovers and the status is clean.
"""

from __future__ import annotations

import json
import shutil
import signal
from pathlib import Path

import numpy as np
import polars as pl
import pytest
from PIL import Image

from pipelines.io import FAULT_ENV
from pipelines.layout import Layout
from tests.project import needs_shared
from tests.reliability.helpers import dvc, fresh_copy, run_cli, sha256, tally

pytestmark = [pytest.mark.integration, pytest.mark.timeout(900), needs_shared]

KILLED = -signal.SIGKILL
NODE = "tests/reliability/test_crash_drift.py"
_REL = Layout(Path())
OUTPUTS = (
    (_REL.drift_dir / "report.html").as_posix(),
    (_REL.drift_dir / "scores.png").as_posix(),
    (_REL.drift_dir / "drift.json").as_posix(),
    _REL.metrics("drift").as_posix(),
)
"""The stage's outputs in write order."""
CACHE = Path(".cache") / "drift"

FAULTS = (
    ("written:emb-*.npy", 0),  # cold cache: the reference stats are stored, the embeddings not yet
    ("written:report.html", 0),
    ("renamed:scores.png", 2),  # report and plot new, both JSON files untouched
    ("written:drift.json:2", 3),  # the second drift.json is the metrics file
)
"""(fault, how many outputs are new when it fires); run in this order."""

VERDICT_KEYS = ("verdict", "drift_score", "drifted", "threshold")


def complete(repo: Path, rel: str) -> bool:
    """``rel`` is a whole output of its kind (a kill mid-write would break it)."""
    path = repo / rel
    if not path.is_file():
        return False
    if rel.endswith(".json"):
        try:
            return isinstance(json.loads(path.read_text()), dict)
        except ValueError:
            return False
    if rel.endswith(".html"):
        return path.read_text(encoding="utf-8").rstrip().endswith("</html>")
    try:
        with Image.open(path) as img:
            img.load()
        return True
    except OSError:
        return False


def cache_problems(repo: Path) -> list[str]:
    """Cache entries a later run could not read: unloadable arrays, half-written reference folders."""
    problems = []
    root = repo / CACHE
    for path in sorted(root.glob("emb-*.npy")):
        try:
            np.load(path)
        except (OSError, ValueError):
            problems.append(str(path.relative_to(repo)))
    for folder in sorted(root.glob("ref-*")):
        stats, sample = folder / "stats.json", folder / "sample.parquet"
        if stats.exists():  # stats.json is written last: with it the folder must be whole
            try:
                json.loads(stats.read_text())
                pl.read_parquet(sample)
            except (OSError, ValueError, pl.exceptions.PolarsError):
                problems.append(str(folder.relative_to(repo)))
    return problems


def stray_visible(repo: Path) -> list[str]:
    """Visible files in data/drift that are not one of the stage's outputs."""
    names = {Path(rel).name for rel in OUTPUTS if rel.startswith(_REL.drift_dir.as_posix())}
    folder = repo / _REL.drift_dir
    return sorted(p.name for p in folder.iterdir() if not p.name.startswith(".") and p.name not in names)


def hidden(repo: Path) -> list[str]:
    """Temporaries of killed writes left among the outputs or in the cache."""
    found = [p for p in (repo / _REL.drift_dir).iterdir() if p.name.startswith(".") and p.name != ".gitignore"]
    found += [p for p in (repo / _REL.metrics_dir).iterdir() if p.name.startswith(".drift.json.")]
    found += [p for p in (repo / CACHE).rglob(".*")]
    return sorted(str(p.relative_to(repo)) for p in found)


def verdict(repo: Path) -> tuple[dict, dict[str, float]]:
    """(the verdict, every feature's score) from drift.json: what neither timings nor the cache change.

    Scores are compared to 1e-9: two runs' summation orders (Evidently's Jensen-Shannon
    on categories) differ in the last bits.
    """
    d = json.loads((repo / OUTPUTS[2]).read_text())
    return {k: d[k] for k in VERDICT_KEYS}, {f["name"]: f["score"] for f in d["features"]}


def same_verdict(a: tuple[dict, dict[str, float]], b: tuple[dict, dict[str, float]]) -> bool:
    return a[0] == b[0] and a[1] == pytest.approx(b[1], rel=1e-9, abs=1e-12)


@pytest.fixture(scope="module")
def project(tmp_path_factory, reference) -> Path:
    """A copy with the reference run's scrubbed records and one clean drift run behind it."""
    repo = fresh_copy(tmp_path_factory.mktemp("crash-drift"))
    shutil.copytree(reference.repo / _REL.scrubbed.parent, repo / _REL.scrubbed.parent)
    proc = run_cli(repo, "drift")
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert all(complete(repo, rel) for rel in OUTPUTS)
    return repo


def test_killed_drift_keeps_complete_outputs_and_recovers(project):
    repo = project
    clean = verdict(repo)
    row = tally("SIGKILL at an atomic-write point (CLI)",
                f"pytest '{NODE}::test_killed_drift_keeps_complete_outputs_and_recovers'", "fault points")
    shutil.rmtree(repo / CACHE)  # the first fault is inside the cold-cache writes
    for spec, done in FAULTS:
        before = {rel: sha256(repo / rel) for rel in OUTPUTS}
        proc = run_cli(repo, "drift", {FAULT_ENV: spec})
        row.runs += 1
        row.inputs += 1
        assert proc.returncode == KILLED, f"drift {spec}: the fault point was never reached\n{proc.stderr[-3000:]}"
        row.kills += 1
        wrong = [rel for i, rel in enumerate(OUTPUTS)
                 if not (complete(repo, rel) if i < done else sha256(repo / rel) == before[rel])]
        bad_cache = cache_problems(repo)
        stray = stray_visible(repo)
        row.losses += len(wrong) + len(bad_cache) + len(stray)
        assert not wrong, f"drift {spec}: outputs not complete before the crash point / not untouched after it: {wrong}"
        assert not bad_cache, f"drift {spec}: unreadable cache entries: {bad_cache}"
        assert not stray, f"drift {spec}: stray files among the outputs: {stray}"

    rerun = run_cli(repo, "drift")
    row.runs += 1
    assert rerun.returncode == 0, rerun.stderr[-3000:]
    lost = [rel for rel in OUTPUTS if not complete(repo, rel)]
    row.losses += len(lost) + (not same_verdict(verdict(repo), clean))
    assert not lost
    assert same_verdict(verdict(repo), clean), "the rerun after the crashes must reach the clean run's verdict and scores"
    assert json.loads((repo / OUTPUTS[2]).read_text())["cache"]["reference_embeddings_hit"] is True, (
        "the embeddings stored by the killed runs are whole: the rerun must use them"
    )
    assert hidden(repo) == [], "a rerun must remove the temporaries of killed runs"


def test_drift_killed_under_dvc_recovers(project):
    repo = project
    row = tally("SIGKILL of DVC and the stage together (dvc repro --single-item)",
                f"pytest '{NODE}::test_drift_killed_under_dvc_recovers'", "fault points")
    # the CLI runs above left complete outputs and no dvc.lock entry: DVC removes them first
    killed = dvc(repo, "repro", "-f", "--single-item", "drift",
                 extra_env={FAULT_ENV: "written:scores.png:1:group"}, new_session=True)
    row.runs += 1
    row.inputs += 1
    assert killed.returncode == KILLED, f"dvc was not killed with the stage ({killed.returncode}):\n{killed.stderr}"
    row.kills += 1
    # DVC removed the outputs before running the stage: the report is new, the rest absent
    states = {rel: (repo / rel).exists() and complete(repo, rel) for rel in OUTPUTS[:3]}
    torn = [rel for rel in OUTPUTS[:3] if (repo / rel).exists() and not states[rel]]
    row.losses += len(torn)
    assert not torn, f"torn outputs after the kill under DVC: {torn}"
    status = dvc(repo, "status", "drift")
    assert status.returncode == 0, status.stderr
    assert "up to date" not in status.stdout, f"a killed stage must not look up to date:\n{status.stdout}"
    # forced, as the drift DAG runs it: a plain repro would restore the first run from DVC's
    # run cache without running the stage (and the killed write's temp would wait for the next run)
    rerun = dvc(repo, "repro", "-f", "--single-item", "drift")
    row.runs += 1
    assert rerun.returncode == 0, f"{rerun.stdout[-2000:]}\n{rerun.stderr[-2000:]}"
    assert all(complete(repo, rel) for rel in OUTPUTS)
    assert "up to date" in dvc(repo, "status", "drift").stdout
    assert hidden(repo) == []
