"""Command line: ``python -m pipelines STAGE [--params params.yaml] [--set key=value ...]``.

Examples::

    python -m pipelines ingest                       # one stage, params.yaml as is
    python -m pipelines pairs --set pairs.min_edit_ratio=0.3
    python -m pipelines generate --set generate.n_interactions=300000 --out /tmp/big
    python -m pipelines rollback                     # move `champion` back one step
    python -m pipelines summary                      # every stage's metrics, readable

``dvc repro`` calls the same commands (see dvc.yaml).
"""

from __future__ import annotations

import json
import logging
import sys
from pathlib import Path
from typing import Annotated

import typer

from pipelines.config import ConfigError, load_params, parse_override
from pipelines.layout import Layout
from pipelines.stages import STAGE_HELP, STAGES, resolve
from pipelines.tracking import TrackingUnavailable, lost_server, tracking_uri
from pipelines.train import TrainingInProgress

QUIET_LOGGERS = ("great_expectations", "httpx", "urllib3", "filelock")
"""Libraries whose INFO lines drown the stage's own progress output."""

app = typer.Typer(
    help="Continuous preference-learning pipeline: run one stage of the graph.",
    no_args_is_help=True,
    add_completion=False,
)

DEFAULT_PARAMS_FILE = Path("params.yaml")
"""Read when ``--params`` is not given; its absence means all defaults (see ``load_params``)."""
ParamsOpt = Annotated[
    Path | None,
    typer.Option("--params", "-p", metavar="FILE", help="params file to read (default: ./params.yaml, all defaults when missing)"),
]
SetOpt = Annotated[
    list[str] | None,
    typer.Option("--set", "-s", metavar="KEY=VALUE", help="override one parameter for this run: key.path=value (repeatable)"),
]
RootOpt = Annotated[Path, typer.Option("--root", metavar="DIR", help="project root the stage reads and writes under")]


def _setup_logging() -> None:
    logging.basicConfig(
        level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s", stream=sys.stderr
    )
    for noisy in QUIET_LOGGERS:
        logging.getLogger(noisy).setLevel(logging.WARNING)


EXIT_CONFIG = 2
"""A params file or override that does not validate: fix it, then rerun."""
EXIT_UNAVAILABLE = 3
"""A service (the tracking server) is down, or the same training is running: retry later, nothing to fix here."""


def _fail(command: str, err: object, code: int) -> typer.Exit:
    """Print ``<command>: <message>`` as one line on stderr; return the exit to raise.

    Why one line with the command's name: the orchestrator reports this line (not
    DVC's generic "failed to reproduce") as the stage's error, and finds it by that prefix.
    """
    typer.echo(f"{command}: {' '.join(str(err).split())}", err=True)
    return typer.Exit(code)


def _params_file(given: Path | None) -> Path:
    """The params file to read. Why a given one must exist: a typo would silently run on defaults."""
    if given is None:
        return DEFAULT_PARAMS_FILE
    if not given.is_file():
        raise ConfigError(f"params file {given} not found")
    return given


def _run(stage: str, params_path: Path | None, overrides: list[str] | None, root: Path) -> None:
    _setup_logging()
    try:
        params = load_params(_params_file(params_path), dict(parse_override(o) for o in overrides or []))
    except ConfigError as err:
        raise _fail(stage, err, EXIT_CONFIG) from None
    try:
        metrics = resolve(stage)(params, Layout(root))
    except ConfigError as err:  # a setting found not to work once the stage looked (the judge's endpoint)
        raise _fail(stage, err, EXIT_CONFIG) from None
    except (TrackingUnavailable, TrainingInProgress) as err:
        raise _fail(stage, err, EXIT_UNAVAILABLE) from None
    except Exception as err:  # the server lost mid-stage is the same case; anything else keeps its traceback
        lost = lost_server(err, tracking_uri(Layout(root)))
        if lost is None:
            raise
        raise _fail(stage, lost, EXIT_UNAVAILABLE) from None
    typer.echo(json.dumps(metrics, indent=2, sort_keys=True, default=str))


def _make_command(stage: str):
    def command(
        params: ParamsOpt = None,
        set_: SetOpt = None,
        root: RootOpt = Path("."),
    ) -> None:
        _run(stage, params, set_, root)

    command.__doc__ = STAGE_HELP.get(stage, f"Run the `{stage}` stage.")
    return command


for _stage in STAGES:
    if _stage != "generate":
        app.command(name=_stage.replace("_", "-"))(_make_command(_stage))


@app.command()
def generate(
    out: Annotated[Path, typer.Option(metavar="DIR", help="folder for the raw partitions and canaries.json")] = Path("data/raw"),
    n_interactions: Annotated[int | None, typer.Option(metavar="N", help="override generate.n_interactions")] = None,
    shift: Annotated[str | None, typer.Option(metavar="KIND", help="none | topic | length | tenant | all")] = None,
    fmt: Annotated[str, typer.Option("--format", metavar="FORMAT", help="jsonl | parquet")] = "jsonl",
    params: ParamsOpt = None,
    set_: SetOpt = None,
) -> None:
    """Generate seeded synthetic raw events with planted PII canaries and malformed lines."""
    from pipelines.generate import FORMATS, generate_to

    _setup_logging()
    try:
        if fmt not in FORMATS:
            raise ConfigError(f"--format must be one of {', '.join(FORMATS)}, got {fmt!r}")
        overrides = dict(parse_override(o) for o in set_ or [])
        if n_interactions is not None:
            overrides["generate.n_interactions"] = n_interactions
        if shift is not None:
            overrides["generate.shift"] = shift
        p = load_params(_params_file(params), overrides)
    except ConfigError as err:
        raise _fail("generate", err, EXIT_CONFIG) from None

    stats = generate_to(p, out, fmt=fmt)
    typer.echo(json.dumps(stats, indent=2, sort_keys=True, default=str))


@app.command()
def rollback(
    to_version: Annotated[str | None, typer.Option(metavar="VERSION", help="registry version to make champion (default: the previous one)")] = None,
    params: ParamsOpt = None,
) -> None:
    """Move the `champion` alias back to the previous champion (or a named version)."""
    _setup_logging()
    from pipelines.promote import NothingToRollBack
    from pipelines.promote import rollback as do_rollback

    try:
        result = do_rollback(load_params(_params_file(params)), to_version=to_version)
    except (ConfigError, NothingToRollBack) as err:
        typer.echo(f"rollback: {err}", err=True)
        raise typer.Exit(1) from None
    except TrackingUnavailable as err:
        typer.echo(f"rollback: {err}", err=True)
        raise typer.Exit(3) from None
    typer.echo(json.dumps(result, indent=2, sort_keys=True, default=str))


@app.command()
def audit(
    paths: Annotated[list[Path], typer.Argument(metavar="PATH", help="files or folders to search")],
    canaries: Annotated[Path, typer.Option(metavar="FILE", help="canaries.json listing the PII values to look for")] = Path(
        "data/raw/canaries.json"
    ),
    public: Annotated[
        list[Path] | None,
        typer.Option(metavar="PATH", help="public inputs (e.g. ../shared/data): canaries they already hold prove nothing"),
    ] = None,
) -> None:
    """Search files (Parquet cells included) for canary PII values; exit 1 on any hit.

    Prints where each hit is and its entity type, never the value itself.
    """
    from pipelines.audit import load_canaries, scan, without_public

    values = load_canaries(canaries)
    if public:
        values, excluded = without_public(values, public)
        typer.echo(f"audit: {len(excluded)} canaries also occur in the public inputs and are not checked")
    missing = [p for p in paths if not p.exists()]  # a mistyped path scans nothing: never a pass
    for path in missing:
        typer.echo(f"NOT AUDITED {path}: no such file or folder")
    hits, n_files = scan(paths, values)
    for hit in hits:
        if hit.canary_index < 0:  # a file that could not be searched: a failure too, never a pass
            typer.echo(f"NOT AUDITED {hit.path}: {hit.reason}")
        else:
            typer.echo(f"LEAK {hit.entity} (canary #{hit.canary_index}) in {hit.path}")
    problems = len(hits) + len(missing)
    typer.echo(f"audit: {n_files} files scanned, {problems} canary hits or unaudited files")
    if problems:
        raise typer.Exit(1)


@app.command()
def summary(
    root: Annotated[Path, typer.Option("--root", metavar="DIR", help="project root whose metrics to read")] = Path("."),
    width: Annotated[int | None, typer.Option(metavar="COLUMNS", help="line width (default: the terminal's)")] = None,
) -> None:
    """Every stage's metrics from the last run, a few readable lines each, in pipeline order.

    Reads the same metrics/*.json as `dvc metrics show` (which prints one very wide table).
    """
    from pipelines.run_summary import summary as run_summary

    if not (root / "dvc.yaml").exists():
        typer.echo(f"summary: no dvc.yaml under {root}", err=True)
        raise typer.Exit(1)
    typer.echo(run_summary(root, width))


def main() -> None:
    """Entry point for ``python -m pipelines``."""
    app()
