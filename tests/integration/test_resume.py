"""A training run killed with SIGKILL resumes from its last checkpoint and ends with valid artifacts.

The real CLI (``python -m pipelines train``) runs in a subprocess; as soon as the DPO
phase has written a complete checkpoint the process is SIGKILLed (no cleanup, no
``finally``), then the same command runs again. The second run must say it resumed,
skip the finished SFT phase, log into the same MLflow run, and leave a candidate that
loads and scores.
"""

from __future__ import annotations

import json
import math
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import yaml

from pipelines import model as base_model
from pipelines.io import read_json
from pipelines.layout import Layout
from pipelines.train import RUN_ID_FILE, checkpoint_root, last_complete_checkpoint
from tests.integration.training_fixtures import tiny_params, write_pairs
from tests.project import ROOT, project_env

pytestmark = [pytest.mark.integration, pytest.mark.timeout(600)]

DPO_STEPS = 30


def train_cmd(params_file: Path, root: Path) -> list[str]:
    return [sys.executable, "-m", "pipelines", "train", "--params", str(params_file), "--root", str(root)]


def wait_for_checkpoint(proc: subprocess.Popen, root: Path, timeout: float = 300) -> Path:
    """Poll until a complete DPO checkpoint exists; fail if the run ends first."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        for work in checkpoint_root(Layout(root)).glob("*"):
            ckpt = last_complete_checkpoint(work / "dpo")
            if ckpt is not None:
                return ckpt
        if proc.poll() is not None:
            pytest.fail(f"training ended (rc={proc.returncode}) before a checkpoint could be killed")
        time.sleep(0.05)
    pytest.fail("no DPO checkpoint appeared in time")


def test_sigkilled_training_resumes_from_its_checkpoint(tmp_path):
    layout = Layout(tmp_path / "project")
    write_pairs(layout, n_train=96, n_test=8, n_safety=4)
    params = tiny_params(**{"train.dpo.max_steps": DPO_STEPS, "train.save_steps": 5, "train.logging_steps": 2,
                            "train.eval_steps": 15, "model.warmup.max_steps": 20})
    base_model.run(params, layout)
    params_file = tmp_path / "params.yaml"
    params_file.write_text(yaml.safe_dump(params.model_dump(mode="json", by_alias=True)))
    # one thread: a tiny model gains nothing from more, and loses a lot on a shared machine
    env = project_env({"MLFLOW_TRACKING_URI": f"sqlite:///{tmp_path / 'mlflow.db'}", "OMP_NUM_THREADS": "1"})

    log1 = open(tmp_path / "first.log", "wb")  # noqa: SIM115 - the child writes it until killed
    proc = subprocess.Popen(train_cmd(params_file, layout.root), cwd=ROOT, env=env, stdout=log1,
                            stderr=subprocess.STDOUT, start_new_session=True)
    try:
        killed_at = wait_for_checkpoint(proc, layout.root)
        os.kill(proc.pid, signal.SIGKILL)
        proc.wait(timeout=30)
    finally:
        if proc.poll() is None:
            os.kill(proc.pid, signal.SIGKILL)
        log1.close()
    assert proc.returncode == -signal.SIGKILL
    assert not layout.candidate.exists(), "the killed run must not have produced a candidate"
    work = killed_at.parent.parent
    run_id = (work / RUN_ID_FILE).read_text().strip()
    killed_step = int(killed_at.name.split("-")[1])
    assert killed_step < DPO_STEPS

    second = subprocess.run(train_cmd(params_file, layout.root), cwd=ROOT, env=env, capture_output=True,
                            text=True, timeout=500)
    out = second.stdout + second.stderr
    assert second.returncode == 0, out[-3000:]
    assert "SFT phase already complete" in out
    assert "resuming DPO from" in out

    metrics = read_json(layout.metrics("train"))
    assert metrics["resumed_from_step"] >= killed_step
    assert metrics["dpo_steps"] == DPO_STEPS
    assert metrics["mlflow_run_id"] == run_id
    assert not work.exists(), "checkpoints are cleaned up after success"

    manifest = json.loads((layout.candidate / "manifest.json").read_text())
    assert manifest["mlflow_run_id"] == run_id
    policy, tok = base_model.load_policy(layout.candidate)
    sums, counts = base_model.response_logprobs(
        policy, tok, [[{"role": "user", "content": "I have a problem with the invoice."}]],
        ["Thanks for reaching out about the invoice."], max_length=96, max_prompt_length=48)
    assert counts[0] > 0 and math.isfinite(sums[0])

    from mlflow import MlflowClient

    run = MlflowClient(tracking_uri=env["MLFLOW_TRACKING_URI"]).get_run(run_id)
    assert run.info.status == "FINISHED"
    steps = {m.step for m in MlflowClient(tracking_uri=env["MLFLOW_TRACKING_URI"]).get_metric_history(
        run_id, "dpo/loss")}
    assert min(steps) < killed_step < max(steps)  # one run holds the curve from before and after the kill
