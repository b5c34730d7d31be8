"""End to end: the whole `dvc repro` on the embedded default, in a copy of the project.

This is what `make run` does after set-up: every stage from raw events to a promoted
champion. Then a second `dvc repro` must change nothing, and no canary PII may be
found anywhere the pipeline wrote (data outside data/raw, metrics, the MLflow store).
"""

from __future__ import annotations

import json
import time

import pytest

from pipelines.audit import load_canaries, scan, without_public
from tests.project import KNOWN_INPUTS, SHARED, VENV_BIN, copy_project, project_env, run

pytestmark = [pytest.mark.e2e, pytest.mark.skipif(not SHARED.exists(), reason="../shared not present")]


@pytest.fixture(scope="module")
def repo(tmp_path_factory):
    dest = copy_project(tmp_path_factory.mktemp("e2e"))
    env = project_env({"MLFLOW_TRACKING_URI": ""})  # the default: a SQLite store inside the project
    env.pop("MLFLOW_TRACKING_URI")
    start = time.perf_counter()
    proc = run([str(VENV_BIN / "dvc"), "repro"], dest, env=env, timeout=1500)
    print(f"\nfull dvc repro: {time.perf_counter() - start:.0f} s")
    return dest, env, proc.stdout


def test_every_stage_ran_and_champion_exists(repo):
    dest, _env, _ = repo
    import yaml

    stages = list(yaml.safe_load((dest / "dvc.yaml").read_text())["stages"])
    lock = yaml.safe_load((dest / "dvc.lock").read_text())["stages"]
    assert set(stages) <= set(lock)
    promote = json.loads((dest / "metrics" / "promote.json").read_text())
    assert promote["promoted"] and promote["champion"], promote
    # the registry itself agrees: the alias points at the version promote reported
    from mlflow import MlflowClient

    client = MlflowClient(tracking_uri=f"sqlite:///{dest / 'mlflow' / 'mlflow.db'}")
    version = client.get_model_version_by_alias("prefpipe-policy", "champion")
    assert str(version.version) == str(promote["champion"])


def test_rerun_changes_nothing(repo):
    dest, env, _ = repo
    out = run([str(VENV_BIN / "dvc"), "repro"], dest, env=env).stdout
    assert "Running stage" not in out, out
    assert "up to date" in run([str(VENV_BIN / "dvc"), "status"], dest, env=env).stdout


def test_no_canary_anywhere_the_pipeline_wrote(repo):
    dest, _, _ = repo
    canaries, _ = without_public(load_canaries(dest / "data" / "raw" / "canaries.json"), KNOWN_INPUTS)
    roots = [p for p in (dest / "data").iterdir() if p.name != "raw"] + [dest / "metrics", dest / "mlflow"]
    hits, n_files = scan(roots, canaries)
    assert n_files > 20
    assert hits == [], [(h.path, h.entity) for h in hits]
