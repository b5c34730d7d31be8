"""Stage ``promote`` and ``rollback``: the MLflow model registry side of the pipeline.

Command lines::

    python -m pipelines promote                    # after gate; dvc repro runs it
    python -m pipelines rollback                   # champion goes back one step
    python -m pipelines rollback --to-version 3    # champion becomes version 3

What promote does, always in this order:

1. checks the gate verdict belongs to the candidate on disk (same fingerprint);
2. registers the candidate (an MLflow pyfunc whose artifact is the candidate folder),
   once: a candidate already registered (same fingerprint tag) is reused, so a rerun
   changes nothing;
3. tags the version with the verdict, every reason, the metrics, the data version, the
   git commit, who and when; writes a model card (Markdown) as a run artifact, as the
   version description and to ``data/registry/model_card.md``;
4. on a pass only, moves alias ``champion`` to it and points ``previous_champion`` at
   the outgoing champion (and records it on the new version as ``replaced_version``).

Rollback walks that chain back: champion goes to the current champion's
``replaced_version``, and ``previous_champion`` to the one before, so repeated
rollbacks keep going back in history. The registry lives in the tracking store
(:mod:`pipelines.tracking`): local SQLite by default, ``MLFLOW_TRACKING_URI`` otherwise.
"""

from __future__ import annotations

import getpass
import json
import logging
import os
import shutil
import socket
import tempfile
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

from pipelines.io import read_json, write_json_atomic, write_text_atomic
from pipelines.layout import Layout
from pipelines.tracking import FINGERPRINT_TAG, alias_version

if TYPE_CHECKING:
    from mlflow import MlflowClient
    from mlflow.entities.model_registry import ModelVersion

    from pipelines.config import Params

log = logging.getLogger(__name__)

REPLACED_TAG = "replaced_version"
POLICY_CODE = Path(__file__).with_name("policy_model.py")


def registry_dir(layout: Layout) -> Path:
    """Promote's own output folder (the model card)."""
    return layout.root / "data" / "registry"


def model_card_path(layout: Layout) -> Path:
    return registry_dir(layout) / "model_card.md"


def actor() -> str:
    """Who is acting: ``PREFPIPE_ACTOR`` (set by Airflow or CI), else user@host."""
    explicit = os.environ.get("PREFPIPE_ACTOR", "").strip()
    if explicit:
        return explicit
    try:
        user = getpass.getuser()
    except (KeyError, OSError):
        user = "unknown"
    return f"{user}@{socket.gethostname()}"


def now_iso() -> str:
    return datetime.now(UTC).isoformat(timespec="seconds")


def find_by_fingerprint(c: MlflowClient, name: str, fingerprint: str) -> ModelVersion | None:
    """An already registered version of this exact candidate (lowest version number)."""
    found = c.search_model_versions(f"name = '{name}' and tags.{FINGERPRINT_TAG} = '{fingerprint}'")
    return min(found, key=lambda v: int(v.version)) if found else None


# --------------------------------------------------------------------------- model card


def model_card(
    params: Params, manifest: dict[str, Any], evaluation: dict[str, Any], verdict: dict[str, Any], version: str
) -> str:
    """A short Markdown model card: what, from which data, how it scored, what the gate said."""
    h = evaluation.get("headline", {})
    lines = [
        f"# {params.registry.model_name} version {version}",
        "",
        f"- gate: **{'PASSED' if verdict.get('passed') else 'FAILED'}**",
        f"- base model: `{manifest['base']['source']}` (fingerprint `{manifest['base']['fingerprint'][:12]}`)",
        f"- compared against: {evaluation.get('reference', {}).get('label', '?')}",
        f"- training run: `{manifest.get('mlflow_run_id', '?')}`; candidate fingerprint "
        f"`{evaluation.get('candidate_fingerprint', '')[:12]}`",
        "",
        "## Data version",
        "",
        *[f"- {k}: `{v}`" for k, v in sorted(manifest.get("data", {}).items())],
        "",
        "## Training parameters",
        "",
        "```json",
        json.dumps(manifest.get("params", {}), indent=2, sort_keys=True),
        "```",
        "",
        "## Held-out metrics",
        "",
        "| metric | value |",
        "|---|---|",
        *[f"| {k} | {_fmt(v)} |" for k, v in sorted(h.items())],
        "",
        "## Gate checks",
        "",
        "| check | passed | value | threshold |",
        "|---|---|---|---|",
        *[
            f"| {c['name']} | {'yes' if c['passed'] else 'NO'} | {_fmt(c['value'])} | {c['op']} {_fmt(c['threshold'])} |"
            for c in verdict.get("checks", [])
        ],
        "",
        "## Intended use and limits",
        "",
        "A preference-tuned policy for the pipeline's skills. Margins are measured on held-out",
        "pairs of the same distribution as training; they do not certify behaviour on other",
        "traffic. Safety is checked only as a regression on the safety pairs.",
        "",
    ]
    return "\n".join(lines)


def _fmt(v: Any) -> str:
    return f"{v:.4g}" if isinstance(v, float) else str(v)


# --------------------------------------------------------------------------- register


def policy_signature() -> Any:
    """Inputs: ``prompt`` and an optional ``response``; param ``max_new_tokens`` for generation."""
    from mlflow.models import ModelSignature
    from mlflow.types.schema import ColSpec, ParamSchema, ParamSpec, Schema

    return ModelSignature(
        inputs=Schema([ColSpec("string", "prompt"), ColSpec("string", "response", required=False)]),
        params=ParamSchema([ParamSpec("max_new_tokens", "long", 64)]),
    )


def _log_policy(params: Params, layout: Layout, manifest: dict[str, Any]) -> tuple[str, str]:
    """Log the candidate as a pyfunc into its training run (or a new run); return (uri, run_id)."""
    import mlflow
    import peft
    import torch
    import transformers

    from pipelines import tracking

    c = tracking.client(layout)
    exp_id = tracking.ensure_experiment(params, layout)
    run_id = manifest.get("mlflow_run_id")
    try:
        if run_id:
            c.get_run(run_id)
    except Exception:  # trained against another store: keep the lineage as a tag instead
        run_id = None
    reqs = [
        f"mlflow=={mlflow.__version__}",
        f"torch=={torch.__version__.split('+')[0]}",
        f"transformers=={transformers.__version__}",
        f"peft=={peft.__version__}",
        "pandas",
    ]
    kwargs: dict[str, Any] = {"run_id": run_id} if run_id else {"experiment_id": exp_id, "run_name": "register"}
    with mlflow.start_run(**kwargs) as active, tempfile.TemporaryDirectory() as tmp:
        info = mlflow.pyfunc.log_model(
            name="policy",
            python_model=str(POLICY_CODE),
            signature=policy_signature(),
            artifacts={"candidate": str(layout.candidate)},
            code_paths=[str(code_snapshot(Path(tmp)))],
            pip_requirements=reqs,
        )
        return info.model_uri, active.info.run_id


def code_snapshot(dest_parent: Path) -> Path:
    """The package's Python modules only, for the logged model.

    Why not the whole package: its resources hold name lists and generator templates
    (dictionaries of real first names) that the model does not need, and that a PII
    audit of the MLflow store would rightly flag.
    """
    dest = dest_parent / "pipelines"
    dest.mkdir(parents=True)
    for module in Path(__file__).parent.glob("*.py"):
        shutil.copy2(module, dest / module.name)
    return dest


def _register(params: Params, layout: Layout, fingerprint: str, manifest: dict[str, Any]) -> tuple[ModelVersion, bool]:
    """Register the candidate unless this fingerprint already is; returns (version, created)."""
    import mlflow
    from mlflow.exceptions import MlflowException

    from pipelines import tracking

    c = tracking.client(layout)
    name = params.registry.model_name
    try:
        c.get_registered_model(name)
    except MlflowException:
        c.create_registered_model(name, description="Preference-tuned policy (LoRA/DPO) of the prefpipe pipeline.")
    existing = find_by_fingerprint(c, name, fingerprint)
    if existing is not None:
        return existing, False
    uri, _ = _log_policy(params, layout, manifest)
    mv = mlflow.register_model(uri, name, tags={FINGERPRINT_TAG: fingerprint})
    return mv, True


def _version_tags(
    evaluation: dict[str, Any], verdict: dict[str, Any], manifest: dict[str, Any], who: str, when: str, root: Path
) -> dict[str, str]:
    """Everything a reader of the registry needs to judge a version, as string tags."""
    from pipelines import reference, tracking

    tags = {
        "gate": "passed" if verdict.get("passed") else "failed",
        "gate_reasons": "; ".join(verdict.get("reasons", [])),
        "evaluated_against": str(evaluation.get("reference", {}).get("label", "")),
        "registered_by": who,
        "registered_at": when,
        "git_commit": tracking.git_commit(root),
        "base_model": str(manifest["base"]["source"]),
    }
    for k, v in manifest.get("data", {}).items():
        tags[f"data.{k}"] = str(v)
    for k, v in evaluation.get("headline", {}).items():
        tags[f"metric.{k}"] = _fmt(v)
    tags.update(reference.training_events_tags(Layout(root), manifest))  # drift's default reference window
    return tags


def run(params: Params, layout: Layout) -> dict[str, Any]:
    """Stage ``promote``: register, tag, and move ``champion`` when the gate passed."""
    from pipelines import tracking
    from pipelines.evaluate import choose_reference, stale_reference
    from pipelines.gate import verdict_path
    from pipelines.model import candidate_fingerprint, read_manifest

    verdict = read_json(verdict_path(layout))
    evaluation = read_json(layout.eval_dir / "eval.json")
    fingerprint = candidate_fingerprint(layout.candidate)
    if verdict.get("candidate_fingerprint") != fingerprint:
        raise RuntimeError(
            "the gate verdict was made for another candidate "
            f"({verdict.get('candidate_fingerprint', '?')[:12]} != {fingerprint[:12]}); rerun evaluate and gate"
        )
    manifest = read_manifest(layout.candidate)
    c = tracking.client(layout)
    r = params.registry
    mv, created = _register(params, layout, fingerprint, manifest)
    version = str(mv.version)
    who, when = actor(), now_iso()

    card = model_card(params, manifest, evaluation, verdict, version)
    write_text_atomic(model_card_path(layout), card)
    # the latest verdict wins: a candidate rejected against one champion may pass against another
    tags = _version_tags(evaluation, verdict, manifest, who, when, layout.root)
    if not created:
        tags = {k: v for k, v in tags.items() if k not in ("registered_by", "registered_at")}
    for k, v in tags.items():
        c.set_model_version_tag(r.model_name, version, k, v[:5000])
    c.update_model_version(r.model_name, version, description=card[:5000])
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "model_card.md"
        path.write_text(card, encoding="utf-8")
        c.log_artifact(mv.run_id, str(path))

    champion = alias_version(c, r.model_name, r.champion_alias)
    result: dict[str, Any] = {
        "version": version,
        "registered": created,
        "gate_passed": bool(verdict.get("passed")),
        "previous_champion": str(champion.version) if champion else None,
    }
    stale = stale_reference(evaluation.get("reference"), choose_reference(params, layout, fingerprint))
    if not verdict.get("passed"):
        failed = [c["reason"] for c in verdict.get("checks", []) if not c["passed"]]
        result.update(promoted=False, reason="gate failed: " + "; ".join(failed))
    elif stale:  # the champion moved after evaluate ran (another run, a rollback): judge again first
        result.update(promoted=False, reason="stale evaluation: " + stale)
    elif champion is not None and str(champion.version) == version:
        result.update(promoted=False, reason="already champion")
    else:
        if champion is not None:
            c.set_registered_model_alias(r.model_name, r.previous_alias, str(champion.version))
            c.set_model_version_tag(r.model_name, version, REPLACED_TAG, str(champion.version))
            c.set_model_version_tag(r.model_name, str(champion.version), "superseded_by", version)
        c.set_registered_model_alias(r.model_name, r.champion_alias, version)
        for k, v in {"promoted_by": who, "promoted_at": when, "promotion_reason": "gate passed: " +
                     "; ".join(verdict.get("reasons", []))}.items():
            c.set_model_version_tag(r.model_name, version, k, v[:5000])
        result.update(promoted=True, reason="gate passed")
    now = alias_version(c, r.model_name, r.champion_alias)
    result["champion"] = str(now.version) if now else None
    write_json_atomic(layout.metrics("promote"), result)
    log.info("promote: version %s %s (%s); champion is %s", version,
             "promoted" if result["promoted"] else "not promoted", result["reason"], result["champion"])
    return result


# --------------------------------------------------------------------------- rollback


class NothingToRollBack(RuntimeError):
    """``rollback`` has no target: no champion, no earlier one, or no such version (a user error)."""


def _version_exists(c: MlflowClient, name: str, version: str) -> bool:
    from mlflow.exceptions import MlflowException

    try:
        c.get_model_version(name, version)
    except MlflowException:
        return False
    return True


def rollback(params: Params, to_version: str | None = None, layout: Layout | None = None) -> dict[str, Any]:
    """Move ``champion`` back one step (or to ``to_version``); return what moved.

    One step back is the current champion's ``replaced_version``; the
    ``previous_champion`` alias then moves to the step before that (or is removed at
    the start of history). An explicit ``to_version`` is a manual promotion: it records
    the outgoing champion as its ``replaced_version``, so a later rollback undoes it.
    """
    from pipelines import tracking

    layout = layout or Layout()
    c = tracking.client(layout)
    r = params.registry
    current = alias_version(c, r.model_name, r.champion_alias)
    if current is None:
        raise NothingToRollBack(f"model {r.model_name!r} has no {r.champion_alias!r} alias: nothing to roll back")
    who, when = actor(), now_iso()
    if to_version is None:
        target = current.tags.get(REPLACED_TAG)
        if not target:
            raise NothingToRollBack(f"version {current.version} replaced no earlier champion: nothing to roll back to")
        c.set_registered_model_alias(r.model_name, r.champion_alias, target)
        before = c.get_model_version(r.model_name, target).tags.get(REPLACED_TAG)
        if before:
            c.set_registered_model_alias(r.model_name, r.previous_alias, before)
        else:
            c.delete_registered_model_alias(r.model_name, r.previous_alias)
    else:
        target = str(to_version)
        if not _version_exists(c, r.model_name, target):
            raise NothingToRollBack(f"model {r.model_name!r} has no version {target!r}")
        if target == str(current.version):
            return {"champion": target, "from_version": target, "changed": False}
        c.set_registered_model_alias(r.model_name, r.champion_alias, target)
        c.set_registered_model_alias(r.model_name, r.previous_alias, str(current.version))
        c.set_model_version_tag(r.model_name, target, REPLACED_TAG, str(current.version))
    c.set_model_version_tag(r.model_name, str(current.version), "rolled_back_at", when)
    c.set_model_version_tag(r.model_name, str(current.version), "rolled_back_by", who)
    c.set_model_version_tag(r.model_name, target, "restored_at", when)
    prev = alias_version(c, r.model_name, r.previous_alias)
    result = {
        "champion": target,
        "from_version": str(current.version),
        "previous_champion": str(prev.version) if prev else None,
        "changed": True,
        "by": who,
        "at": when,
    }
    log.info("rollback: champion %s -> %s", current.version, target)
    return result
