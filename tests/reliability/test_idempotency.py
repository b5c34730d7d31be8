"""Same inputs, same bytes: two project copies, a rerun in place, and a replayed partition.

- two copies: the reference (session fixture: one CLI process per stage) and a second
  fresh copy that runs the same stages inside one Python process — two folders, two entry
  points. Every output, Parquet and metrics JSON alike, must be byte-identical, not only
  equal in content: DVC hashes bytes, so a rerun that changes a byte (a timestamp in the
  Parquet footer, a dict order in the JSON) would make every downstream stage run again.
- rerun in place: running the stages again over their own outputs changes no byte.
- replay: a partition copied under another name (re-delivered later, or sorting before
  the original) adds no accepted record: the records, the scrubbed records and every pair
  file stay byte-identical, and the counts reconcile exactly: ``lines_in`` and
  ``quarantined`` grow by the partition's line count, each replayed line is quarantined
  as a duplicate when its first copy passed validation and for its original reason when
  it did not.
"""

from __future__ import annotations

import shutil
from collections import Counter
from dataclasses import dataclass
from pathlib import Path

import polars as pl
import pytest

from pipelines.io import read_json
from pipelines.layout import Layout
from pipelines.schemas import RejectReason
from tests.project import needs_shared
from tests.reliability.helpers import (
    DATA_STAGES,
    STAGE_OUTPUTS,
    fresh_copy,
    output_hashes,
    run_in_one_process,
    tally,
)

pytestmark = [pytest.mark.integration, pytest.mark.timeout(600), needs_shared]

NODE = "tests/reliability/test_idempotency.py"
REPLAYED = "2026-11-09.jsonl"
ORPHANS = {str(RejectReason.ORPHAN_OUTPUT), str(RejectReason.ORPHAN_FEEDBACK)}
"""Reasons given after validation: such a line's event id was seen, so its replay is a duplicate."""
REPLAY_STAGES = ("ingest", "scrub", "pairs")
OUT = Layout(Path())


@dataclass(frozen=True)
class Copy:
    repo: Path
    hashes: dict[str, str | None]


@pytest.fixture(scope="module")
def second(tmp_path_factory) -> Copy:
    repo = fresh_copy(tmp_path_factory.mktemp("second"))
    run_in_one_process(repo, DATA_STAGES)
    return Copy(repo, output_hashes(repo))


def _differences(a: Path, b: Path, hashes_a: dict, hashes_b: dict) -> dict[str, str]:
    """{file: 'bytes only' | 'content'} for outputs whose bytes differ (Parquet content compared too)."""
    diff = {}
    for rel in hashes_a:
        if hashes_a[rel] != hashes_b[rel]:
            same_rows = rel.endswith(".parquet") and pl.read_parquet(a / rel).equals(pl.read_parquet(b / rel))
            diff[rel] = "bytes only (same rows)" if same_rows else "content"
    return diff


def test_two_copies_give_byte_identical_outputs(reference, second):
    row = tally("Same inputs in two project copies (CLI vs one process)",
                f"pytest {NODE}::test_two_copies_give_byte_identical_outputs", "output files")
    row.runs += 2
    row.inputs += len(reference.hashes)
    diff = _differences(reference.repo, second.repo, reference.hashes, second.hashes)
    row.losses += len(diff)
    assert not diff


def test_rerun_in_place_changes_no_byte(second):
    row = tally("Rerun in place over its own outputs", f"pytest {NODE}::test_rerun_in_place_changes_no_byte",
                "output files")
    run_in_one_process(second.repo, DATA_STAGES)
    row.runs += 1
    row.inputs += len(second.hashes)
    again = output_hashes(second.repo)
    changed = [rel for rel, digest in second.hashes.items() if again[rel] != digest]
    row.losses += len(changed)
    assert not changed


def _expected_new_rejects(reference_rejects: pl.DataFrame, n_lines: int) -> Counter[str]:
    """Reasons the replayed copy adds: a duplicate for each line whose first copy passed validation."""
    first = reference_rejects.filter(pl.col("source_file") == REPLAYED)
    failed_validation = Counter(r for r in first["reason"].to_list() if r not in ORPHANS)
    duplicates = n_lines - sum(failed_validation.values())
    return failed_validation + Counter({str(RejectReason.DUPLICATE_EVENT_ID): duplicates})


@pytest.mark.parametrize("copy_name", ["2026-11-09.redelivered.jsonl", "2026-11-01.jsonl"],
                         ids=["after-the-original", "before-the-original"])
def test_a_replayed_partition_adds_no_record(copy_name, reference, tmp_path):
    row = tally("Replayed partition (same file, new name)",
                f"pytest {NODE}::test_a_replayed_partition_adds_no_record", "replayed lines")
    repo = fresh_copy(tmp_path)
    raw = repo / OUT.raw_dir
    shutil.copyfile(raw / REPLAYED, raw / copy_name)
    n_lines = len((raw / REPLAYED).read_bytes().splitlines())
    run_in_one_process(repo, REPLAY_STAGES)
    row.runs += 1
    row.inputs += n_lines

    outputs = [rel for s in REPLAY_STAGES for rel in STAGE_OUTPUTS[s]
               if rel not in (OUT.rejects.as_posix(), OUT.metrics("ingest").as_posix())]
    now = output_hashes(repo, REPLAY_STAGES)
    changed = [rel for rel in outputs if now[rel] != reference.hashes[rel]]
    before, after = read_json(reference.repo / OUT.metrics("ingest")), read_json(repo / OUT.metrics("ingest"))
    row.leaks += after["accepted"] - before["accepted"]
    row.losses += len(changed)
    assert not changed, f"replaying {REPLAYED} as {copy_name} changed {changed}"
    assert after["accepted"] == before["accepted"]
    assert after["records_out"] == before["records_out"]
    assert after["lines_in"] == before["lines_in"] + n_lines
    assert after["quarantined"] == before["quarantined"] + n_lines
    assert after["lines_in"] == after["accepted"] + after["quarantined"]
    added = Counter(after["quarantined_by_reason"]) - Counter(before["quarantined_by_reason"])
    reference_rejects = pl.read_parquet(reference.repo / OUT.rejects)
    assert added == _expected_new_rejects(reference_rejects, n_lines)
    assert pl.read_parquet(repo / OUT.rejects).height == after["quarantined"]
