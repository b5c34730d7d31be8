"""The real `dvc repro` of the data stages in a temporary copy of the project."""

from __future__ import annotations

import json

import polars as pl
import pytest

from pipelines.audit import load_canaries, scan, without_public
from tests.project import KNOWN_INPUTS, VENV_BIN, copy_project, needs_shared, run

pytestmark = [pytest.mark.integration, needs_shared]

DATA_STAGES = ["ingest", "scrub", "validate", "pairs", "validate_pairs"]


@pytest.fixture(scope="module")
def repo(tmp_path_factory):
    dest = copy_project(tmp_path_factory.mktemp("dvc"))
    run([str(VENV_BIN / "dvc"), "repro", "validate_pairs"], dest)
    return dest


def test_data_stages_run_and_record_their_outputs(repo):
    lock = (repo / "dvc.lock").read_text()
    for stage in DATA_STAGES:
        assert f"  {stage}:" in lock
    metrics = json.loads(run([str(VENV_BIN / "dvc"), "metrics", "show", "--json"], repo).stdout)
    flat = json.dumps(metrics)
    for key in ("lines_in", "quarantined_by_reason", "train_pairs_per_skill", "failed_critical"):
        assert key in flat
    ingest = json.loads((repo / "metrics" / "ingest.json").read_text())
    assert ingest["lines_in"] == ingest["accepted"] + ingest["quarantined"]
    assert ingest["quarantined"] > 0  # the bundled sample carries malformed lines on purpose
    assert pl.read_parquet(repo / "data" / "pairs" / "train.parquet").height > 0


def test_second_repro_reproduces_nothing(repo):
    out = run([str(VENV_BIN / "dvc"), "repro", "validate_pairs"], repo).stdout
    for stage in DATA_STAGES:
        assert f"Stage '{stage}' didn't change" in out, out
    status = run([str(VENV_BIN / "dvc"), "status", "validate_pairs"], repo).stdout
    assert "up to date" in status


def test_no_canary_pii_outside_raw(repo):
    canaries, _ = without_public(load_canaries(repo / "data" / "raw" / "canaries.json"), KNOWN_INPUTS)
    assert len(canaries) > 50
    roots = [p for p in (repo / "data").iterdir() if p.name != "raw"] + [repo / "metrics"]
    hits, n_files = scan(roots, canaries)
    assert n_files >= 8
    assert hits == [], [(h.path, h.entity) for h in hits]
    # the audit is not blind: the raw folder does contain them
    raw_hits, _ = scan([repo / "data" / "raw" / "events"], canaries)
    assert len({h.canary_index for h in raw_hits}) > 0.9 * len(canaries)
