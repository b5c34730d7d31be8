"""Drift's default reference through a real MLflow registry (a SQLite store in tmp_path).

Promotion's tags (``promote._version_tags``, which records the training window) go on a
registered version that holds the ``champion`` alias; weeks later the drift stage must
compare exactly that champion's scrubbed records with the newest week, and say so in
drift.json, metrics and the report's header. Without the alias it falls back to the
time split and says that. A hashed bag-of-words stands in for the embedding model
(the real one runs in test_drift_detection.py): the component under test is MLflow.
"""

from __future__ import annotations

import json

import polars as pl
import pytest

from pipelines import drift, promote, reference
from pipelines.config import Params
from pipelines.drift_features import KEY_COLUMNS, frame_fingerprint
from pipelines.layout import Layout
from pipelines.tracking import file_md5
from tests.unit.test_drift import TOPIC, BagOfWords, make_records

pytestmark = pytest.mark.integration

NAME = "prefpipe-policy"


@pytest.fixture(scope="module")
def store(tmp_path_factory):
    """A registry and a project whose v2 was trained on two weeks of events; two more weeks arrived since.

    Module-scoped (creating the SQLite store is the slow part); each test sets its alias.
    """
    from mlflow import MlflowClient

    tmp = tmp_path_factory.mktemp("drift-registry")
    uri = f"sqlite:///{tmp / 'registry' / 'mlflow.db'}"
    (tmp / "registry").mkdir()
    layout = Layout(tmp / "project")
    trained = make_records(900, 1, start="2026-11-02", days=14)
    layout.scrubbed.parent.mkdir(parents=True)
    trained.write_parquet(layout.scrubbed)
    layout.pairs_dir.mkdir(parents=True)
    pl.DataFrame({"pair_id": ["p1"]}).write_parquet(layout.pairs_split("train"))
    manifest = {"base": {"source": "builtin"}, "data": {"train_pairs_md5": file_md5(layout.pairs_split("train"))}}
    tags = promote._version_tags({}, {"passed": True}, manifest, "tester", "now", layout.root)

    client = MlflowClient(tracking_uri=uri, registry_uri=uri)
    client.create_registered_model(NAME)
    client.create_model_version(NAME, source=(tmp / "model").as_uri(), tags={"gate": "failed"})   # v1
    client.create_model_version(NAME, source=(tmp / "model").as_uri(), tags=tags)               # v2
    # two more weeks: the newest one talks about something else
    later = pl.concat([make_records(900, 2, start="2026-11-16", days=7),
                       make_records(900, 3, start="2026-11-23", days=7, words=TOPIC)])
    pl.concat([later, trained]).write_parquet(layout.scrubbed)
    return uri, layout, client, trained, later


@pytest.fixture
def project(store, tmp_path, monkeypatch):
    """The store with no champion yet, the stand-in encoder, and a cache of this test's own."""
    uri, layout, client, trained, later = store
    monkeypatch.setenv("MLFLOW_TRACKING_URI", uri)
    monkeypatch.setattr(drift, "MiniLMEncoder", lambda *a, **k: BagOfWords())
    client.delete_registered_model_alias(NAME, "champion")
    params = Params(drift={"sample_size": 5000, "embedding_sample": 150, "permutations": 100, "alert": False,
                           "cache_dir": str(tmp_path / "cache")})
    return layout, params, client, trained, later


def test_drift_compares_the_champions_training_data_with_the_newest_week(project):
    layout, params, client, trained, later = project
    client.set_registered_model_alias(NAME, "champion", "2")
    metrics = drift.run(params, layout)
    full = json.loads((layout.drift_dir / "drift.json").read_text())
    ref = full["windows"]["reference"]
    assert full["reference_source"] == metrics["reference_source"] == ref["source"] == "champion v2"
    assert ref["rows"] == metrics["reference_rows"] == trained.height
    assert ref["champion"]["fingerprint_match"] and ref["note"].startswith("exactly its 900 training records")
    assert (ref["first_ts"], ref["last_ts"]) == (str(trained["ts"].min()), str(trained["ts"].max()))
    assert ref["champion"]["recorded_last_ts"] == trained["ts"].max().isoformat()
    # the current window: the last 7 days, none of which the champion saw
    newest = later.filter(pl.col("ts") >= pl.datetime(2026, 11, 23, time_zone="UTC"))
    assert metrics["current_rows"] == full["windows"]["current"]["rows"] == newest.height
    assert "prompt_embedding" in metrics["drifted_features"]
    page = (layout.drift_dir / "report.html").read_text()
    assert "<b>Reference: champion v2</b> (exactly its 900 training records" in page
    assert "champion v2&#x27;s training data: 2026-11-02" in page


def test_the_same_champion_reuses_the_cached_reference(project):
    layout, params, client, trained, _ = project
    client.set_registered_model_alias(NAME, "champion", "2")
    drift.run(params, layout)
    again = json.loads((layout.drift_dir / "drift.json").read_text())
    assert again["cache"]["reference_stats_hit"] is False
    drift.run(params, layout)
    again = json.loads((layout.drift_dir / "drift.json").read_text())
    assert again["cache"]["reference_stats_hit"] and again["cache"]["reference_embeddings_hit"]
    assert again["cache"]["reference_key"].startswith(frame_fingerprint(trained, KEY_COLUMNS)[:24])


def test_no_champion_falls_back_to_the_time_split_and_says_so(project, caplog):
    layout, params, _, trained, later = project
    caplog.set_level("INFO")
    metrics = drift.run(params, layout)          # registered versions, but no alias yet
    full = json.loads((layout.drift_dir / "drift.json").read_text())
    assert full["reference_source"] == metrics["reference_source"] == "time split (no champion yet)"
    assert "has no 'champion' alias" in full["windows"]["reference"]["note"]
    assert metrics["reference_rows"] == trained.height + later.height - metrics["current_rows"]
    assert "drift: reference = time split (no champion yet)" in caplog.text
    assert "<b>Reference: time split (no champion yet)</b>" in (layout.drift_dir / "report.html").read_text()


def test_a_champion_without_training_tags_falls_back(project):
    layout, params, client, *_ = project
    client.set_registered_model_alias(NAME, "champion", "1")
    assert drift.run(params, layout)["reference_source"] == "time split (champion v1 has no training-window tags)"
    assert reference.lookup_champion(params, layout).champion.version == "1"
