"""Shared pieces of the reliability battery: project copies, stage runs, output checks, the ledger.

Why a ledger: RELIABILITY.md reports how many runs, kills and inputs each fault class
was tried with, and how many losses and leaks were seen. The tests count those as they
go (a check that fails still counts its loss before the assertion stops the test), and
conftest.py prints the table at the end of the run.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import shutil
import signal
import subprocess
import sys
import time
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

import orjson
import polars as pl

from pipelines.layout import Layout
from tests.project import VENV_BIN, copy_project, project_env

DATA_STAGES = ("ingest", "scrub", "validate", "pairs", "validate_pairs")
"""The data stages of dvc.yaml, in pipeline order."""

SPLITS = ("train", "val", "test")
EVAL_SPLITS = ("val", "test", "safety")

_REL = Layout(Path())
_VAL = _REL.validation_dir
STAGE_OUTPUTS: dict[str, tuple[str, ...]] = {
    stage: tuple(p.as_posix() for p in paths)
    for stage, paths in {
        "ingest": (_REL.records, _REL.rejects, _REL.metrics("ingest")),
        "scrub": (_REL.scrubbed, _REL.metrics("scrub")),
        "validate": (_VAL / "events" / "result.json", _VAL / "events" / "report.md", _REL.metrics("validate")),
        "pairs": (*(_REL.pairs_split(s) for s in SPLITS), _REL.safety_pairs, _REL.metrics("pairs")),
        "validate_pairs": (_VAL / "pairs" / "result.json", _VAL / "pairs" / "report.md",
                           _REL.metrics("validate_pairs")),
    }.items()
}
"""Every file each stage writes, relative to the project root (Layout is the source)."""

GENERATED = ("dvc.lock", "metrics", "data/raw/staged", "data/quarantine", "data/scrubbed", "data/validation",
             "data/pairs", "data/models", "data/eval", "data/gate", "data/registry", "data/drift")
"""What a run produces: removed from a fresh copy, so no test starts from the checkout's leftovers."""

ONE_PROCESS = """
import sys
from pipelines.config import load_params
from pipelines.layout import Layout
from pipelines.stages import run_stage
params = load_params()
for stage in sys.argv[1:]:
    run_stage(stage, params, Layout())
"""
"""Runs several stages in one interpreter: a second entry point (no CLI), and cheaper."""


# ----------------------------------------------------------------------------- projects and runs


def fresh_copy(parent: Path) -> Path:
    """A git-initialised copy of the project with nothing generated in it (raw events only)."""
    repo = copy_project(parent)
    present = [rel for rel in GENERATED if (repo / rel).exists()]
    for rel in present:
        path = repo / rel
        shutil.rmtree(path) if path.is_dir() else path.unlink()
    if present:  # DVC refuses outputs that git tracks
        git = ["git", "-c", "user.email=test@example.org", "-c", "user.name=test"]
        subprocess.run([*git, "rm", "-r", "-q", "--cached", "--ignore-unmatch", *present], cwd=repo, check=True)
        subprocess.run([*git, "commit", "-qm", "no generated files"], cwd=repo, check=True)
    return repo


def cli_command(stage: str) -> list[str]:
    """``python -m pipelines STAGE`` exactly as dvc.yaml runs it."""
    return [sys.executable, "-m", "pipelines", stage.replace("_", "-")]


def run_cli(repo: Path, stage: str, extra_env: dict[str, str] | None = None,
            timeout: float = 300) -> subprocess.CompletedProcess:
    """Run one stage through the CLI; the caller checks the return code."""
    return subprocess.run(cli_command(stage), cwd=repo, env=project_env(extra_env), capture_output=True,
                          text=True, timeout=timeout)


def run_ok(cmd: list[str], repo: Path, extra_env: dict[str, str] | None = None,
           timeout: float = 300) -> subprocess.CompletedProcess:
    """Run a command that must succeed; fail with its output otherwise."""
    proc = subprocess.run(cmd, cwd=repo, env=project_env(extra_env), capture_output=True, text=True,
                          timeout=timeout)
    assert proc.returncode == 0, f"{' '.join(cmd)} -> {proc.returncode}\n{proc.stdout[-3000:]}\n{proc.stderr[-3000:]}"
    return proc


def run_in_one_process(repo: Path, stages: tuple[str, ...] | list[str]) -> None:
    """Run ``stages`` in order inside one Python process (imports paid once)."""
    run_ok([sys.executable, "-c", ONE_PROCESS, *stages], repo)


def dvc(repo: Path, *args: str, extra_env: dict[str, str] | None = None,
        new_session: bool = False, timeout: float = 300) -> subprocess.CompletedProcess:
    """Run ``dvc ARGS`` (no --wait-for-lock: a stale lock must show up as an error, not a hang)."""
    return subprocess.run([str(VENV_BIN / "dvc"), *args], cwd=repo, env=project_env(extra_env),
                          capture_output=True, text=True, timeout=timeout, start_new_session=new_session)


def kill_after(cmd: list[str], repo: Path, delay_s: float, timeout: float = 300) -> int | None:
    """Start ``cmd`` in its own process group, SIGKILL the group after ``delay_s``.

    Returns the exit code, or None when the command had already finished (no kill).
    """
    proc = subprocess.Popen(cmd, cwd=repo, env=project_env(), stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL, start_new_session=True)
    deadline = time.monotonic() + delay_s
    while time.monotonic() < deadline and proc.poll() is None:
        time.sleep(0.01)
    if proc.poll() is not None:
        return None
    os.killpg(proc.pid, signal.SIGKILL)
    return proc.wait(timeout=timeout)


# ----------------------------------------------------------------------------- output checks


def sha256(path: Path) -> str | None:
    """Content hash of a file, None when it does not exist."""
    return hashlib.sha256(path.read_bytes()).hexdigest() if path.is_file() else None


def output_hashes(repo: Path, stages: tuple[str, ...] = DATA_STAGES) -> dict[str, str | None]:
    """{relative path: sha256 or None} for every output of ``stages``."""
    return {rel: sha256(repo / rel) for stage in stages for rel in STAGE_OUTPUTS[stage]}


def output_folders(stage: str) -> dict[str, set[str]]:
    """{folder: names the stage may leave there}; metrics/ is shared, so only its own file counts."""
    folders: dict[str, set[str]] = {}
    for rel in STAGE_OUTPUTS[stage]:
        folders.setdefault(str(Path(rel).parent), set()).add(Path(rel).name)
    return folders


def leftovers(repo: Path, stage: str) -> list[str]:
    """Hidden temporaries (files or folders starting with '.') in the stage's output folders."""
    found = []
    for folder, names in output_folders(stage).items():
        path = repo / folder
        if not path.is_dir():
            continue
        shared = folder == str(_REL.metrics_dir)
        for entry in path.iterdir():
            if entry.name.startswith(".") and (not shared or any(entry.name.startswith(f".{n}.") for n in names)):
                found.append(f"{folder}/{entry.name}")
    return sorted(found)


def strangers(repo: Path, stage: str) -> list[str]:
    """Visible files in the stage's own output folders that are not one of its outputs."""
    found = []
    for folder, names in output_folders(stage).items():
        path = repo / folder
        if folder == str(_REL.metrics_dir) or not path.is_dir():
            continue
        found += [f"{folder}/{e.name}" for e in path.iterdir() if not e.name.startswith(".") and e.name not in names]
    return sorted(found)


def classify(rel: str, digest: str | None, old: dict[str, str | None], new: dict[str, str | None]) -> str:
    """'absent', 'old', 'new', or 'torn' (complete versions are known by their hash)."""
    if digest is None:
        return "absent"
    if digest == new[rel]:
        return "new"
    if digest == old.get(rel):
        return "old"
    return "torn"


# ----------------------------------------------------------------------------- isolation checks

_NON_WORD = re.compile(r"[^\w<>]+")


def conversation_key(messages: list[dict[str, str]] | None) -> str:
    """A prompt conversation, normalised (case, punctuation, spacing): two keys equal = same prompt."""
    text = " \x1f ".join(m["content"] or "" for m in messages or [])
    return _NON_WORD.sub(" ", text.lower()).strip()


def read_pairs(repo: Path) -> dict[str, pl.DataFrame]:
    """The pair files present under ``repo`` (a crash may have left some absent)."""
    files = {s: _REL.pairs_split(s) for s in SPLITS} | {"safety": _REL.safety_pairs}
    return {s: pl.read_parquet(repo / rel) for s, rel in files.items() if (repo / rel).is_file()}


def threads_in_two_splits(frames: dict[str, pl.DataFrame]) -> list[tuple[str, str]]:
    """(tenant, thread) keys that appear in more than one of train/val/test."""
    seen: dict[tuple[str, str], set[str]] = {}
    for split in SPLITS:
        if split in frames:
            for key in frames[split].select("tenant_id", "thread_id").unique().iter_rows():
                seen.setdefault(key, set()).add(split)
    return sorted(k for k, v in seen.items() if len(v) > 1)


def eval_prompts_in_train(frames: dict[str, pl.DataFrame]) -> list[str]:
    """Training prompts (whole conversations) or (chosen, rejected) that also occur in an evaluation set."""
    if "train" not in frames:
        return []
    held_prompts: set[str] = set()
    held_content: set[tuple[str, str]] = set()
    for split in EVAL_SPLITS:
        if split in frames:
            held_prompts.update(conversation_key(m) for m in frames[split]["prompt"].to_list())
            held_content.update(zip(frames[split]["chosen"], frames[split]["rejected"], strict=True))
    train = frames["train"]
    return [pid for pid, m, c, r in zip(train["pair_id"], train["prompt"].to_list(), train["chosen"],
                                        train["rejected"], strict=True)
            if conversation_key(m) in held_prompts or (c, r) in held_content]


def raw_event_owners(raw_dir: Path) -> dict[str, tuple[str, str]]:
    """{event_id: (tenant, thread)} from every decodable raw line (first occurrence wins, as in ingest)."""
    owners: dict[str, tuple[str, str]] = {}
    for path in sorted(raw_dir.glob("*.jsonl")):
        for line in path.read_bytes().splitlines():
            try:
                obj = orjson.loads(line)
            except orjson.JSONDecodeError:
                continue
            if isinstance(obj, dict) and isinstance(obj.get("event_id"), str):
                owners.setdefault(obj["event_id"], (obj.get("tenant_id"), obj.get("thread_id")))
    return owners


def pairs_mixing_tenants(frames: dict[str, pl.DataFrame], owners: dict[str, tuple[str, str]]) -> list[str]:
    """Event pairs with a source event that belongs to another tenant (or is unknown)."""
    bad = []
    for frame in frames.values():
        events = frame.filter(pl.col("source") == "events")
        rows = zip(events["pair_id"], events["tenant_id"], events["source_event_ids"].to_list(), strict=True)
        for pid, tenant, ids in rows:
            if not ids or any(owners.get(i, (None, None))[0] != tenant for i in ids):
                bad.append(pid)
    return bad


# ----------------------------------------------------------------------------- the ledger


@dataclass
class Tally:
    """What one fault or input class was tried with, and what went wrong."""

    command: str
    unit: str = "inputs"
    inputs: int = 0
    runs: int = 0
    kills: int = 0
    losses: int = 0
    leaks: int = 0
    landed: Counter[str] = field(default_factory=Counter)  # where timing kills fell


LEDGER: dict[str, Tally] = {}


def tally(row: str, command: str, unit: str = "inputs") -> Tally:
    """The ledger row ``row`` (created on first use)."""
    return LEDGER.setdefault(row, Tally(command, unit))


def ledger_markdown() -> str:
    """The ledger as the Markdown table RELIABILITY.md carries."""
    lines = ["| fault / input class | inputs tried | runs | kills | losses | leaks | reproduce |",
             "|---|---|---|---|---|---|---|"]
    for row, t in LEDGER.items():
        lines.append(f"| {row} | {t.inputs} {t.unit} | {t.runs} | {t.kills} | {t.losses} | {t.leaks} | "
                     f"`{t.command}` |")
    lines += [f"{row}: kills landed {dict(t.landed)}" for row, t in LEDGER.items() if t.landed]
    return "\n".join(lines)


def ledger_rows() -> dict[str, dict]:
    """The ledger as plain data: what a pytest-xdist worker sends back to the controller."""
    return {row: {**vars(t), "landed": dict(t.landed)} for row, t in LEDGER.items()}


def merge_ledger(rows: dict[str, dict]) -> None:
    """Add a worker's :func:`ledger_rows` into this process's ledger (row by row, count by count)."""
    for row, data in rows.items():
        t = tally(row, data["command"], data["unit"])
        for key in ("inputs", "runs", "kills", "losses", "leaks"):
            setattr(t, key, getattr(t, key) + data[key])
        t.landed.update(data["landed"])


def dump_ledger(path: Path) -> None:
    """Write the ledger as JSON (for whoever updates RELIABILITY.md)."""
    path.write_text(json.dumps(ledger_rows(), indent=2) + "\n")
