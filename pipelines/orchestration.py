"""What the Airflow DAGs do, as plain functions (no ``airflow`` import here).

An Airflow run never writes into the project checkout. Its first task makes a
*workspace* for the run, ``<runs_dir>/<run_id>``: a copy of the project as it is on
disk (a ``git clone --shared`` of HEAD with the working tree's changes laid over it),
the project's DVC cache shared through ``.dvc/config.local``, the trigger form's
overrides written into the workspace's ``params.yaml``, and ``../shared`` (and any other
``../X`` the project refers to) linked beside it. Each stage task then runs
``dvc repro --single-item STAGE`` in that workspace, so:

- the data a run writes is versioned exactly as ``dvc repro`` versions it: after a
  successful run, ``dvc status`` in the workspace is clean and its ``dvc.lock`` records
  every output (the bytes live in the shared cache);
- two runs never touch each other's files, and an unchanged stage is restored from
  DVC's run-cache instead of recomputed;
- the stage code that runs is the workspace's own copy (``python -m pipelines`` from the
  workspace), i.e. the project as it was when the run started.

The form's fields, their JSON-schema (which Airflow renders as the trigger form) and the
``params.yaml`` keys they override are declared once, in :data:`TRAINING_FORM`.

Run by hand (what the DAG does, minus Airflow)::

    from pathlib import Path
    from pipelines import orchestration as o
    ws = o.prepare_workspace(Path("."), Path("/tmp/runs"), "try-1", {"train.dpo.beta": 0.2})
    for stage in o.stage_names(ws / "dvc.yaml"):
        print(stage, o.run_dvc_stage(ws, stage))
"""

from __future__ import annotations

import json
import logging
import os
import posixpath
import re
import shutil
import subprocess
import sys
import time
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from datetime import timedelta
from pathlib import Path
from typing import Any

log = logging.getLogger(__name__)

TRAINING_DAG_ID = "prefpipe_training"
DRIFT_DAG_ID = "prefpipe_drift"
RETRAIN_ASSET_NAME = "prefpipe_retrain_requested"
RETRAIN_ASSET_URI = "x-prefpipe://drift/retrain-requested"
"""The drift DAG emits an event on this asset when drift exceeds the threshold; the
training DAG is scheduled on it (as well as on its weekly cron)."""

OWN_DAG_STAGES: dict[str, str] = {"drift": DRIFT_DAG_ID}
"""dvc.yaml stages that Airflow runs in a DAG of their own, not in the training DAG
(``dvc repro`` runs them with the rest)."""

RUN_INFO_FILE = ".prefpipe-run.json"
"""Written into each workspace: which project, run and overrides it was made from."""

PROJECT_ENV = "PREFPIPE_PROJECT_DIR"
RUNS_ENV = "PREFPIPE_RUNS_DIR"
RETRIES_ENV = "PREFPIPE_TASK_RETRIES"
RETRY_DELAY_ENV = "PREFPIPE_RETRY_DELAY_S"

LENIENT_TEXT: dict[str, Any] = {"encoding": "utf-8", "errors": "replace"}
"""How a child's output is read: a stage's tools may print any byte, and one stray byte
must not replace the stage's real result with a UnicodeDecodeError."""

DRIFT_DAG_OVERRIDES: dict[str, Any] = {"drift.alert": False}
"""Under Airflow the drift DAG sends the drift alert itself (with the retraining decision
and links to the run), so the stage's own alert is turned off there."""


class WorkspaceError(RuntimeError):
    """The run's workspace could not be made or used (a setup problem, not a stage failure)."""


class InvalidOverrides(ValueError):
    """The trigger form or its ``overrides`` do not validate against ``params.yaml``.

    Not transient: retrying the same run cannot help, so the DAG fails it at once.
    """


class StageFailed(RuntimeError):
    """``dvc repro`` of one stage exited non-zero; the message carries the last error line."""

    def __init__(self, stage: str, returncode: int, detail: str) -> None:
        self.stage, self.returncode, self.detail = stage, returncode, detail
        super().__init__(f"stage {stage!r} failed (exit {returncode}): {detail}")


# ---------------------------------------------------------------------------- the form


@dataclass(frozen=True)
class FormField:
    """One field of the trigger form and the ``params.yaml`` key it overrides.

    ``schema`` is JSON schema (Airflow validates the run's conf with it and renders the
    form from it). A field left empty (``None``) keeps the value in ``params.yaml``.
    """

    name: str
    key: str | None
    title: str
    description: str
    schema: dict[str, Any] = field(default_factory=dict)
    default: Any = None

    def param_kwargs(self) -> dict[str, Any]:
        """Keyword arguments for ``airflow.sdk.Param`` (kept here so the form lives in one place)."""
        return {"default": self.default, "title": self.title, "description": self.description, **self.schema}


TRAINING_FORM: tuple[FormField, ...] = (
    FormField(
        "base_model", "model.source", "Base model",
        "`builtin` (the small model built from the corpus), a Hugging Face id, or a local "
        "folder. Empty: params.yaml's `model.source`.",
        {"type": ["null", "string"], "minLength": 1, "examples": ["builtin", "HuggingFaceTB/SmolLM2-135M-Instruct"]},
    ),
    FormField(
        "beta", "train.dpo.beta", "DPO beta",
        "Strength of the pull towards the reference model (`train.dpo.beta`). Empty: params.yaml.",
        {"type": ["null", "number"], "exclusiveMinimum": 0, "maximum": 10},
    ),
    FormField(
        "learning_rate", "train.dpo.learning_rate", "DPO learning rate",
        "`train.dpo.learning_rate`. Empty: params.yaml.",
        {"type": ["null", "number"], "exclusiveMinimum": 0, "maximum": 1},
    ),
    FormField(
        "max_steps", "train.dpo.max_steps", "DPO max steps",
        "Optimizer steps of the DPO phase (`train.dpo.max_steps`; 0 = use `num_epochs`). Empty: params.yaml.",
        {"type": ["null", "integer"], "minimum": 0, "maximum": 1_000_000},
    ),
    FormField(
        "loss_type", "train.dpo.loss_type", "DPO loss",
        "TRL DPO loss (`train.dpo.loss_type`). Empty: params.yaml.",
        {"type": ["null", "string"], "enum": [None, "sigmoid", "ipo", "hinge", "robust", "bco_pair"]},
    ),
    FormField(
        "lora_r", "train.lora.r", "LoRA rank",
        "Rank of the LoRA adapter (`train.lora.r`). Empty: params.yaml.",
        {"type": ["null", "integer"], "minimum": 1, "maximum": 1024},
    ),
    FormField(
        "seed", "seed", "Seed",
        "One seed for every random choice (`seed`). Empty: params.yaml.",
        # config.MAX_SEED, not imported: this module stays free of pydantic for DAG parsing
        {"type": ["null", "integer"], "minimum": 0, "maximum": 2**32 - 1},
    ),
    FormField(
        "dry_run", None, "Dry run",
        "Tiny model, a few steps, a small evaluation, and a separate registry model "
        "(`<model_name>-dry-run`) so the real champion is never touched. Checks the "
        "wiring in minutes.",
        {"type": "boolean"},
        default=False,
    ),
    FormField(
        "overrides", None, "Other overrides",
        'Any params.yaml field by its dotted key, e.g. {"pairs.min_edit_ratio": 0.3, '
        '"gate.min_win_rate": 0.6}. Applied last; validated like params.yaml.',
        {"type": ["null", "object"]},  # the UI sends null for a cleared JSON field
        default={},
    ),
)

DRIFT_FORM: tuple[FormField, ...] = (
    FormField(
        "threshold", "drift.threshold", "Drift threshold",
        "Share of drifted features above which the week counts as drifted (`drift.threshold`). "
        "Empty: params.yaml.",
        {"type": ["null", "number"], "exclusiveMinimum": 0, "maximum": 1},
    ),
    FormField(
        "request_retraining", None, "Retrain on drift",
        "When drift exceeds the threshold, emit the asset event that starts the training DAG.",
        {"type": "boolean"},
        default=True,
    ),
    FormField(
        "overrides", None, "Other overrides",
        'Any params.yaml field by its dotted key, e.g. {"drift.current_days": 14}.',
        {"type": ["null", "object"]},  # the UI sends null for a cleared JSON field
        default={},
    ),
)

DRY_RUN_OVERRIDES: dict[str, Any] = {
    "model.builtin.vocab_size": 600,
    "model.builtin.hidden_size": 64,
    "model.builtin.num_layers": 1,
    "model.builtin.num_heads": 4,
    "model.builtin.intermediate_size": 128,
    "model.builtin.max_position_embeddings": 256,
    "model.warmup.max_steps": 10,
    "model.warmup.max_texts": 2000,
    "model.warmup.max_length": 96,
    "train.max_length": 96,
    "train.max_prompt_length": 48,
    "train.lora.r": 4,
    "train.lora.alpha": 8,
    "train.sft.max_steps": 2,
    "train.dpo.max_steps": 4,
    "train.eval_steps": 4,
    "train.save_steps": 4,
    "train.logging_steps": 2,
    "evaluate.max_pairs": 40,
    "evaluate.bootstrap_samples": 200,
}
"""What ``dry_run`` means in params.yaml terms (the registry names are added by
:func:`form_overrides`, from the project's own names). The data stages keep their
params, so a dry run restores them from the run-cache of an earlier full run."""

DRY_RUN_SUFFIX = "-dry-run"


def form_overrides(
    form: Mapping[str, Any],
    registry: Mapping[str, Any] | None = None,
    fields: Iterable[FormField] = TRAINING_FORM,
) -> dict[str, Any]:
    """Turn a trigger form's values into dotted ``params.yaml`` overrides.

    Precedence, lowest first: the dry-run preset (when the form has ``dry_run``), the
    named fields, the free-form ``overrides`` object. ``registry`` is params.yaml's
    ``registry`` section, used to name the dry-run model and experiment after the real
    ones.

    Raises:
        InvalidOverrides: ``overrides`` is not an object of dotted string keys.
    """
    out: dict[str, Any] = {}
    if form.get("dry_run"):
        out.update(DRY_RUN_OVERRIDES)
        reg = registry or {}
        out["registry.model_name"] = f"{reg.get('model_name', 'prefpipe-policy')}{DRY_RUN_SUFFIX}"
        out["registry.experiment"] = f"{reg.get('experiment', 'prefpipe')}{DRY_RUN_SUFFIX}"
    for f in fields:
        if f.key is not None and form.get(f.name) is not None:
            out[f.key] = form[f.name]
    extra = form.get("overrides") or {}
    if not isinstance(extra, Mapping):
        raise InvalidOverrides(f"overrides must be an object of dotted keys, got {type(extra).__name__}")
    for key, value in extra.items():
        if not isinstance(key, str) or not re.fullmatch(r"[A-Za-z_]\w*(\.[A-Za-z_]\w*)*", key):
            raise InvalidOverrides(f"override key {key!r} is not a dotted params.yaml key like 'train.dpo.beta'")
        out[key] = value
    return out


# ---------------------------------------------------------------------------- settings


def default_project_dir(dags_file: str | Path) -> Path:
    """The project a DAG file belongs to: ``$PREFPIPE_PROJECT_DIR``, else the folder above ``dags/``."""
    env = os.environ.get(PROJECT_ENV, "").strip()
    return Path(env).expanduser().resolve() if env else Path(dags_file).resolve().parent.parent


def default_runs_dir() -> Path:
    """Where run workspaces go: ``$PREFPIPE_RUNS_DIR``, else ``$AIRFLOW_HOME/prefpipe-runs``.

    Outside the project on purpose: a workspace is a DVC repository of its own and must
    not be seen by the project's ``dvc`` or ``git``.
    """
    env = os.environ.get(RUNS_ENV, "").strip()
    if env:
        return Path(env).expanduser().resolve()
    home = os.environ.get("AIRFLOW_HOME", "").strip() or "~/airflow"
    return (Path(home).expanduser() / "prefpipe-runs").resolve()


def retry_settings(env: Mapping[str, str] | None = None) -> dict[str, Any]:
    """Task retries for the DAGs: 2 retries, 2 minutes doubling up to 30 minutes, by default.

    ``$PREFPIPE_TASK_RETRIES`` and ``$PREFPIPE_RETRY_DELAY_S`` change them (read when the
    DAG file is parsed), e.g. a test environment that cannot wait minutes for a retry.
    """
    env = os.environ if env is None else env
    return {
        "retries": int(env.get(RETRIES_ENV, "2")),
        "retry_delay": timedelta(seconds=float(env.get(RETRY_DELAY_ENV, "120"))),
        "retry_exponential_backoff": 2.0,
        "max_retry_delay": timedelta(minutes=30),
    }


def safe_run_id(run_id: str) -> str:
    """A folder name for an Airflow run id (``manual__2026-01-05T04:00:00+00:00`` has ``:`` and ``+``)."""
    name = re.sub(r"[^A-Za-z0-9._-]+", "_", run_id).strip("._")
    if not name:
        raise WorkspaceError(f"run id {run_id!r} gives an empty folder name")
    return name[:200]


# ---------------------------------------------------------------------------- workspace


def _git(args: list[str], cwd: Path, timeout: int = 120) -> str:
    proc = subprocess.run(
        ["git", "-c", "user.name=prefpipe", "-c", "user.email=prefpipe@localhost", *args],
        cwd=cwd, capture_output=True, text=True, timeout=timeout,
    )
    if proc.returncode != 0:
        raise WorkspaceError(f"git {' '.join(args)} failed in {cwd}: {proc.stderr.strip()[-500:]}")
    return proc.stdout


def _is_git_repo(path: Path) -> bool:
    """True when ``path`` is the top of a git working tree (not merely inside one)."""
    try:
        top = _git(["rev-parse", "--show-toplevel"], path, timeout=30).strip()
    except (WorkspaceError, OSError):
        return False
    return Path(top).resolve() == path.resolve()


def _source_files(project: Path) -> list[str]:
    """Files a clone of the project would hold right now: tracked plus untracked-not-ignored."""
    out = subprocess.run(
        ["git", "ls-files", "-co", "--exclude-standard", "-z"], cwd=project, capture_output=True, check=True
    ).stdout.decode()
    return [p for p in out.split("\0") if p]


def outside_refs(project: Path) -> list[str]:
    """Top-level names outside the project that ``dvc.yaml``/``params.yaml`` use as ``../NAME``.

    Why: those paths are relative, so a workspace elsewhere needs the same names beside it.
    """
    names: set[str] = set()
    for fname in ("dvc.yaml", "params.yaml"):
        path = project / fname
        if path.exists():
            names.update(re.findall(r"\.\./([A-Za-z0-9._-]+)", path.read_text(encoding="utf-8")))
    return sorted(n for n in names if n not in {".", ".."})


def _link_outside_refs(project: Path, parent: Path) -> None:
    for name in outside_refs(project):
        target = (project.parent / name).resolve()
        link = parent / name
        if not target.exists():
            log.warning("../%s is referred to by the project but %s does not exist", name, target)
            continue
        if link.is_symlink() or link.exists():
            if link.resolve() != target:
                raise WorkspaceError(f"{link} exists and is not a link to {target}; move it away")
            continue
        link.symlink_to(target, target_is_directory=target.is_dir())


def dvc_cache_dir(project: Path) -> Path:
    """The project's DVC cache folder, as DVC resolves it (``cache.dir`` at any config level)."""
    return Path(_dvc(["cache", "dir"], Path(project)).strip()).resolve()


def _snapshot(project: Path, ws: Path) -> None:
    """Make ``ws`` a copy of ``project`` as it is on disk, keeping git history when there is one.

    A ``git clone --shared`` keeps the project's commit (so MLflow records the real
    commit, flagged ``-dirty`` when the tree had changes); the working tree's files are
    then copied over it, because a run must use the code and params the user sees.
    """
    if _is_git_repo(project):
        has_head = subprocess.run(
            ["git", "rev-parse", "--verify", "-q", "HEAD"], cwd=project, capture_output=True
        ).returncode == 0
        if has_head:
            _git(["clone", "--shared", "--quiet", "--no-checkout", str(project), str(ws)], ws.parent)
            _git(["checkout", "--quiet", "--detach", "HEAD"], ws)
        else:
            ws.mkdir()
            _git(["init", "--quiet"], ws)
        files = _source_files(project)
        for rel in files:
            src = project / rel
            if src.is_file() or src.is_symlink():
                dest = ws / rel
                dest.parent.mkdir(parents=True, exist_ok=True)
                if dest.is_symlink() or dest.exists():
                    dest.unlink()
                shutil.copy2(src, dest, follow_symlinks=False)
        deleted = subprocess.run(
            ["git", "ls-files", "--deleted", "-z"], cwd=project, capture_output=True, check=True
        ).stdout.decode()
        for rel in filter(None, deleted.split("\0")):
            (ws / rel).unlink(missing_ok=True)
    else:
        skip = _not_source(project)

        def ignore(folder: str, names: list[str]) -> set[str]:
            rel = Path(folder).resolve().relative_to(project)
            return {n for n in names if n == "__pycache__" or (rel / n).as_posix() in skip}

        shutil.copytree(project, ws, ignore=ignore, symlinks=True)
        _dvc(["config", "--local", "core.no_scm", "true"], ws)


def _not_source(project: Path) -> set[str]:
    """Paths a copy without git must leave out: caches, environments, and DVC outputs."""
    skip = {".git", ".venv", ".cache", "mlflow", "airflow_home", ".dvc/cache", ".dvc/tmp", ".dvc/config.local"}
    if (project / "dvc.yaml").exists():
        for spec in _stages(project / "dvc.yaml").values():
            wdir = str(spec.get("wdir", "."))
            skip.update(_norm(wdir, p) for key in ("outs", "plots") for p in _entry_paths(spec.get(key)))
    return skip


def _dvc(args: list[str], cwd: Path, timeout: int = 300) -> str:
    proc = subprocess.run(
        [sys.executable, "-m", "dvc", *args], cwd=cwd, env=stage_env(), capture_output=True, timeout=timeout,
        **LENIENT_TEXT,
    )
    if proc.returncode != 0:
        raise WorkspaceError(f"dvc {' '.join(args)} failed in {cwd}: {(proc.stderr or proc.stdout).strip()[-800:]}")
    return proc.stdout


def write_params(workspace: Path, overrides: Mapping[str, Any]) -> dict[str, Any]:
    """Apply dotted overrides to the workspace's ``params.yaml`` after validating them.

    Returns the validated params as a plain dict. With no overrides the file is left
    byte-for-byte as it was (comments included).

    Raises:
        InvalidOverrides: a key that does not exist or a value out of range.
    """
    import yaml

    from pipelines.config import ConfigError, apply_overrides, parse_params

    path = workspace / "params.yaml"
    raw = yaml.safe_load(path.read_text(encoding="utf-8")) if path.exists() else {}
    data = apply_overrides(raw or {}, dict(overrides)) if overrides else (raw or {})
    try:
        params = parse_params(data, "params.yaml + run overrides")
    except ConfigError as err:
        raise InvalidOverrides(str(err)) from None
    if overrides:
        header = "# Written by the Airflow run: params.yaml with the trigger form's overrides.\n"
        path.write_text(header + yaml.safe_dump(data, sort_keys=False, allow_unicode=True), encoding="utf-8")
    return params.model_dump(mode="json", by_alias=True)


def _share_mlflow(project: Path, workspace: Path, params: Mapping[str, Any]) -> None:
    """Make the run use the project's MLflow store, not one of its own.

    The registry (``champion``) must outlive a run, so the workspace's ``mlflow/`` is a
    link to the project's, and the run's experiment is created here, from the project,
    so its artifact folder is the project's and survives the workspace being pruned.
    With ``MLFLOW_TRACKING_URI`` set (a server), there is nothing to share.

    Why not ``tracking.ensure_experiment``: it goes through ``mlflow.set_tracking_uri``,
    which exports ``MLFLOW_TRACKING_URI`` into this process (MLflow 3), and then takes
    the store for a user-given server; a client bound to the URI has no such side effect.
    """
    if os.environ.get("MLFLOW_TRACKING_URI", "").strip():
        return
    try:
        from pipelines import tracking
        from pipelines.layout import Layout
    except ImportError:  # no tracking module: nothing registers models
        return
    layout = Layout(project)
    target = tracking.mlflow_dir(layout)
    target.mkdir(parents=True, exist_ok=True)
    link = workspace / "mlflow"
    if not link.exists() and not link.is_symlink():
        link.symlink_to(target.resolve(), target_is_directory=True)
    experiment = (params.get("registry") or {}).get("experiment")
    if not experiment:
        return
    from mlflow import MlflowClient

    uri, root = tracking.tracking_uri(layout), tracking.artifact_root(layout)
    client = MlflowClient(tracking_uri=uri, registry_uri=uri)
    if client.get_experiment_by_name(experiment) is None:
        try:
            client.create_experiment(experiment, artifact_location=root)
        except Exception:  # created meanwhile by another run is fine; anything else is not
            if client.get_experiment_by_name(experiment) is None:
                raise


def _share_drift_cache(project: Path, workspace: Path, params: Mapping[str, Any]) -> Path | None:
    """Point the workspace's drift cache at the project's; return the link (None: nothing to share).

    Why: every run gets a fresh workspace, so a cache inside it never hits and the weekly
    drift run recomputed the reference's statistics and embeddings each time. Entries are
    keyed by content hash and written atomically, so runs can share one folder. A path
    that is absolute or leads outside the project is the same for every run already.
    """
    rel = (params.get("drift") or {}).get("cache_dir")
    if not rel or Path(rel).is_absolute():
        return None
    target = (project / rel).resolve()
    if project.resolve() not in target.parents:
        return None
    link = workspace / rel
    if link.is_symlink() or link.exists():  # a cache committed into the project: keep the copy
        return None
    target.mkdir(parents=True, exist_ok=True)
    link.parent.mkdir(parents=True, exist_ok=True)
    link.symlink_to(target, target_is_directory=True)
    return link


def prepare_workspace(project: Path, runs_dir: Path, run_id: str, overrides: Mapping[str, Any]) -> Path:
    """Make ``<runs_dir>/<run_id>``: the project's files, shared DVC cache, overridden params.

    Idempotent: an existing workspace of the same run is replaced (a cleared run starts
    clean). Invalid overrides are reported before anything is copied.

    Returns:
        The workspace path.

    Raises:
        InvalidOverrides: the overrides do not validate.
        WorkspaceError: git, DVC or the file system refused.
    """
    project = Path(project).resolve()
    runs_dir = Path(runs_dir).resolve()
    if not (project / "dvc.yaml").exists():
        raise WorkspaceError(f"{project} has no dvc.yaml: is PREFPIPE_PROJECT_DIR right?")
    if runs_dir == project or project in runs_dir.parents:
        raise WorkspaceError(f"the runs folder {runs_dir} must be outside the project {project}")
    _validate_only(project, overrides)

    runs_dir.mkdir(parents=True, exist_ok=True)
    ws = runs_dir / safe_run_id(run_id)
    if ws.exists() or ws.is_symlink():
        shutil.rmtree(ws)
    t0 = time.perf_counter()
    _snapshot(project, ws)
    _link_outside_refs(project, runs_dir)
    _dvc(["cache", "dir", "--local", str(dvc_cache_dir(project))], ws)
    params = write_params(ws, overrides)
    _share_mlflow(project, ws, params)
    _share_drift_cache(project, ws, params)
    info = {"project": str(project), "run_id": run_id, "overrides": dict(overrides), "created": time.time()}
    (ws / RUN_INFO_FILE).write_text(json.dumps(info, indent=2, sort_keys=True, default=str) + "\n", encoding="utf-8")
    log.info("workspace %s ready in %.1fs (%d overrides)", ws, time.perf_counter() - t0, len(overrides))
    return ws


def _validate_only(project: Path, overrides: Mapping[str, Any]) -> None:
    """Validate overrides against the project's params.yaml without writing anything."""
    import yaml

    from pipelines.config import ConfigError, apply_overrides, parse_params

    path = project / "params.yaml"
    raw = (yaml.safe_load(path.read_text(encoding="utf-8")) if path.exists() else {}) or {}
    try:
        parse_params(apply_overrides(raw, dict(overrides)), "params.yaml + run overrides")
    except ConfigError as err:
        raise InvalidOverrides(str(err)) from None


def project_registry(project: Path) -> dict[str, Any]:
    """The ``registry`` section of the project's params.yaml (names for the dry run)."""
    import yaml

    path = Path(project) / "params.yaml"
    raw = (yaml.safe_load(path.read_text(encoding="utf-8")) if path.exists() else {}) or {}
    reg = raw.get("registry") or {}
    return reg if isinstance(reg, dict) else {}


def prune_workspaces(runs_dir: Path, keep: int, current: Path | None = None) -> list[Path]:
    """Delete all but the ``keep`` newest workspaces in ``runs_dir`` (never ``current``).

    Why it is safe: a workspace's data lives in the shared DVC cache and its ``dvc.lock``
    names it; the workspace is a checkout, not the only copy.
    """
    runs_dir = Path(runs_dir)
    if keep < 0 or not runs_dir.is_dir():
        return []
    spaces = [p for p in runs_dir.iterdir() if p.is_dir() and not p.is_symlink() and (p / RUN_INFO_FILE).exists()]
    spaces.sort(key=lambda p: (p / RUN_INFO_FILE).stat().st_mtime, reverse=True)
    removed = []
    for old in spaces[keep:]:
        if current is not None and old.resolve() == Path(current).resolve():
            continue
        shutil.rmtree(old, ignore_errors=True)
        removed.append(old)
    return removed


# ---------------------------------------------------------------------------- stages


def stage_env(base: Mapping[str, str] | None = None) -> dict[str, str]:
    """Environment of a stage process: this interpreter's ``bin`` first on PATH, no analytics.

    Why: DVC runs ``python -m pipelines STAGE``; under Airflow the ``python`` on PATH
    may not be the one that has the project installed.
    """
    env = dict(os.environ if base is None else base)
    bindir = str(Path(sys.executable).parent)
    env["PATH"] = os.pathsep.join([bindir, env.get("PATH", "")])
    env.setdefault("DVC_NO_ANALYTICS", "1")
    env.setdefault("GX_ANALYTICS_ENABLED", "false")
    env.setdefault("TOKENIZERS_PARALLELISM", "false")
    # Typer's Rich tracebacks wrap at 80 columns on a pipe, cutting the exception line
    # that StageFailed reports; the standard traceback keeps it whole
    env.setdefault("_TYPER_STANDARD_TRACEBACK", "1")
    return env


_ERROR_LINE = re.compile(r"^(?:[\w.]+(?:Error|Exception|Failure|Failed|Exit)\b.*|ERROR: .*)$")
_DVC_RUNNING = re.compile(r"^Running stage '([^']+)':")
MAX_ERROR_LINE = 500


def last_error_line(output: str, stage: str | None = None) -> str:
    """The most telling line of a failed stage's output.

    The last of: the final exception of a traceback, or the CLI's own one-line error
    (``<stage>: ...``, a bad params file or an unreachable tracking server, exit 2 or
    3); else DVC's ERROR, which only says that the command failed. ``stage`` defaults
    to the one DVC says it ran.
    """
    lines = [ln.strip() for ln in output.splitlines() if ln.strip()]
    stage = stage or next((m[1] for ln in reversed(lines) if (m := _DVC_RUNNING.match(ln))), None)
    cli_prefix = f"{stage}: " if stage else None
    telling = [ln for ln in lines if (_ERROR_LINE.match(ln) and not ln.startswith("ERROR"))
               or (cli_prefix and ln.startswith(cli_prefix))]
    dvc_err = [ln for ln in lines if ln.startswith("ERROR")]
    pick = telling[-1] if telling else dvc_err[-1] if dvc_err else (lines[-1] if lines else "no output")
    return pick[:MAX_ERROR_LINE]


def run_dvc_stage(
    workspace: Path,
    stage: str,
    echo: Callable[[str], None] | None = None,
    single_item: bool = True,
    force: bool = False,
) -> dict[str, Any]:
    """Run ``dvc repro --single-item STAGE`` in the workspace; return the stage's metrics.

    ``--single-item`` because Airflow already ran (or restored) the upstream stages in
    this workspace; DVC still reruns the stage only when its deps, params or code
    changed, and restores it from the run-cache when another run computed the same.
    ``single_item=False`` reproduces the stage's upstream first (for a DAG that runs
    one stage of the graph on its own, like drift). ``force`` runs the stage even when
    DVC sees no change (its real input is outside DVC's view, like the registry alias).
    Output is streamed to ``echo`` (the task log) line by line.

    Raises:
        WorkspaceError: not a workspace, or the stage is not in its dvc.yaml.
        StageFailed: the stage's command (or DVC) exited non-zero.
    """
    workspace = Path(workspace)
    dvc_yaml = workspace / "dvc.yaml"
    if not dvc_yaml.exists():
        raise WorkspaceError(f"{workspace} is not a workspace (no dvc.yaml); did prepare_workspace run?")
    if stage not in stage_names(dvc_yaml):
        raise WorkspaceError(f"stage {stage!r} is not in {dvc_yaml}")
    if echo is None:
        stage_log = logging.getLogger(f"prefpipe.stage.{stage}")
        echo = lambda line: stage_log.info("%s", line)  # noqa: E731 (a one-line sink)
    cmd = [sys.executable, "-m", "dvc", "--wait-for-lock", "repro", *(["--single-item"] if single_item else []),
           *(["--force"] if force else []), stage]
    t0 = time.perf_counter()
    # same process group as the task: Airflow stops a task by signalling its whole group,
    # which then reaches DVC and the stage it runs
    proc = subprocess.Popen(
        cmd, cwd=workspace, env=stage_env(), stdout=subprocess.PIPE, stderr=subprocess.STDOUT, bufsize=1,
        **LENIENT_TEXT,
    )
    tail: list[str] = []
    try:
        assert proc.stdout is not None
        for line in proc.stdout:
            line = line.rstrip("\n")
            echo(line)
            tail.append(line)
            del tail[:-200]
        returncode = proc.wait()
    except BaseException:  # the task is being stopped (or timed out): do not leave DVC running
        _stop(proc)
        raise
    if returncode != 0:
        raise StageFailed(stage, returncode, last_error_line("\n".join(tail), stage))
    log.info("stage %s done in %.1fs", stage, time.perf_counter() - t0)
    return stage_metrics(workspace, stage)


def _stop(proc: subprocess.Popen) -> None:
    proc.terminate()
    try:
        proc.wait(timeout=10)
    except subprocess.TimeoutExpired:
        proc.kill()


def stage_metrics(workspace: Path, stage: str, max_bytes: int = 32_000) -> dict[str, Any]:
    """The stage's metrics JSON(s) as declared in dvc.yaml, merged; trimmed to scalars when large.

    Why trimmed: the result goes to XCom, which carries small metrics only.
    """
    spec = _stages(Path(workspace) / "dvc.yaml")[stage]
    merged: dict[str, Any] = {}
    for path in _entry_paths(spec.get("metrics")):
        file = Path(workspace) / spec.get("wdir", ".") / path
        if file.exists():
            data = json.loads(file.read_text(encoding="utf-8"))
            if isinstance(data, dict):
                merged.update(data)
    if len(json.dumps(merged, default=str)) > max_bytes:
        merged = {k: v for k, v in merged.items() if isinstance(v, str | int | float | bool) or v is None}
        merged["_trimmed"] = True
    return merged


def dvc_status(workspace: Path, stages: Iterable[str] = ()) -> dict[str, Any]:
    """``dvc status --json [STAGE ...]`` of a workspace: ``{}`` means up to date.

    A training run leaves the stages of other DAGs (drift) unrun, so its check names
    the stages it ran; with none given, every stage is checked.
    """
    out = _dvc(["status", "--json", *stages], Path(workspace))
    return json.loads(out or "{}")


def run_cli_stage(workspace: Path, stage: str, echo: Callable[[str], None] | None = None) -> dict[str, Any]:
    """Run ``python -m pipelines STAGE`` in the workspace (a stage that is not in dvc.yaml).

    Returns the JSON the command prints (the stage's metrics).
    """
    echo = echo or (lambda line: log.info("%s", line))
    cli_name = stage.replace("_", "-")
    proc = subprocess.run(
        [sys.executable, "-m", "pipelines", cli_name], cwd=workspace, env=stage_env(), capture_output=True,
        **LENIENT_TEXT,
    )
    for line in proc.stderr.splitlines():
        echo(line)
    if proc.returncode != 0:
        raise StageFailed(stage, proc.returncode, last_error_line(proc.stderr + "\n" + proc.stdout, stage))
    try:
        result = json.loads(proc.stdout)
    except json.JSONDecodeError:
        result = {}
    return result if isinstance(result, dict) else {}


# ---------------------------------------------------------------------------- the graph


def _stages(dvc_yaml: Path) -> dict[str, dict[str, Any]]:
    import yaml

    doc = yaml.safe_load(Path(dvc_yaml).read_text(encoding="utf-8")) or {}
    stages = doc.get("stages") or {}
    for name, spec in stages.items():
        if not isinstance(spec, dict) or "foreach" in spec or "matrix" in spec:
            raise ValueError(f"stage {name!r}: only plain stages are supported by the DAG")
    return stages


def _entry_paths(entries: Iterable[Any] | None) -> list[str]:
    """Paths of a deps/outs/metrics/plots list whose items are ``path`` or ``{path: options}``."""
    paths: list[str] = []
    for entry in entries or []:
        if isinstance(entry, str):
            paths.append(entry)
        elif isinstance(entry, dict):
            paths.extend(str(k) for k in entry)
    return paths


def stage_names(dvc_yaml: Path) -> list[str]:
    """Stage names in dvc.yaml order."""
    return list(_stages(dvc_yaml))


def training_stages(dvc_yaml: Path) -> list[str]:
    """The stages the training DAG runs: dvc.yaml's, in order, less :data:`OWN_DAG_STAGES`."""
    return [s for s in stage_names(dvc_yaml) if s not in OWN_DAG_STAGES]


def training_graph(dvc_yaml: Path) -> list[tuple[str, str]]:
    """:func:`read_stage_graph` between the training DAG's stages."""
    keep = set(training_stages(dvc_yaml))
    return [(u, d) for u, d in read_stage_graph(dvc_yaml) if u in keep and d in keep]


def _norm(wdir: str, path: str) -> str:
    return posixpath.normpath(posixpath.join(wdir, path))


def _overlaps(a: str, b: str) -> bool:
    """Same path, or one inside the other (how DVC matches a dep to an out)."""
    return a == b or a.startswith(b + "/") or b.startswith(a + "/")


def read_stage_graph(dvc_yaml: Path) -> list[tuple[str, str]]:
    """Edges ``(upstream, downstream)`` of dvc.yaml: B depends on A when a dep of B overlaps an out of A.

    Outs include ``metrics`` and ``plots``; a dep inside an output folder, or a folder
    that contains an output, counts, as it does for DVC. Edges come in dvc.yaml order.
    """
    stages = _stages(dvc_yaml)
    outs: dict[str, list[str]] = {}
    for name, spec in stages.items():
        wdir = str(spec.get("wdir", "."))
        outs[name] = [
            _norm(wdir, p)
            for key in ("outs", "metrics", "plots")
            for p in _entry_paths(spec.get(key))
        ]
    edges: list[tuple[str, str]] = []
    for name, spec in stages.items():
        wdir = str(spec.get("wdir", "."))
        deps = [_norm(wdir, p) for p in _entry_paths(spec.get("deps"))]
        for up in stages:
            if up != name and any(_overlaps(d, o) for d in deps for o in outs[up]):
                edges.append((up, name))
    return edges


# ---------------------------------------------------------------------------- outcomes


def _read(path: Path) -> dict[str, Any]:
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, json.JSONDecodeError):
        return {}
    return data if isinstance(data, dict) else {}


def training_outcome(workspace: Path) -> dict[str, Any]:
    """What a finished training run decided, from the files gate and promote wrote.

    Keys: ``promoted`` (bool), ``reason`` (one line), ``reasons`` (every gate check, as
    the gate worded it), ``failed_checks``, ``version``/``champion`` (registry), the
    evaluation's headline figures, and ``mlflow_run_id``. Missing files give missing
    keys, never an exception: the outcome must be reportable even when a stage wrote less.
    """
    ws = Path(workspace)
    gate = _read(ws / "metrics" / "gate.json")
    promote = _read(ws / "metrics" / "promote.json")
    verdict = _read(ws / "data" / "gate" / "verdict.json")
    evaluation = _read(ws / "metrics" / "evaluate.json")
    train = _read(ws / "metrics" / "train.json")
    passed = bool(verdict.get("passed", gate.get("passed", False)))
    promoted = bool(promote.get("promoted", False))
    failed = list(verdict.get("failed", gate.get("failed", [])) or [])
    checks = verdict.get("checks") or []
    reasons = list(verdict.get("reasons") or [c.get("reason", "") for c in checks if isinstance(c, dict)])
    if promote.get("reason"):
        reason = str(promote["reason"])
    elif not gate and not verdict:
        reason = "no gate verdict was written"
    else:
        reason = "gate passed" if passed else "gate failed: " + ", ".join(failed or ["(no check named)"])
    headline_keys = (
        "win_rate", "win_rate_ci_low", "win_rate_ci_high", "win_rate_p_value",
        "reference_accuracy", "candidate_accuracy", "nll_relative_increase",
    )
    return {
        "promoted": promoted,
        "gate_passed": passed,
        "reason": reason,
        "reasons": reasons,
        "failed_checks": failed,
        "version": promote.get("version"),
        "champion": promote.get("champion"),
        "previous_champion": promote.get("previous_champion"),
        "figures": {k: evaluation[k] for k in headline_keys if k in evaluation},
        "mlflow_run_id": train.get("mlflow_run_id"),
        "workspace": str(ws),
    }


# ---------------------------------------------------------------------------- drift


def drift_available() -> bool:
    """Whether the drift stage exists (``pipelines.drift``); the drift DAG skips without it."""
    import importlib.util

    return importlib.util.find_spec("pipelines.drift") is not None


def run_drift(workspace: Path, echo: Callable[[str], None] | None = None) -> dict[str, Any]:
    """Run the drift check in a workspace and return its metrics.

    The scrubbed records it compares are reproduced first (restored from the run-cache
    when unchanged); then the ``drift`` stage runs *forced*: its default reference is the
    registry's champion, which DVC cannot see, so a cached result could be against an
    older champion. Its output is versioned like any stage's. Without a ``drift`` stage
    in dvc.yaml the ``drift`` CLI stage runs instead.
    """
    workspace = Path(workspace)
    run_dvc_stage(workspace, "scrub", echo=echo, single_item=False)
    if "drift" in stage_names(workspace / "dvc.yaml"):
        return run_dvc_stage(workspace, "drift", echo=echo, force=True)
    return run_cli_stage(workspace, "drift", echo=echo)


def drift_exceeded(metrics: Mapping[str, Any], threshold: float | None = None) -> bool:
    """Did the drift check conclude "drift"? Reads the stage's own verdict first.

    Order: an explicit boolean (``drift_detected``, ``drift``, ``drifted``), a
    ``verdict`` string, then a share/score above ``threshold`` (the form's override, else
    the stage's ``threshold`` metric). Unknown shapes are "no drift", logged.
    """
    for key in ("drift_detected", "drift", "drifted", "dataset_drift"):
        if isinstance(metrics.get(key), bool):
            return bool(metrics[key])
    verdict = metrics.get("verdict")
    if isinstance(verdict, str):
        return verdict.strip().lower() in {"drift", "drifted", "severe", "alert"}
    limit = threshold if threshold is not None else metrics.get("threshold")
    for key in ("share_drifted", "drifted_share", "share_of_drifted_features", "drift_score", "score"):
        value = metrics.get(key)
        if isinstance(value, int | float) and isinstance(limit, int | float):
            return float(value) > float(limit)
    log.warning("drift metrics have no verdict this code understands: keys %s", sorted(metrics))
    return False
