"""SIGKILL evaluate, gate and promote mid-write: no partial output, no double registration.

The data stages have their own battery (test_crash_consistency.py) and training its
kill-and-resume test (tests/integration/test_resume.py). Here a tiny model is trained
in-process once (module fixture), then each later stage runs through the CLI, as
``dvc repro`` runs it, with ``PREFPIPE_FAULT`` (the test hook in pipelines/io.py) making
it SIGKILL itself at a named point of an atomic write:

- evaluate, when ``eval.json`` is complete on disk but not yet renamed: the previous
  evaluation (or none) stays, whole;
- gate, the same for ``verdict.json``;
- promote, when the model card is written, i.e. after the candidate was registered
  but before its tags and the alias: the registry holds a version without ``champion``;
  the rerun must reuse that version (no second registration) and finish the promotion;
- promote again after ``metrics/promote.json`` is renamed (everything done): the rerun
  changes nothing.

- base_model, between the two renames of its folder swap (old version aside, new one
  not yet in place): the folder is absent, never partial, and the rerun repairs it.

After every kill the rerun must succeed, and no temporary file may be left among the
outputs.
"""

from __future__ import annotations

import json
import signal
from pathlib import Path

import pytest
import yaml

from pipelines import model as base_model
from pipelines import train
from pipelines.io import FAULT_ENV
from pipelines.layout import Layout
from pipelines.tracking import alias_version, client
from tests.integration.training_fixtures import tiny_params, torch_threads, write_pairs
from tests.reliability.helpers import run_cli

pytestmark = [pytest.mark.integration, pytest.mark.timeout(900)]

KILLED = -signal.SIGKILL
OUTPUT_DIRS = ("data/eval", "data/gate", "data/registry", "metrics")


@pytest.fixture(scope="module")
def trained(tmp_path_factory) -> tuple[Path, object]:
    """A project root with pairs, a base model and a trained candidate; params.yaml beside them."""
    root = tmp_path_factory.mktemp("model-stages")
    layout = Layout(root)
    params = tiny_params(**{"train.dpo.max_steps": 16})
    (root / "params.yaml").write_text(yaml.safe_dump(params.model_dump(mode="json", by_alias=True)))
    write_pairs(layout)
    with torch_threads(1):
        base_model.run(params, layout)
        train.run(params, layout)
    return root, params


def stage(root: Path, name: str, fault: str | None = None) -> int:
    """Run ``python -m pipelines NAME`` in ``root`` (optionally with a fault); its return code."""
    proc = run_cli(root, name, {FAULT_ENV: fault} if fault else None)
    if proc.returncode not in (0, KILLED):
        raise AssertionError(f"{name} -> {proc.returncode}\n{proc.stderr[-3000:]}")
    return proc.returncode


def temporaries(root: Path) -> list[str]:
    """Hidden files among the outputs: a killed write's temp file that nobody swept."""
    return [str(p.relative_to(root)) for d in OUTPUT_DIRS if (root / d).is_dir()
            for p in (root / d).rglob(".*")]


def registry(root: Path, params) -> tuple[list[str], str | None]:
    """(every registered version, the champion's version) of the test model."""
    c = client(Layout(root))
    versions = sorted(str(v.version) for v in c.search_model_versions(f"name = '{params.registry.model_name}'"))
    champ = alias_version(c, params.registry.model_name, params.registry.champion_alias)
    return versions, str(champ.version) if champ else None


def test_killed_evaluate_gate_promote_leave_whole_outputs_and_recover(trained):
    root, params = trained
    eval_json = root / "data" / "eval" / "eval.json"
    verdict = root / "data" / "gate" / "verdict.json"

    # evaluate: killed with eval.json complete but not in place -> no eval.json at all
    assert stage(root, "evaluate", "written:eval.json") == KILLED
    assert not eval_json.exists()
    assert stage(root, "evaluate") == 0
    first = eval_json.read_bytes()
    # killed again over the complete previous version: it stays, byte for byte
    assert stage(root, "evaluate", "written:eval.json") == KILLED
    assert eval_json.read_bytes() == first
    assert stage(root, "evaluate") == 0
    assert json.loads(eval_json.read_text())["test"]["n"] > 0

    # gate: the same for the verdict
    assert stage(root, "gate", "written:verdict.json") == KILLED
    assert not verdict.exists()
    assert stage(root, "gate") == 0
    passed = json.loads(verdict.read_text())["passed"]

    # promote: killed after registering, before tags and alias
    assert stage(root, "promote", "written:model_card.md") == KILLED
    assert registry(root, params) == (["1"], None)
    assert stage(root, "promote") == 0
    assert registry(root, params) == (["1"], "1" if passed else None)  # reused, not registered twice
    result = json.loads((root / "metrics" / "promote.json").read_text())
    assert result["version"] == "1" and result["registered"] is False and result["promoted"] is passed

    # promote killed once everything is done: the rerun changes nothing
    assert stage(root, "promote", "renamed:promote.json") == KILLED
    assert stage(root, "promote") == 0
    assert registry(root, params) == (["1"], "1" if passed else None)

    assert temporaries(root) == []


def test_a_base_model_killed_mid_swap_is_absent_never_partial_and_the_rerun_repairs_it(trained):
    """The one crash window of a folder output: old version renamed aside, new one not yet in place."""
    root, _ = trained
    base = root / "data" / "models" / "base"
    assert (base / "config.json").exists()
    assert stage(root, "base_model", "aside:base") == KILLED
    assert not base.exists()  # absent, not half a model; the old one waits aside
    assert stage(root, "base_model") == 0
    assert (base / "config.json").exists() and (base / "tokenizer.json").exists()
    assert [p.name for p in base.parent.iterdir() if p.name.startswith(".")] == []
