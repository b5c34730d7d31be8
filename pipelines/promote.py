"""Stage ``promote`` and ``rollback``: the MLflow model registry side of the pipeline.

Command lines::

    python -m pipelines promote                    # after gate; dvc repro runs it
    python -m pipelines rollback                   # champion goes back one step
    python -m pipelines rollback --to-version 3    # champion becomes version 3

What promote does, always in this order:

1. checks the gate verdict and the evaluation belong to the candidate on disk (same
   fingerprint);
2. registers the candidate (an MLflow pyfunc whose artifact is the candidate folder),
   once: a candidate already registered (same fingerprint tag) is reused, so a rerun
   changes nothing;
3. tags the version with the verdict, every reason, the metrics, the data version, the
   git commit, who and when; writes a model card (Markdown) as a run artifact, as the
   version description and to ``data/registry/model_card.md``. The champion's own
   record, and a version's record against a stale or unjudged evaluation, are kept:
   that evaluation goes under ``last_eval.*`` instead;
4. only on a pass of a verdict about this evaluation, against the champion of now:
   records who/when/why and the outgoing champion (``replaced_version``, alias
   ``previous_champion``), then moves alias ``champion`` to it, last.

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
"""On a promoted version: the champion it replaced, the step a rollback goes back to."""
SUPERSEDED_TAG = "superseded_by"
RECORD_TAGS = ("gate", "gate_reasons", "evaluated_against")
"""With every ``metric.*`` tag: the verdict a version was judged on (its record)."""
METRIC_PREFIX = "metric."
REGISTRATION_TAGS = ("registered_by", "registered_at")
LAST_EVAL_PREFIX = "last_eval."
"""The latest evaluation, when it must not replace the record (champion, stale, unjudged)."""
REFERENCE_KEYS = ("kind", "champion_version", "fingerprint")
ALREADY_CHAMPION = "already champion"
UNRECORDED_PROMOTION = "already champion when promote ran: no passing gate verdict about its evaluation on disk"
MAX_TAG_CHARS = 5000
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


def policy_input_example() -> Any:
    """One PII-free row to score, logged with the model: the call's shape for its users.

    MLflow also serves it once to the freshly logged model, which proves the version
    loads and scores from the store before it is registered.
    """
    import pandas as pd

    prompt = [{"role": "user", "content": "How do I reset my password?"}]
    return pd.DataFrame({
        "prompt": [json.dumps(prompt)],
        "response": ["Open Settings, choose Security, then select Reset password."],
    })


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
            input_example=policy_input_example(),
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


def _check_same_candidate(verdict: dict[str, Any], evaluation: dict[str, Any], fingerprint: str) -> None:
    """Raise unless the verdict and the evaluation are both about the candidate on disk.

    Why raise (not refuse): their metrics would be recorded on this candidate's version.
    """
    for what, doc in (("gate verdict", verdict), ("evaluation", evaluation)):
        if doc.get("candidate_fingerprint") != fingerprint:
            raise RuntimeError(
                f"the {what} was made for another candidate "
                f"({str(doc.get('candidate_fingerprint', '?'))[:12]} != {fingerprint[:12]}); rerun evaluate and gate"
            )


def _reference_identity(ref: dict[str, Any] | None) -> tuple[Any, ...]:
    """What makes two references the same comparison: kind, champion version and fingerprint."""
    ref = ref or {}
    return tuple(ref.get(k) for k in REFERENCE_KEYS)


def verdict_mismatch(verdict: dict[str, Any], evaluation: dict[str, Any]) -> str | None:
    """Why the gate verdict on disk does not judge the evaluation on disk, or ``None``.

    Why: evaluate and gate are separate stages. Evaluate rerun against a new champion
    without gate leaves a "passed" verdict about another comparison beside an evaluation
    that may say the candidate loses; the staleness check must use the reference the
    verdict judged. The gate copies the evaluation's reference, so the two are equal
    whenever the verdict is about this evaluation.
    """
    judged, evaluated = verdict.get("reference"), evaluation.get("reference")
    if _reference_identity(judged) == _reference_identity(evaluated):
        return None
    return f"gate verdict is for {_label(judged)}, evaluation is against {_label(evaluated)}: rerun the gate"


def _label(ref: dict[str, Any] | None) -> str:
    return str((ref or {}).get("label") or "an unknown reference")


def _failed_reason(verdict: dict[str, Any]) -> str:
    return "gate failed: " + "; ".join(c["reason"] for c in verdict.get("checks", []) if not c["passed"])


def _decide(
    verdict: dict[str, Any], mismatch: str | None, stale: str | None, is_champion: bool
) -> tuple[bool, str]:
    """(move ``champion`` to the candidate?, the reason), first objection first."""
    if is_champion:
        note = mismatch or (None if verdict.get("passed") else _failed_reason(verdict))
        return False, ALREADY_CHAMPION + (f"; the latest evaluation is not its promotion record ({note})" if note else "")
    if mismatch:
        return False, mismatch
    if not verdict.get("passed"):
        return False, _failed_reason(verdict)
    if stale:  # the champion moved after evaluate ran (another run, a rollback): judge again first
        return False, "stale evaluation: " + stale
    broken = (verdict.get("reference") or {}).get("broken_champion_version")
    if broken is not None:
        return True, f"gate passed against the base model; replaces broken champion v{broken} (non-finite scores)"
    return True, "gate passed"


def _set_tags(c: MlflowClient, name: str, version: str, tags: dict[str, str]) -> None:
    for k, v in tags.items():
        c.set_model_version_tag(name, version, k, v[:MAX_TAG_CHARS])


def _record(
    c: MlflowClient, name: str, mv: ModelVersion, created: bool, tags: dict[str, str], card: str, keep: bool,
    outcome: str, when: str,
) -> None:
    """Write what this run learnt about the version, without rewriting a record it must keep.

    The record (``gate``, ``gate_reasons``, ``evaluated_against``, ``metric.*``, the
    description and the card artifact) says what the version was judged on. The latest
    verdict replaces it (a candidate rejected against one champion may pass against
    another), except for the champion (rerun, it is evaluated against the base model:
    not what it was promoted on) and for an evaluation that is stale or that the verdict
    did not judge. Then the latest evaluation goes under ``last_eval.*`` with its outcome,
    unless it is the record itself (the champion's plain rerun changes nothing).
    """
    version = str(mv.version)
    record = {k: v for k, v in tags.items() if k in RECORD_TAGS or k.startswith(METRIC_PREFIX)}
    identity = {k: v for k, v in tags.items() if k not in record and (created or k not in REGISTRATION_TAGS)}
    if keep and created:
        _set_tags(c, name, version, identity)
    if keep and any(mv.tags.get(k) != v[:MAX_TAG_CHARS] for k, v in record.items()):
        latest = {LAST_EVAL_PREFIX + k: v for k, v in record.items()}
        _set_tags(c, name, version, {**latest, LAST_EVAL_PREFIX + "at": when, LAST_EVAL_PREFIX + "outcome": outcome})
        return
    for key in mv.tags:  # an older kept evaluation is not the latest any more
        if key.startswith(LAST_EVAL_PREFIX):
            c.delete_model_version_tag(name, version, key)
    if keep:
        return
    _set_tags(c, name, version, {**identity, **record})
    c.update_model_version(name, version, description=card[:MAX_TAG_CHARS])
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "model_card.md"
        path.write_text(card, encoding="utf-8")
        c.log_artifact(mv.run_id, str(path))


def _promotion_tags(verdict: dict[str, Any] | None, who: str, when: str) -> dict[str, str]:
    """Who, when and why; ``verdict`` is None when no passing verdict about this evaluation exists."""
    reason = ("gate passed: " + "; ".join(verdict.get("reasons", []))) if verdict else UNRECORDED_PROMOTION
    return {"promoted_by": who, "promoted_at": when, "promotion_reason": reason}


def _promote(c: MlflowClient, params: Params, version: str, champion: ModelVersion | None,
             promotion: dict[str, str]) -> None:
    """Record the promotion and the outgoing champion, and only then move ``champion``.

    Why this order: once ``champion`` points at the version a rerun takes the "already
    champion" branch, so whatever was not written before the alias moved would be lost
    with a crash; before the move, a rerun simply promotes again.
    """
    name, r = params.registry.model_name, params.registry
    _set_tags(c, name, version, promotion)
    if champion is not None:
        outgoing = str(champion.version)
        c.set_model_version_tag(name, version, REPLACED_TAG, outgoing)
        c.set_model_version_tag(name, outgoing, SUPERSEDED_TAG, version)
        c.set_registered_model_alias(name, r.previous_alias, outgoing)
    c.set_registered_model_alias(name, r.champion_alias, version)


def _complete_promotion_record(c: MlflowClient, name: str, champion: ModelVersion, promotion: dict[str, str]) -> None:
    """Fill the promotion tags a champion lacks (promote died after the alias moved, or it was set by hand)."""
    missing = {k: v for k, v in promotion.items() if not champion.tags.get(k)}
    if missing:
        _set_tags(c, name, str(champion.version), missing)


def run(params: Params, layout: Layout) -> dict[str, Any]:
    """Stage ``promote``: register, tag, and move ``champion`` when the gate passed."""
    from pipelines import tracking
    from pipelines.evaluate import choose_reference, stale_reference
    from pipelines.gate import verdict_path
    from pipelines.model import candidate_fingerprint, read_manifest

    verdict = read_json(verdict_path(layout))
    evaluation = read_json(layout.eval_dir / "eval.json")
    fingerprint = candidate_fingerprint(layout.candidate)
    _check_same_candidate(verdict, evaluation, fingerprint)
    manifest = read_manifest(layout.candidate)
    c = tracking.client(layout)
    r = params.registry
    mv, created = _register(params, layout, fingerprint, manifest)
    version = str(mv.version)
    who, when = actor(), now_iso()

    card = model_card(params, manifest, evaluation, verdict, version)
    write_text_atomic(model_card_path(layout), card)

    champion = alias_version(c, r.model_name, r.champion_alias)
    is_champion = champion is not None and str(champion.version) == version
    mismatch = verdict_mismatch(verdict, evaluation)
    stale = stale_reference(verdict.get("reference"), choose_reference(params, layout, fingerprint))
    promoted, reason = _decide(verdict, mismatch, stale, is_champion)
    tags = _version_tags(evaluation, verdict, manifest, who, when, layout.root)
    _record(c, r.model_name, mv, created, tags, card, is_champion or bool(mismatch or stale), reason, when)
    usable = verdict if verdict.get("passed") and not mismatch else None
    if promoted:
        _promote(c, params, version, champion, _promotion_tags(usable, who, when))
    elif is_champion and champion is not None:
        _complete_promotion_record(c, r.model_name, champion, _promotion_tags(usable, who, when))

    if is_champion and champion is not None:  # what it replaced, never itself
        previous = champion.tags.get(REPLACED_TAG) or None
    else:
        previous = str(champion.version) if champion else None
    now = alias_version(c, r.model_name, r.champion_alias)
    result: dict[str, Any] = {
        "version": version,
        "registered": created,
        "gate_passed": bool(verdict.get("passed")),
        "previous_champion": previous,
        "promoted": promoted,
        "reason": reason,
        "champion": str(now.version) if now else None,
    }
    write_json_atomic(layout.metrics("promote"), result)
    log.info("promote: version %s %s (%s); champion is %s", version,
             "promoted" if result["promoted"] else "not promoted", result["reason"], result["champion"])
    return result


# --------------------------------------------------------------------------- rollback


class NothingToRollBack(RuntimeError):
    """``rollback`` has no target: no champion, no earlier one, or no such version (a user error)."""


def _existing(c: MlflowClient, name: str, version: str, why: str) -> ModelVersion:
    """Version ``version`` as the registry has it; :class:`NothingToRollBack` naming it when it is gone.

    Callers use ``str(found.version)``, the registry's spelling: compared as typed,
    ``"02"`` would pass for another version than the champion ``"2"`` and a version would
    be recorded as its own predecessor.
    """
    from pipelines.tracking import model_version

    found = model_version(c, name, version)
    if found is None:
        raise NothingToRollBack(f"model {name!r} has no version {version!r} ({why}); champion not moved")
    return found


def _step_back(c: MlflowClient, name: str, current: ModelVersion) -> tuple[str, str | None]:
    """(new champion, new previous champion) one step back, every version checked before anything moves."""
    here = str(current.version)
    recorded = current.tags.get(REPLACED_TAG)
    if not recorded:
        raise NothingToRollBack(f"version {here} replaced no earlier champion: nothing to roll back to")
    found = _existing(c, name, recorded, f"the champion v{here} replaced it; deleted? pick one with --to-version")
    target = str(found.version)
    if target == here:
        raise NothingToRollBack(f"version {here} records itself as {REPLACED_TAG}: pick a version with --to-version")
    before = found.tags.get(REPLACED_TAG)
    if not before:
        return target, None
    earlier = _existing(c, name, before, f"v{target} replaced it, so it would be the previous champion; "
                        f"deleted? `rollback --to-version {target}` still works")
    return target, str(earlier.version)


def rollback(params: Params, to_version: str | None = None, layout: Layout | None = None) -> dict[str, Any]:
    """Move ``champion`` back one step (or to ``to_version``); return what moved.

    One step back is the current champion's ``replaced_version``; the
    ``previous_champion`` alias then moves to the step before that (or is removed at
    the start of history). An explicit ``to_version`` is a manual promotion: it records
    the outgoing champion as its ``replaced_version``, so a later rollback undoes it.
    Every version involved is looked up before anything is written (a deleted one is a
    :class:`NothingToRollBack` naming it, with the aliases untouched), and ``champion``
    moves last, so a rollback that dies midway is repeated whole by its rerun.
    """
    from pipelines import tracking

    layout = layout or Layout()
    c = tracking.client(layout)
    r = params.registry
    name = r.model_name
    current = alias_version(c, name, r.champion_alias)
    if current is None:
        raise NothingToRollBack(f"model {name!r} has no {r.champion_alias!r} alias: nothing to roll back")
    here = str(current.version)
    if to_version is None:
        target, previous = _step_back(c, name, current)
    else:
        target, previous = str(_existing(c, name, str(to_version), "asked for with --to-version").version), here
        if target == here:
            return {"champion": target, "from_version": here, "changed": False}
    who, when = actor(), now_iso()
    if to_version is not None:
        c.set_model_version_tag(name, target, REPLACED_TAG, here)
    c.set_model_version_tag(name, here, "rolled_back_at", when)
    c.set_model_version_tag(name, here, "rolled_back_by", who)
    c.set_model_version_tag(name, target, "restored_at", when)
    if previous:
        c.set_registered_model_alias(name, r.previous_alias, previous)
    else:
        c.delete_registered_model_alias(name, r.previous_alias)
    c.set_registered_model_alias(name, r.champion_alias, target)
    result = {
        "champion": target,
        "from_version": here,
        "previous_champion": previous,
        "changed": True,
        "by": who,
        "at": when,
    }
    log.info("rollback: champion %s -> %s", here, target)
    return result
