"""Tenant isolation and evaluation leakage, checked on the real outputs of the bundled sample.

One clean run of the data stages (the session's reference copy) serves every check. The
checks recount from the files, independently of the pipeline's own bookkeeping:

- every event pair's source events, looked up in the raw partitions, belong to the pair's
  tenant and thread; its chosen and rejected texts and its prompt messages are texts of
  that tenant's scrubbed records;
- no (tenant, thread) appears in two of train/val/test;
- no training prompt (the whole conversation, normalised for case, punctuation and
  spacing) and no (chosen, rejected) appears in val, test or safety;
- pair ids are unique across all files, and the stages' own metrics agree.
"""

from __future__ import annotations

from pathlib import Path

import polars as pl
import pytest

from pipelines.io import read_json
from pipelines.layout import Layout
from tests.project import needs_shared
from tests.reliability.helpers import (
    eval_prompts_in_train,
    pairs_mixing_tenants,
    raw_event_owners,
    read_pairs,
    tally,
    threads_in_two_splits,
)

pytestmark = [pytest.mark.integration, needs_shared]

NODE = "tests/reliability/test_isolation.py"
OUT = Layout(Path())


@pytest.fixture(scope="module")
def real(reference) -> dict:
    frames = read_pairs(reference.repo)
    row = tally("Real outputs of the bundled sample: tenants, threads, evaluation leakage", f"pytest {NODE}",
                "pairs")
    row.runs += 1
    row.inputs += sum(f.height for f in frames.values())
    return {"repo": reference.repo, "frames": frames, "row": row,
            "records": pl.read_parquet(reference.repo / OUT.scrubbed)}


def _count(real: dict, found: list) -> list:
    real["row"].leaks += len(found)
    return found


def test_the_sample_yields_pairs_of_every_split_and_tenant(real):
    frames = real["frames"]
    assert set(frames) == {"train", "val", "test", "safety"}
    events = pl.concat([f for s, f in frames.items() if s != "safety"]).filter(pl.col("source") == "events")
    assert events["tenant_id"].n_unique() >= 4  # the sample has four tenants: the checks below see all of them


def test_no_pair_holds_another_tenants_events(real):
    owners = raw_event_owners(real["repo"] / OUT.raw_dir)
    assert not _count(real, pairs_mixing_tenants(real["frames"], owners))
    wrong_thread = []
    for frame in real["frames"].values():
        events = frame.filter(pl.col("source") == "events")
        for pid, thread, ids in zip(events["pair_id"], events["thread_id"], events["source_event_ids"].to_list(),
                                     strict=True):
            if any(owners[i][1] != thread for i in ids):
                wrong_thread.append(pid)
    assert not _count(real, wrong_thread)


def test_no_pair_holds_another_tenants_text(real):
    rec = real["records"]
    answers = pl.concat([rec.select("tenant_id", pl.col(c).alias("text")) for c in
                         ("output_text", "edited_text", "other_output_text")]).drop_nulls()
    own_answers = set(answers.iter_rows())
    own_prompts = set(rec.select("tenant_id", "prompt").iter_rows()) | set(answers.iter_rows())
    foreign = []
    for frame in real["frames"].values():
        for p in frame.filter(pl.col("source") == "events").iter_rows(named=True):
            tenant = p["tenant_id"]
            turns = [m["content"] for m in p["prompt"] if m["role"] in ("user", "assistant")]
            if (tenant, p["chosen"]) not in own_answers or (tenant, p["rejected"]) not in own_answers or any(
                (tenant, t) not in own_prompts for t in turns
            ):
                foreign.append(p["pair_id"])
    assert not _count(real, foreign)


def test_no_thread_in_two_splits(real):
    assert not _count(real, threads_in_two_splits(real["frames"]))


def test_no_evaluation_prompt_or_pair_in_train(real):
    assert not _count(real, eval_prompts_in_train(real["frames"]))


def test_pair_ids_are_unique_and_the_metrics_agree(real):
    ids = pl.concat([f.select("pair_id") for f in real["frames"].values()])["pair_id"]
    assert ids.is_unique().all()
    metrics = read_json(real["repo"] / OUT.metrics("pairs"))
    assert metrics["threads_in_two_splits"] == 0
    assert metrics["pairs"] == {s: f.height for s, f in real["frames"].items()}
    assert read_json(real["repo"] / OUT.metrics("validate_pairs"))["failed_critical"] == 0


def test_the_checks_catch_planted_violations(real):
    """The checks above can fail: a pair moved to another tenant, a val pair copied into train."""
    frames = real["frames"]
    owners = raw_event_owners(real["repo"] / OUT.raw_dir)
    train = frames["train"].filter(pl.col("source") == "events")
    other = next(t for t in frames["val"]["tenant_id"].unique() if t not in (train["tenant_id"][0], "public"))
    moved = {**frames, "train": train.head(1).with_columns(pl.lit(other).alias("tenant_id"))}
    assert len(pairs_mixing_tenants(moved, owners)) == 1
    val_pair = frames["val"].filter(pl.col("source") == "events").head(1)
    leaked = {**frames, "train": pl.concat([frames["train"], val_pair.with_columns(pl.lit("train").alias("split"))])}
    assert len(threads_in_two_splits(leaked)) == 1
    assert len(eval_prompts_in_train(leaked)) == 1
