"""SIGKILL a data stage mid-run: each output stays absent, old-complete or new-complete; reruns recover.

Set-up (module fixture ``project``): a fresh copy runs every data stage on the first
``OLD_DAYS`` days of the sample, which gives the *old* complete outputs, then gets all
fourteen days back. Each test then crashes one stage, which now sees new inputs, several
times in a row (``PLANS``):

- timing kills first (the Parquet stages), while the outputs are still the old run's:
  the stage's process group is SIGKILLed at fractions of its measured wall time (the
  reference run's), wherever that lands; the ledger notes how far each one got;
- then deterministic kills: ``PREFPIPE_FAULT`` (a test hook in pipelines/io.py) makes the
  stage SIGKILL itself at a named point of an atomic write: ``open`` (temp created),
  ``written`` (temp complete and fsynced, not renamed), ``renamed`` (new file in place).
  The outputs written before that point must be the new version, every other one exactly
  what it was before the kill.

After every kill each output must be byte-identical to the old run's or to the clean
reference run's (session fixture), or absent; no stray visible file may appear in its
folders; pairs files, in whatever mix of versions, must never put a thread in two splits.
The Parquet stages are then rerun by the CLI: exactly the reference outputs, and no
temporary of the killed runs left behind.

Then DVC: for the Parquet stages ``dvc repro --single-item`` is killed together with the
stage (the hook kills the whole process group, as Airflow stops a task); for every stage
``dvc status`` must report it as changed, a plain ``dvc repro --single-item`` (no
--wait-for-lock: a stale lock would show as an error, not a hang) must give the
reference outputs, and ``dvc status`` must then be clean, for the stage and, at the end,
for the whole data graph.

evaluate, gate and promote are crashed in test_crash_model_stages.py (they need a trained
candidate and the MLflow registry); training's kill-and-resume test is
tests/integration/test_resume.py.
"""

from __future__ import annotations

import shutil
import signal
from collections import Counter
from dataclasses import dataclass
from fnmatch import fnmatch
from pathlib import Path

import pytest

from pipelines.io import FAULT_ENV, parse_fault
from tests.project import needs_shared
from tests.reliability.helpers import (
    DATA_STAGES,
    STAGE_OUTPUTS,
    Tally,
    classify,
    cli_command,
    dvc,
    fresh_copy,
    kill_after,
    leftovers,
    output_hashes,
    read_pairs,
    run_cli,
    run_in_one_process,
    run_ok,
    strangers,
    tally,
    threads_in_two_splits,
)

pytestmark = [pytest.mark.integration, pytest.mark.timeout(900), needs_shared]

OLD_DAYS = 2
"""Days of the sample the old run sees: its outputs differ from the reference's, so a file
left over from it is recognisable as old."""

KILLED = -signal.SIGKILL
NODE = "tests/reliability/test_crash_consistency.py"


@dataclass(frozen=True)
class Plan:
    """How one stage is crashed: fault specs (in this order), timing fractions, the fault under DVC."""

    faults: tuple[str, ...]
    fractions: tuple[float, ...] = ()
    dvc_fault: str | None = None  # None: the stage is only rerun through DVC (and its status checked)

    @property
    def cli_rerun(self) -> bool:
        """Parquet stages are also rerun by the CLI: that rerun must sweep the killed runs' temporaries."""
        return bool(self.fractions)


PLANS = {
    "ingest": Plan(("written:rejects.parquet", "renamed:ingest.json"), (0.35, 0.7), "written:records.parquet:1:group"),
    "scrub": Plan(("open:records.parquet", "renamed:scrub.json"), (0.35, 0.7), "written:records.parquet:1:group"),
    "pairs": Plan(("written:test.parquet", "renamed:pairs.json"), (0.6,), "written:val.parquet:1:group"),
    # the validation stages spend their time importing and running Great Expectations and
    # write three small JSON/Markdown files at the very end: one crash inside those writes,
    # then a rerun through DVC (DVC's own kill-and-recover is the same for every stage)
    "validate": Plan(("written:report.md",)),
    "validate_pairs": Plan(("written:result.json",)),
}


@dataclass(frozen=True)
class Crashed:
    repo: Path
    old: dict[str, str | None]


@pytest.fixture(scope="module")
def project(tmp_path_factory, reference) -> Crashed:
    base = tmp_path_factory.mktemp("crash")
    repo = fresh_copy(base)
    raw = repo / "data" / "raw" / "events"
    held = base / "held"
    held.mkdir()
    later = sorted(raw.glob("*.jsonl"))[OLD_DAYS:]
    for path in later:
        shutil.move(path, held / path.name)
    run_in_one_process(repo, DATA_STAGES)
    old = output_hashes(repo)
    for path in later:
        shutil.move(held / path.name, path)
    assert old[STAGE_OUTPUTS["ingest"][0]] != reference.hashes[STAGE_OUTPUTS["ingest"][0]]
    return Crashed(repo, old)


def _bring_upstream_to_reference(repo: Path, stage: str, reference_hashes: dict[str, str | None]) -> None:
    """Run the stages before ``stage`` whose outputs are not the reference's (only when run alone)."""
    for upstream in DATA_STAGES[: DATA_STAGES.index(stage)]:
        wanted = {rel: reference_hashes[rel] for rel in STAGE_OUTPUTS[upstream]}
        if output_hashes(repo, (upstream,)) != wanted:
            run_ok(cli_command(upstream), repo)


def _crash_index(stage: str, spec: str) -> int:
    """How many of the stage's outputs (in write order) are new when the fault fires."""
    fault = parse_fault(spec)
    outputs = STAGE_OUTPUTS[stage]
    hit = next(i for i, rel in enumerate(outputs) if fnmatch(Path(rel).name, fault.pattern))
    return hit + (1 if fault.point == "renamed" else 0)


def _landing(after: dict, new: dict) -> str:
    """How far the stage got before a timing kill, told by how many outputs are now the new version."""
    done = sum(after[rel] == new[rel] for rel in after)
    return "no output new" if done == 0 else "all outputs new" if done == len(after) else "some outputs new"


def _check_versions(repo: Path, stage: str, old: dict, new: dict, row: Tally, what: str,
                    allowed: frozenset[str] = frozenset({"absent", "old", "new"})) -> Counter[str]:
    """Every output absent/old/new, nothing stray, no thread in two splits; count what is not."""
    now = output_hashes(repo, (stage,))
    states = {rel: classify(rel, digest, old, new) for rel, digest in now.items()}
    bad = {rel: s for rel, s in states.items() if s not in allowed}
    stray = strangers(repo, stage)
    row.losses += len(bad) + len(stray)
    mixed_threads = threads_in_two_splits(read_pairs(repo)) if stage == "pairs" else []
    row.leaks += len(mixed_threads)
    assert not bad, f"{what}: outputs neither {sorted(allowed)}: {bad}"
    assert not stray, f"{what}: stray files among the outputs: {stray}"
    assert not mixed_threads, f"{what}: threads in two splits: {mixed_threads[:5]}"
    return Counter(states.values())


@pytest.mark.parametrize("stage", DATA_STAGES)
def test_killed_stage_keeps_complete_outputs_and_recovers(stage, project, reference):
    repo, plan, new = project.repo, PLANS[stage], reference.hashes
    _bring_upstream_to_reference(repo, stage, new)
    outputs = STAGE_OUTPUTS[stage]

    timed = tally("SIGKILL at fractions of the stage's wall time (CLI)",
                  f"pytest '{NODE}::test_killed_stage_keeps_complete_outputs_and_recovers'", "kill times")
    for fraction in plan.fractions:  # first, while the outputs are still the old run's
        rc = kill_after(cli_command(stage), repo, fraction * reference.seconds[stage])
        timed.runs += 1
        timed.inputs += 1
        if rc is not None:  # None: the stage finished first (nothing killed, still checked)
            assert rc == KILLED
            timed.kills += 1
        _check_versions(repo, stage, project.old, new, timed, f"{stage} killed at {fraction:.0%}")
        timed.landed["finished first" if rc is None else _landing(output_hashes(repo, (stage,)), new)] += 1

    points = tally("SIGKILL at an atomic-write point (CLI)",
                   f"pytest '{NODE}::test_killed_stage_keeps_complete_outputs_and_recovers'", "fault points")
    for spec in plan.faults:
        before = output_hashes(repo, (stage,))
        proc = run_cli(repo, stage, {FAULT_ENV: spec})
        points.runs += 1
        points.inputs += 1
        assert proc.returncode == KILLED, f"{stage} {spec}: the fault point was never reached\n{proc.stderr[-3000:]}"
        points.kills += 1
        _check_versions(repo, stage, project.old, new, points, f"{stage} {spec}")
        after = output_hashes(repo, (stage,))
        done = _crash_index(stage, spec)
        wrong = [rel for i, rel in enumerate(outputs) if after[rel] != (new[rel] if i < done else before[rel])]
        points.losses += len(wrong)
        assert not wrong, f"{stage} {spec}: outputs not new before the crash point / not untouched after it: {wrong}"

    if plan.cli_rerun:
        rerun = run_cli(repo, stage)
        points.runs += 1
        assert rerun.returncode == 0, rerun.stderr[-3000:]
        lost = [rel for rel in outputs if output_hashes(repo, (stage,))[rel] != new[rel]]
        points.losses += len(lost)
        assert not lost, f"{stage}: the rerun after the crashes differs from a clean run: {lost}"
        assert leftovers(repo, stage) == [], "a rerun must remove the temporaries of killed runs"

    _kill_under_dvc_and_recover(repo, stage, plan, project.old, new)


def _kill_under_dvc_and_recover(repo: Path, stage: str, plan: Plan, old: dict, new: dict) -> None:
    row = tally("SIGKILL of DVC and the stage together (dvc repro --single-item)",
                f"pytest '{NODE}::test_killed_stage_keeps_complete_outputs_and_recovers'", "fault points")
    if plan.dvc_fault is not None:
        killed = dvc(repo, "repro", "--single-item", stage, extra_env={FAULT_ENV: plan.dvc_fault}, new_session=True)
        row.runs += 1
        row.inputs += 1
        assert killed.returncode == KILLED, f"dvc was not killed with the stage ({killed.returncode}):\n{killed.stderr}"
        row.kills += 1
        # DVC removes a stage's outputs before running it: absent or new, never old or torn
        _check_versions(repo, stage, old, new, row, f"dvc repro {stage} killed at {plan.dvc_fault}",
                        allowed=frozenset({"absent", "new"}))
    status = dvc(repo, "status", stage)
    assert status.returncode == 0, status.stderr
    assert "up to date" not in status.stdout, f"a killed stage must not look up to date:\n{status.stdout}"

    rerun = dvc(repo, "repro", "--single-item", stage)
    row.runs += 1
    assert rerun.returncode == 0, f"rerun after the kill failed (stale lock?):\n{rerun.stdout[-2000:]}\n{rerun.stderr[-2000:]}"
    lost = [rel for rel in STAGE_OUTPUTS[stage] if output_hashes(repo, (stage,))[rel] != new[rel]]
    row.losses += len(lost)
    assert not lost, f"{stage}: outputs after the DVC rerun differ from a clean run: {lost}"
    assert leftovers(repo, stage) == []
    status = dvc(repo, "status", stage)
    assert "up to date" in status.stdout, status.stdout


def test_dvc_status_is_clean_after_every_recovery(project):
    """After every stage was crashed and rerun through DVC, the whole data graph is up to date."""
    lock = project.repo / "dvc.lock"
    if not lock.exists() or any(f"  {s}:" not in lock.read_text() for s in DATA_STAGES):
        pytest.skip("needs the per-stage crash tests of this module to have run first")
    status = dvc(project.repo, "status", "validate_pairs")
    assert status.returncode == 0, status.stderr
    assert "up to date" in status.stdout, status.stdout
