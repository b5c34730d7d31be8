"""Shared data versions through a DVC remote of type S3: push from one clone, pull into another.

An S3 API runs on 127.0.0.1 (``moto_server`` from ``moto[server]``, fake credentials from
the environment); DVC talks to it through ``dvc-s3`` with the endpoint set by
``dvc remote modify --local``, as a machine-specific setting is. Clone A runs the data
stages (``ingest`` … ``validate_pairs``, about 30 s; the model stages would take minutes),
commits ``dvc.lock`` and ``dvc push``es; the bucket then holds every cached output of
those stages. Clone B is a ``git clone`` of A, without A's cache: before ``dvc pull``
the stages are not up to date there, after it ``dvc status`` is clean and the files are
byte-identical to A's, without having run any stage.
"""

from __future__ import annotations

import subprocess
import time
from pathlib import Path

import pytest
import yaml

from pipelines import orchestration as orch
from tests.integration.service_fixtures import MotoS3
from tests.project import SHARED, copy_project, needs_shared, project_env, run

pytestmark = [
    pytest.mark.integration,
    pytest.mark.slow,
    pytest.mark.timeout(600),
    needs_shared,
]

STAGES = ["ingest", "scrub", "validate", "pairs", "validate_pairs"]
BUCKET = "prefpipe-data"
PREFIX = "dvc"
GIT = ["git", "-c", "user.email=test@example.org", "-c", "user.name=test"]


def _cached_outs(repo: Path) -> dict[str, str]:
    """``path -> md5`` of the cached outputs of STAGES (all under data/; the metrics/ files live in git)."""
    lock = yaml.safe_load((repo / "dvc.lock").read_text())["stages"]
    return {o["path"]: o["md5"] for s in STAGES for o in lock[s]["outs"] if o["path"].startswith("data/")}


def _use_remote(repo: Path, s3: MotoS3, env: dict[str, str]) -> None:
    """What every machine does once: the endpoint is local to it (credentials come from the environment)."""
    run(["dvc", "remote", "modify", "--local", "shared", "endpointurl", s3.url], repo, env)


def test_push_from_one_clone_and_pull_into_another(tmp_path):
    with MotoS3(tmp_path / "moto") as s3:
        env = project_env(s3.env())
        s3.client().create_bucket(Bucket=BUCKET)

        a = copy_project(tmp_path / "a")
        run(["dvc", "remote", "add", "-d", "shared", f"s3://{BUCKET}/{PREFIX}"], a, env)
        _use_remote(a, s3, env)
        t0 = time.perf_counter()
        run(["dvc", "repro", *STAGES], a, env, timeout=900)
        print(f"\ndvc repro {' '.join(STAGES)}: {time.perf_counter() - t0:.0f}s")
        run([*GIT, "add", "-A"], a, env)
        run([*GIT, "commit", "-qm", "data stages"], a, env)
        t0 = time.perf_counter()
        pushed = run(["dvc", "push", *STAGES], a, env, timeout=300)
        print(f"dvc push: {time.perf_counter() - t0:.1f}s: {pushed.stdout.strip().splitlines()[-1:]}")

        outs = _cached_outs(a)
        assert {"data/pairs", "data/scrubbed", "data/validation/pairs"} <= set(outs)
        keys = _bucket_keys(s3)
        for path, md5 in outs.items():
            # DVC 3 layout: files/md5/<2 hex>/<rest>; a folder output is a .dir listing plus its files
            assert f"{PREFIX}/files/md5/{md5[:2]}/{md5[2:]}" in keys, (path, md5)
        assert len(keys) > len(outs), "the folders' files themselves were not pushed"

        (tmp_path / "b").mkdir()
        (tmp_path / "b" / "shared").symlink_to(SHARED)
        b = tmp_path / "b" / "repo"
        run(["git", "clone", "-q", str(a), str(b)], tmp_path, env)
        assert not (b / "data" / "pairs" / "train.parquet").exists()
        assert orch.dvc_status(b, STAGES) != {}, "a fresh clone without the data cannot be up to date"

        _use_remote(b, s3, env)
        t0 = time.perf_counter()
        run(["dvc", "pull", *STAGES], b, env, timeout=300)
        print(f"dvc pull: {time.perf_counter() - t0:.1f}s")
        assert orch.dvc_status(b, STAGES) == {}
        for name in ("train", "val", "test", "safety"):
            rel = Path("data/pairs") / f"{name}.parquet"
            assert (b / rel).read_bytes() == (a / rel).read_bytes(), rel
        # nothing ran in B: its lock is the one A committed
        assert (b / "dvc.lock").read_text() == (a / "dvc.lock").read_text()
        assert subprocess.run(["git", "status", "--porcelain"], cwd=b, capture_output=True, text=True).stdout == ""


def _bucket_keys(s3: MotoS3) -> set[str]:
    keys: set[str] = set()
    for page in s3.client().get_paginator("list_objects_v2").paginate(Bucket=BUCKET, Prefix=f"{PREFIX}/"):
        keys.update(o["Key"] for o in page.get("Contents", []))
    return keys
